"""A second `fewshot benchmark` with the same pretraining reuses the stored checkpoint; run labels."""
import base64
import json
from pathlib import Path

import pytest

from episodes import load_dataset
from episodes.io import file_sha256
from fewshot.cli import main
from fewshot.config import load_config
from fewshot.report.leaderboard import merge, run_label
from fewshot.run.pretrained import PretrainedStore, pretrain_key


def benchmark(config: Path, out: Path, data_root: Path, *extra: str) -> int:
    return main(["benchmark", "--config", str(config), "--output-dir", str(out), "--data-root", str(data_root),
                 *extra])


@pytest.fixture(scope="module")
def runs(tmp_path_factory, tiny_config):
    """The same config twice, then once with --retrain."""
    root = tmp_path_factory.mktemp("reuse")
    quick = ["pretrain.epochs=1", "pretrain.warmup_epochs=0", "episodes.count=20"]
    assert benchmark(tiny_config, root / "first", root / "data", "--quiet", *quick) == 0
    assert benchmark(tiny_config, root / "second", root / "data", "--label", "second try", *quick) == 0
    assert benchmark(tiny_config, root / "retrained", root / "data", "--quiet", "--retrain", *quick) == 0
    return root, quick


def results(run: Path) -> dict:
    return json.loads((run / "results-3way-1shot.json").read_text())


def test_second_run_reuses_the_pretrained_checkpoint(runs, capsys):
    root, _ = runs
    assert (root / "first" / "checkpoint-last.pt").is_file()  # it pretrained
    assert not (root / "second" / "checkpoint-last.pt").exists()  # it did not
    assert file_sha256(root / "second" / "checkpoint-best.pt") == file_sha256(root / "first" / "checkpoint-best.pt")
    first, second = results(root / "first"), results(root / "second")
    assert [h["per_episode"] for h in first["heads"]] == [h["per_episode"] for h in second["heads"]]
    assert len(list((root / "data" / "checkpoints").glob("*.pt"))) == 1


def test_every_run_writes_its_report(runs):
    root, _ = runs
    for run in ("first", "second", "retrained"):
        page = (root / run / "report.html").read_text()
        assert "3-way 1-shot" in page and "data:image/png;base64," in page
        plots = sorted((root / run).glob("*.png"))
        assert "accuracy.png" in [plot.name for plot in plots]
        for plot in plots:   # the run folder's plots, embedded as written
            assert base64.b64encode(plot.read_bytes()).decode("ascii") in page, plot.name
    assert "second try" in (root / "second" / "report.html").read_text()


def test_retrain_pretrains_again(runs):
    root, _ = runs
    assert (root / "retrained" / "checkpoint-last.pt").is_file()
    # Pretraining is deterministic on the CPU, so the stored entry is replaced by an equal one.
    assert results(root / "retrained")["backbone"]["checkpoint_sha256"] == \
        results(root / "first")["backbone"]["checkpoint_sha256"]


def test_damaged_store_entry_is_pretrained_again(runs, tiny_config, tmp_path):
    root, quick = runs
    import shutil
    data = tmp_path / "data"
    shutil.copytree(root / "data", data)
    entry = next((data / "checkpoints").glob("*.pt"))
    entry.write_bytes(entry.read_bytes()[:100])  # cut short
    assert benchmark(tiny_config, tmp_path / "run", data, "--quiet", *quick) == 0
    assert (tmp_path / "run" / "checkpoint-last.pt").is_file()
    assert PretrainedStore(data / "checkpoints").lookup(entry.stem) == entry  # stored whole again


def test_key_follows_what_decides_the_weights(tiny_config, tiny_dataset):
    config = load_config(tiny_config)
    dataset = load_dataset("image_folder", None, str(tiny_dataset), 16)

    def key(*overrides: str) -> str:
        return pretrain_key(load_config(tiny_config, list(overrides)), dataset)

    assert key() == pretrain_key(config, dataset)
    assert key("heads.sgd.steps=3") == key("episodes.count=7") == key("pretrain.checkpoint_every=5") == key()
    assert key("pretrain.lr=0.1") != key() and key("backbone.width=0.25") != key()
    # Evaluation episodes do not change the backbone (validation episodes come from pretrain.seed).
    assert key("episodes.seed=9") == key() and key("pretrain.seed=9") != key()


def test_label_names_the_run_in_leaderboards(runs):
    root, _ = runs
    labelled, plain = results(root / "second"), results(root / "first")
    assert labelled["run"] == {"label": "second try"} and run_label(labelled) == "second try"
    assert run_label(plain) == f"tiny · image_folder:{Path(plain['config']['dataset']['path']).name}"
    rows = merge([plain, labelled])
    assert {row.run for row in rows} == {"second try", run_label(plain)}


def test_same_config_on_other_data_is_told_apart():
    doc = {"config": {"name": "demo", "dataset": {"name": "image_folder", "path": "/data/flowers"}}}
    other = {"config": {"name": "demo", "dataset": {"name": "image_folder", "path": "/data/birds"}}}
    assert run_label(doc) == "demo · image_folder:flowers" and run_label(other) == "demo · image_folder:birds"
    assert run_label({"config": {"name": "demo", "dataset": {"name": "glyphs", "path": None}}}) == "demo · glyphs"
