"""The sandbox of a probe: the fixtures of tests/fewshot (a tiny image folder, its config, an
untrained checkpoint), copied so that a case may edit them."""
import shutil

import pytest

from tests.fewshot.conftest import fast_config, tiny_checkpoint, tiny_dataset  # noqa: F401  (pytest fixtures)


@pytest.fixture
def sandbox(tmp_path, tiny_dataset, tiny_checkpoint, fast_config, monkeypatch):
    """Its own dataset copy and config, data root, working folder; returns (root, places)."""
    shutil.copytree(tiny_dataset, tmp_path / "dataset")
    config = tmp_path / "config.yaml"
    config.write_text(fast_config.read_text().replace(str(tiny_dataset), str(tmp_path / "dataset")))
    (tmp_path / "cwd").mkdir()
    monkeypatch.chdir(tmp_path / "cwd")
    monkeypatch.setenv("FEWSHOT_DATA", str(tmp_path / "data"))
    return tmp_path, {"config": config, "checkpoint": tiny_checkpoint, "run": tmp_path / "run",
                      "dataset": tmp_path / "dataset"}
