"""Issue 20, B, D, E1-E3, E5 (YAML, typos), F and H: input decoded wrongly, unbounded resources,
values and messages, and what a results file says about the machine.

Each row of `CASES` is a command after an optional edit of a sandbox (its own copy of the tiny image
folder, a config pointing at it, a data root, a working folder), with the outcome it must have and,
where one is given, a check of the files after it. A refusal must leave the run folder as it was
(absent): that is how "before any work" is checked (a pretraining would write a checkpoint there).
"""
from __future__ import annotations

import errno
import json
from pathlib import Path
from typing import Callable

import numpy as np
import pytest
import torch
from PIL import Image

from fewshot.cli import main
from tests.adversarial.probe import Probe, run_probe

RUN = "{run}"
EVALUATE = ("evaluate", "--checkpoint", "{checkpoint}", "--config", "{config}", "--quiet", "--output-dir", RUN)
BENCHMARK = ("benchmark", "--config", "{config}", "--quiet", "--output-dir", RUN)
ALIAS_BOMB = "".join(f"  l{i}: &l{i} [{', '.join([f'*l{i - 1}'] * 9) if i else '1, 1, 1, 1, 1, 1, 1, 1, 1'}]\n"
                     for i in range(9))


def refused(name: str, argv: tuple[str, ...], *says: str, setup=None) -> tuple[Probe, None]:
    """A case refused with exit 2 before any work: the run folder is never made."""
    return Probe(name, argv, setup, 2, says, unchanged=(RUN,)), None


def each_image(convert: Callable[[np.ndarray], Image.Image], suffix: str, only: str | None = None):
    """Setup: rewrite the sandbox's images (of split `only`, else all) with `convert(pixels)`."""
    def setup(root: Path, places: dict[str, Path]) -> None:
        for path in sorted((places["dataset"] / (only or "")).rglob("*.png")):
            pixels = np.asarray(Image.open(path).convert("RGB"))
            path.unlink()
            convert(pixels).save(path.with_suffix(suffix))
    return setup


def gray16(pixels: np.ndarray) -> Image.Image:
    """The picture's gray levels as a 16-bit PNG (value v stored as 257 v: the same picture)."""
    return Image.fromarray((np.asarray(Image.fromarray(pixels).convert("L"), dtype=np.uint16) * 257))


def gray8_reference(root: Path, places: dict[str, Path]) -> None:
    """The same gray pictures in 8 bits: the 16-bit run must give the very same numbers."""
    each_image(lambda pixels: Image.fromarray(pixels).convert("L"), ".png")(root, places)


def config_file(text: str) -> Callable[[Path, dict[str, Path]], None]:
    """Setup: append `text` to the sandbox's config file."""
    def setup(root: Path, places: dict[str, Path]) -> None:
        places["config"].write_text(places["config"].read_text() + text)
    return setup


def wide_checkpoint(root: Path, places: dict[str, Path]) -> None:
    """A checkpoint whose description claims width 100,000 (its weights are the tiny ones)."""
    payload = torch.load(places["checkpoint"], weights_only=True)
    payload["backbone_config"]["width"] = 100_000.0
    torch.save(payload, root / "wide.pt")


def results_say_which_cpu(root: Path, places: dict[str, Path]) -> None:
    hardware = json.loads((places["run"] / "results-3way-1shot.json").read_text())["hardware"]
    assert hardware["cpu_isa"] in ("amx", "avx512", "avx2", "avx", "sse4.2", "baseline", "unknown")
    assert hardware["torch_cpu_capability"] == torch.backends.cpu.get_cpu_capability()
    assert "cpu_model" in hardware and isinstance(hardware["cpu_flags"], list)
    assert f"torch {hardware['torch_cpu_capability']}" in (places["run"] / "report.html").read_text()


def accuracy(run: Path) -> list:
    return json.loads((run / "results-3way-1shot.json").read_text())["heads"][0]["per_episode"]


CASES: list[tuple[Probe, Callable[[Path, dict[str, Path]], None] | None]] = [
    # B: every image mode converted faithfully or refused by name
    (Probe("B 16-bit PNGs are scaled, not clipped to white", EVALUATE, each_image(gray16, ".png"), 0,
           never_says=("Traceback", "same pixels")), None),
    refused("B float pixels outside [0, 1] are refused by mode", EVALUATE, "PIL mode F", "outside [0, 1]",
            setup=each_image(lambda p: Image.fromarray(p[..., 0].astype(np.float32) * 3), ".tif", "test")),
    refused("B 32-bit integer TIFFs are refused by mode", EVALUATE, "PIL mode 'I'", "TIFF",
            setup=each_image(lambda p: Image.fromarray(p[..., 0].astype(np.int32) << 20), ".tif", "test")),
    # D: what a setting allocates, estimated and refused before any work
    refused("D episodes.count=10^15", (*EVALUATE, "episodes.count=1000000000000000"),
            "episodes.count=1,000,000,000,000,000", "GiB of memory", "this machine's"),
    refused("D dataset.image_size=100000", (*EVALUATE, "dataset.image_size=100000"),
            "dataset.image_size=100000", "GiB of memory"),
    refused("D backbone.width=1e5 before pretraining", (*BENCHMARK, "backbone.width=1e5"),
            "backbone.width=100000.0", "GiB of memory"),
    refused("D a checkpoint claiming width 1e5", (*EVALUATE[:2], "{root}/wide.pt", *EVALUATE[3:]),
            "backbone width 100000.0", "GiB of memory", setup=wide_checkpoint),
    refused("D an alias bomb in tune.space", EVALUATE, "alias", "100,000",
            setup=config_file(f"tune:\n  space:\n    bomb:\n{ALIAS_BOMB.replace('  l', '      l')}")),
    refused("D an alias bomb in an override",
            (*EVALUATE, "tune.space={{a: &a [1,1,1,1,1,1,1,1,1,1], b: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a,*a], "
                        "c: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b,*b], d: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c,*c], "
                        "e: [*d,*d,*d,*d,*d,*d,*d,*d,*d,*d]}}"), "alias"),
    # E1: infinite and absurd floats refused at validation; volume settings before pretraining
    *[refused(f"E1 {setting}", (*EVALUATE, setting), setting.split("=")[0], "finite")
      for setting in ("heads.sgd.lr=.inf", "heads.sgd.weight_decay=.inf", "heads.sgd.init_scale=-.inf",
                      "heads.logistic_regression.C=.inf", "heads.sgd.lr=1e300", "heads.prototype.temperature=.nan",
                      "heads.pattern_search.radius=1e20", "volume.scale=.inf")],
    refused("E1 pretrain.lr=1e300 before pretraining", (*BENCHMARK, "pretrain.lr=1e300"), "pretrain.lr", "finite"),
    refused("E1 volume.chains=0 before pretraining", (*BENCHMARK, "volume.enabled=true", "volume.chains=0"),
            "volume.chains is 0"),
    # E2: --device checked against what this torch can use
    *[refused(f"E2 --device {device}", (*EVALUATE, "--device", device), device)
      for device in ("mps", "xpu", "meta", "cuda:99", "cuda:x", "tpu")],
    # E5: YAML 1.1 floats, typos, duplicate keys
    (Probe("E5 heads.prototype.temperature=1e-3 is a float", (*EVALUATE, "heads.prototype.temperature=1e-3"), exit_code=0),
     lambda root, places: None),
    refused("E5 a typo in a key suggests the key", (*EVALUATE, "episodes.cout=3"), "did you mean episodes.count"),
    refused("E5 a typo in a head suggests the head", (*EVALUATE, "heads.protoype={{}}"), "did you mean 'prototype'"),
    refused("E5 a duplicate key in the config", EVALUATE, "'count' is given twice",
            setup=lambda root, places: places["config"].write_text(
                places["config"].read_text() + "extra:\n  count: 1\n  count: 2\n")),
    refused("E5 a duplicate key in an override", (*EVALUATE, "heads={{sgd: {{}}, sgd: {{lr: 1}}}}"), "given twice"),
    # inputs refused before this issue (they must stay refused)
    refused("held: negative count", (*EVALUATE, "episodes.count=-5"), "episodes.count is -5"),
    refused("held: empty k_shot", (*EVALUATE, "episodes.k_shot=[]"), "episodes.k_shot"),
    refused("held: an unknown dataset", (*EVALUATE, "dataset.name=nope"), "nope"),
    refused("held: a string for an int", (*EVALUATE, "episodes.n_way=five"), "episodes.n_way"),
    refused("held: a missing config file", ("evaluate", "--checkpoint", "{checkpoint}", "--config",
                                           "{root}/missing.yaml", "--output-dir", RUN), "does not exist"),
    # H: the CPU and instruction set a run used, in every results file and the report
    (Probe("H results files name the CPU and its instruction set", EVALUATE, exit_code=0), results_say_which_cpu),
]



@pytest.mark.parametrize("probe, after", CASES, ids=[str(probe) for probe, _ in CASES])
def test_probe(probe, after, sandbox, capsys):
    root, places = sandbox
    run_probe(probe, root, places, capsys, after)


def test_16_bit_pictures_give_the_numbers_of_the_same_8_bit_pictures(sandbox, capsys):
    """B: the 16-bit run is not only accepted, it sees the very pictures the 8-bit run sees."""
    root, places = sandbox
    argv = [part.format(**places) for part in EVALUATE[:-1]]
    gray8_reference(root, places)
    assert main(argv + [str(root / "run8")]) == 0
    each_image(gray16, ".png")(root, places)
    assert main(argv + [str(root / "run16"), "--data-root", str(root / "data16")]) == 0
    assert accuracy(root / "run16") == accuracy(root / "run8")


def full_disk_save(obj: object, handle) -> None:
    """torch.save on a full disk: the OSError of the write, wrapped in torch's RuntimeError."""
    handle.write(b"PK")
    try:
        raise OSError(errno.ENOSPC, "No space left on device")
    except OSError:
        raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 704 vs 598")


def test_a_full_disk_under_the_data_root_names_the_cache_file_and_the_run_goes_on(sandbox, capsys, monkeypatch):
    """E3: the feature cache on a full disk: the file is named, nothing is left behind, and the run
    finishes (a cache that cannot be written only slows the next run down); no torch traceback."""
    root, places = sandbox
    monkeypatch.setattr(torch, "save", full_disk_save)
    argv = tuple(part for part in EVALUATE if part != "--quiet")
    text = run_probe(Probe("E3 full disk while writing the feature cache", argv, exit_code=0), root, places, capsys)
    assert "could not write the feature cache" in text and str(root / "data") in text
    assert not [path for path in (root / "data").rglob("*") if path.is_file() and path.name.endswith(".tmp")]
