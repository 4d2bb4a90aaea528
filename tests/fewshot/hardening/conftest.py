"""Fixtures of the hardening tests: one untrained tiny checkpoint and a fast evaluation config."""
from pathlib import Path

import pytest

from fewshot.cli import main


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory) -> Path:
    """An untrained width-0.125 ResNet-12 checkpoint: evaluation needs weights, not good ones."""
    from backbones.checkpoint import save_checkpoint
    from backbones.registry import get_backbone
    path = tmp_path_factory.mktemp("checkpoint") / "checkpoint-best.pt"
    save_checkpoint(path, get_backbone("resnet12", width=0.125, dropblock=0.0), backbone="resnet12",
                    backbone_config={"width": 0.125, "dropblock": 0.0})
    return path


@pytest.fixture(scope="session")
def fast_config(tmp_path_factory, tiny_dataset) -> Path:
    """The tiny image-folder dataset, 10 episodes per setting, the prototype head only."""
    path = tmp_path_factory.mktemp("config") / "fast.yaml"
    path.write_text(f"""
name: fast
dataset: {{name: image_folder, path: {tiny_dataset}, image_size: 16}}
backbone: {{name: resnet12, width: 0.125}}
pretrain: {{epochs: 1, batch_size: 16, lr: 0.05, checkpoint_every: 0, val_episodes: 0, bf16: false}}
episodes: {{n_way: 3, k_shot: [1, 2], n_query: 4, count: 10, seed: 5}}
heads: {{prototype: {{}}}}
""")
    return path


@pytest.fixture
def evaluate(tiny_checkpoint, fast_config, tmp_path, monkeypatch, capsys):
    """Run `fewshot evaluate` in this process; returns (exit code, stdout, stderr)."""
    monkeypatch.setenv("FEWSHOT_DATA", str(tmp_path / "data"))

    def run(*args: str, checkpoint: Path | None = None, config: Path | None = None, quiet: bool = True):
        code = main(["evaluate", "--checkpoint", str(checkpoint or tiny_checkpoint), "--config",
                     str(config or fast_config), *(["--quiet"] if quiet else []), *args])
        out, err = capsys.readouterr()
        return code, out, err
    return run
