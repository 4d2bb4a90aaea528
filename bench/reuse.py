"""The first and the second `fewshot benchmark` of one config: pretraining reused the second time.

Both runs use a fresh data root (so the first one really pretrains and extracts features) that
links to the dataset files of your data root (building the data is not what is measured). The
second run finds the stored checkpoint and the cached features, and only fits the heads.
Prints both wall times and their ratio (goal: second < 1/3 of first on the demo).

    python bench/reuse.py                                      # the demo (minutes)
    python bench/reuse.py pretrain.epochs=1 pretrain.warmup_epochs=0 episodes.count=100 # a quick look
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from episodes import resolve_data_root


def timed_run(arguments: list[str], env: dict[str, str]) -> tuple[float, str]:
    start = time.perf_counter()
    result = subprocess.run([sys.executable, "-m", "fewshot", "benchmark", *arguments], env=env,
                            capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if result.returncode != 0:
        sys.exit(f"fewshot benchmark failed:\n{result.stdout}\n{result.stderr}")
    return seconds, result.stdout


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default=None, help="config file (default: the built-in demo)")
    parser.add_argument("overrides", nargs="*", help="config overrides, key.sub=value")
    parser.add_argument("--data-root", default=None, help="where the dataset files are (default: as fewshot)")
    args = parser.parse_args()
    source = resolve_data_root(args.data_root)
    with tempfile.TemporaryDirectory(prefix="fewshot-reuse-") as scratch:
        root = Path(scratch) / "data"
        root.mkdir()
        for entry in source.iterdir():  # the data, without the feature cache and the stored checkpoints
            if entry.name not in ("features", "checkpoints"):
                (root / entry.name).symlink_to(entry.resolve())
        env = {**os.environ, "FEWSHOT_DATA": str(root)}
        common = ([f"--config={args.config}"] if args.config else []) + ["--quiet", *args.overrides]
        first, _ = timed_run([*common, "--output-dir", str(Path(scratch) / "first")], env)
        second, _ = timed_run([*common, "--output-dir", str(Path(scratch) / "second")], env)
        reused = not (Path(scratch) / "second" / "checkpoint-last.pt").exists()
    print(f"first run  (pretrain, extract features, fit heads): {first:8.1f} s")
    print(f"second run (reuse checkpoint and features, fit heads): {second:8.1f} s"
          + ("" if reused else "  [did NOT reuse the checkpoint]"))
    print(f"second / first = {second / first:.3f} (goal < 0.333)")


if __name__ == "__main__":
    main()
