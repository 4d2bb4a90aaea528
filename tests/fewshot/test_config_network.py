"""The bundled second configs (`configs/demo_network.yaml`, `configs/demo_matched.yaml`): they load,
pass every check a benchmark runs before any pretraining or output, and are what the docs say."""
from pathlib import Path

import pytest

from episodes import UserError
from fewshot.config import Config, config_to_dict, load_config
from fewshot.heads import get_head
from fewshot.run.validate import check_config

PATH = Path(__file__).resolve().parents[2] / "configs" / "demo_network.yaml"


def test_network_config_loads_and_validates():
    config = load_config(PATH)
    assert check_config(config, pretraining=True) == []          # the benchmark's own pre-flight checks
    heads = {label: get_head(entry.get("head", label), **{k: v for k, v in entry.items() if k != "head"})
             for label, entry in config.heads.items()}
    models = {label: (head.config.model, getattr(head.config, "width", None)) for label, head in heads.items()}
    assert models == {"sgd": ("linear", 64), "sgd_mlp": ("mlp", 64), "pattern_search_mlp": ("mlp", 64),
                      "greedy_random_mlp": ("mlp", 64)}
    assert config.volume.enabled and config.volume.prior == "nngp" and config.volume.model == "linear"


def test_network_config_shares_the_demo_data_backbone_and_pretraining():
    demo, network = config_to_dict(Config()), config_to_dict(load_config(PATH))
    for section in ("dataset", "backbone", "pretrain", "features"):   # the demo's checkpoint is reused
        assert network[section] == demo[section], section


def test_a_bad_network_override_stops_the_run_naming_the_fix():
    config = load_config(PATH, ["heads.sgd_mlp.width=0"])
    with pytest.raises(UserError, match="width is 0, but must be >= 1") as error:
        check_config(config, pretraining=True)
    assert "Set heads." in str(error.value)


def test_the_matched_config_runs_the_matched_comparison_on_the_demo_pretraining():
    path = PATH.with_name("demo_matched.yaml")
    config = load_config(path)
    assert check_config(config, pretraining=True) == []
    assert (config.volume.matched_loss, config.volume.matched_episodes) == ("span_norm", config.episodes.count)
    demo, matched = config_to_dict(Config()), config_to_dict(config)
    for section in ("dataset", "backbone", "pretrain", "features"):
        assert matched[section] == demo[section], section


def test_the_seed_protocol_config_reuses_the_demo_checkpoint():
    demo, seed = config_to_dict(Config()), config_to_dict(load_config(PATH.with_name("seed_protocol.yaml")))
    for section in ("dataset", "backbone", "pretrain", "features"):   # `fewshot evaluate --checkpoint` of the demo's
        assert seed[section] == demo[section], section
