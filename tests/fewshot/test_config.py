"""Config files, overrides and their validation."""
from pathlib import Path

import pytest

from episodes import UserError
from fewshot.config import Config, config_to_dict, load_config
from fewshot.typed import parse_override, read_yaml

CONFIGS = Path(__file__).resolve().parents[2] / "configs"


def test_demo_yaml_is_the_built_in_default():
    assert config_to_dict(load_config(CONFIGS / "demo.yaml")) == config_to_dict(Config())


@pytest.mark.parametrize("path", sorted(CONFIGS.glob("*.yaml")), ids=lambda p: p.name)
def test_every_bundled_config_is_valid(path):
    assert load_config(path).name


def test_overrides_are_yaml_scalars_applied_in_order():
    config = load_config(None, ["episodes.count=100", "episodes.k_shot=[5]", "dataset.path=null",
                                "backbone.width=1", "features.center=true", "episodes.count=50"])
    assert config.episodes.count == 50 and config.episodes.k_shot == [5]
    assert config.backbone.width == 1.0 and isinstance(config.backbone.width, float)
    assert config.features.center is True and config.dataset.path is None


def test_a_scalar_k_shot_becomes_a_list():
    assert load_config(None, ["episodes.k_shot=5"]).episodes.k_shot == [5]


def test_head_overrides_are_checked_against_the_head_config():
    config = load_config(None, ["heads.sgd.steps=10"])
    assert config.heads["sgd"] == {"steps": 10}
    with pytest.raises(UserError, match="Valid keys under heads.sgd"):
        load_config(None, ["heads.sgd.stepz=10"])
    with pytest.raises(UserError, match="Registered heads"):
        load_config(None, ["heads.no_such_head.x=1"])


def test_unknown_key_names_the_valid_ones():
    with pytest.raises(UserError, match=r"episodes\.cont.*Valid keys under episodes: n_way, k_shot"):
        load_config(None, ["episodes.cont=1"])
    with pytest.raises(UserError, match="Valid keys: name, dataset"):
        load_config(None, ["datset.name=x"])


@pytest.mark.parametrize("override,needle", [
    ("episodes.count=ten", "must be of type int"),
    ("features.normalize=l1", "not one of"),
    ("episodes.n_way=true", "must be of type int"),
    ("pretrain.lr=fast", "must be of type float"),
    ("episodes", "key.sub=value"),
])
def test_wrong_values_are_clear_errors(override, needle):
    with pytest.raises(UserError, match=needle):
        load_config(None, [override])


def test_a_config_file_replaces_the_demo_heads(tmp_path):
    path = tmp_path / "mine.yaml"
    path.write_text("name: mine\nheads:\n  prototype: {metric: cosine}\n")
    config = load_config(path)
    assert config.name == "mine" and config.heads == {"prototype": {"metric": "cosine"}}


def test_missing_and_malformed_files_are_clear_errors(tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        load_config(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: [unclosed\n")
    with pytest.raises(UserError, match="not valid YAML"):
        load_config(bad)


def test_parse_override_splits_the_key_path():
    assert parse_override("heads.pattern_search.radius=0.5") == (["heads", "pattern_search", "radius"], 0.5)


def test_yaml_files_read_floats_refuse_duplicates_and_alias_bombs(tmp_path):
    path = tmp_path / "floats.yaml"
    path.write_text("heads:\n  sgd: {lr: 1e-3, weight_decay: 5E-4}\n")
    assert load_config(path).heads["sgd"] == {"lr": 1e-3, "weight_decay": 5e-4}
    path.write_text("heads:\n  sgd: {lr: 0.1}\n  sgd: {lr: 0.2}\n")
    with pytest.raises(UserError, match="'sgd' is given twice"):
        load_config(path)
    levels = "".join(f"l{i}: &l{i} [{', '.join([f'*l{i - 1}'] * 9) if i else '1'}]\n" for i in range(7))
    path.write_text(levels)
    with pytest.raises(UserError, match="alias bomb"):
        load_config(path)
    path.write_text("a: &shared {lr: 0.1}\nb: *shared\n")  # an ordinary alias is fine
    assert read_yaml(path) == {"a": {"lr": 0.1}, "b": {"lr": 0.1}}


def test_a_typo_gets_the_nearest_key():
    with pytest.raises(UserError, match="did you mean heads.sgd.weight_decay"):
        load_config(None, ["heads.sgd.wieght_decay=0.1"])
