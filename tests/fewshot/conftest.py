"""A tiny image-folder dataset and config for end-to-end runs of the pipeline, an untrained tiny
checkpoint, and `fewshot evaluate` run in this process on them."""
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from fewshot.cli import main

SPLITS = {"train": 4, "val": 3, "test": 4}  # classes per split


def write_image_folder(root: Path, images_per_class: int = 12, size: int = 16) -> Path:
    """Classes are coloured shapes with noise, so even a briefly trained network separates them."""
    rng = np.random.default_rng(0)
    index = 0
    for split, n_classes in SPLITS.items():
        for _ in range(n_classes):
            colour = rng.integers(0, 256, 3)
            folder = root / split / f"class{index:02d}"
            folder.mkdir(parents=True)
            for i in range(images_per_class):
                image = rng.integers(0, 60, (size, size, 3))
                row = (index * 3) % (size - 4)
                image[row:row + 4, :, :] = colour
                Image.fromarray(image.astype(np.uint8)).save(folder / f"{i}.png")
            index += 1
    return root


@pytest.fixture(scope="session")
def tiny_dataset(tmp_path_factory) -> Path:
    return write_image_folder(tmp_path_factory.mktemp("tiny_folder"))


@pytest.fixture(scope="session")
def tiny_config(tmp_path_factory, tiny_dataset) -> Path:
    path = tmp_path_factory.mktemp("config") / "tiny.yaml"
    path.write_text(f"""
name: tiny
dataset: {{name: image_folder, path: {tiny_dataset}, image_size: 16}}
backbone: {{name: resnet12, width: 0.125}}
pretrain: {{epochs: 2, batch_size: 16, lr: 0.05, checkpoint_every: 0, val_episodes: 10}}
episodes: {{n_way: 3, k_shot: [1, 2], n_query: 4, count: 120, seed: 5}}
heads:
  sgd: {{steps: 20}}
  pattern_search: {{max_evaluations: 20000}}
  logistic_regression: {{}}
  prototype: {{}}
""")
    return path


def run_fewshot(*args: str, data_root: Path, check: bool = True, extra_env: dict | None = None,
                launcher: tuple[str, ...] = ()) -> subprocess.CompletedProcess:
    """Run the `fewshot` command in a subprocess, as a user would."""
    env = {**os.environ, "FEWSHOT_DATA": str(data_root), "OMP_NUM_THREADS": "1", **(extra_env or {})}
    command = [*launcher] if launcher else [sys.executable, "-m", "fewshot"]
    result = subprocess.run([*command, *args], capture_output=True, text=True, env=env, timeout=600)
    if check and result.returncode != 0:
        raise AssertionError(f"fewshot {' '.join(args)} failed:\n{result.stdout}\n{result.stderr}")
    return result

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
pretrain: {{epochs: 1, warmup_epochs: 0, batch_size: 16, lr: 0.05, checkpoint_every: 0, val_episodes: 0, bf16: false}}
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
