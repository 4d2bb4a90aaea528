"""The example plug-in installs offline and shows up as a head through its entry point."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLE = Path(__file__).resolve().parents[3] / "examples" / "fewshot_plugin_example"

FIT_RIDGE = """
import torch
from fewshot.heads import get_head
points = torch.randn(3, 10, 16, generator=torch.Generator().manual_seed(0))
support = torch.nn.functional.normalize(points, dim=-1)
labels = torch.arange(5).repeat_interleave(2).expand(3, -1)
head = get_head("ridge", l2=0.01)
fit = head.fit(support, labels, 5, generator=torch.Generator())
logits = head.predict(fit, support)
print(tuple(fit.weight.shape), tuple(fit.bias.shape), bool((logits.argmax(-1) == labels).all()))
"""


def install_example(example: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An example package pip-installed into a temporary folder (no network, no build isolation)."""
    target = tmp_path_factory.mktemp(f"{example.name}-site")
    build = tmp_path_factory.mktemp(f"{example.name}-build")
    # setuptools builds in the source folder (build/, *.egg-info): build a copy, not the repo.
    source = build / "source"
    shutil.copytree(example, source, ignore=shutil.ignore_patterns("build", "*.egg-info", "__pycache__"))
    command = [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-index",
               "--no-build-isolation", "--no-cache-dir", "--target", str(target), str(source)]
    env = {**os.environ, "TMPDIR": str(build), "PIP_DISABLE_PIP_VERSION_CHECK": "1"}
    result = subprocess.run(command, capture_output=True, text=True, env=env, timeout=120)
    assert result.returncode == 0, result.stderr
    return target


@pytest.fixture(scope="module")
def plugin_path(tmp_path_factory) -> Path:
    return install_example(EXAMPLE, tmp_path_factory)


def run_with_plugin(plugin_path: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(plugin_path), os.environ.get("PYTHONPATH", "")]),
           "COLUMNS": "250"}
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, env=env, timeout=120)


def test_fewshot_heads_lists_the_plugin(plugin_path):
    result = run_with_plugin(plugin_path, "-m", "fewshot", "heads")
    assert result.returncode == 0, result.stderr
    ridge = [line for line in result.stdout.splitlines() if " ridge " in line]
    assert ridge, result.stdout
    assert "fewshot_plugin_example.RidgeHead" in ridge[0] and "l2=1.0" in ridge[0]
    assert " pattern_search " in result.stdout   # the built-ins are still there


def test_plugin_head_fits_through_get_head(plugin_path):
    result = run_with_plugin(plugin_path, "-c", FIT_RIDGE)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["(3,", "16,", "5)", "(3,", "5)", "True"]


def test_without_the_plugin_the_head_is_unknown():
    result = subprocess.run([sys.executable, "-m", "fewshot", "heads"], capture_output=True, text=True,
                            env={**os.environ, "COLUMNS": "250"}, timeout=120)
    assert result.returncode == 0 and " ridge " not in result.stdout
