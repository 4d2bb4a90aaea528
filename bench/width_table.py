"""The width table (issue 19, item 4): finite-width volumes approach the NNGP as the width grows.

For a few small 5-way 1-shot episodes (bench/volume.py's synthetic clustered features), the volume
analysis of a one-hidden-layer ReLU head sampled in weight space (`volume.model: mlp`) at widths
16, 64, 256, 1024, beside the infinite-width NNGP prior through the logit-space lab
(`model: linear, prior: nngp`), with the same four variances. Prints, per width, the mean over
episodes of log10 P(fit) and of the volume-weighted query accuracy with their Monte Carlo errors
(root-sum-square of the per-episode errors / episodes), and the mean per-episode gap to the NNGP.

    python bench/width_table.py [--episodes 4] [--dim 64] [--queries 5] [--chains 64] [--repeats 8]
"""
from __future__ import annotations

import argparse
import dataclasses
import time

import torch

from volume import episodes
from fewshot.run.volume_analysis import analyze_episodes
from fewshot.volume.config import VolumeConfig


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--episodes", type=int, default=4)
    parser.add_argument("--dim", type=int, default=64)
    parser.add_argument("--queries", type=int, default=5)
    parser.add_argument("--chains", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=8)
    parser.add_argument("--widths", type=int, nargs="+", default=[16, 64, 256, 1024])
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    support, labels, query, query_labels = episodes(args.episodes, 5, 1, args.queries, args.dim, 1.5, seed=0)
    ids = list(range(args.episodes))
    base = VolumeConfig(enabled=True, prior="nngp", chains=args.chains, repeats=args.repeats, poisoned=False)
    print(f"5-way 1-shot, {args.episodes} episodes, {args.dim}-d, {args.queries} queries per class; "
          f"nngp s1={base.nngp.s1} b1={base.nngp.b1} s2={base.nngp.s2} b2={base.nngp.b2}; {args.chains} chains, "
          f"{args.repeats} repeats; torch {args.threads} thread(s)")
    rows = [("NNGP (H = inf)", base)] + [(f"H = {w}", dataclasses.replace(base, model="mlp", width=w)) for w in args.widths]
    results = {}
    print("| width | log10 P(fit) | volume-weighted accuracy | gap to NNGP: log10 P | gap: accuracy | time (s) |")
    print("|---|---|---|---|---|---|")
    for name, config in rows:
        start = time.perf_counter()
        out = analyze_episodes(support, labels, query, query_labels, 5, ids, config, seed=0, setting="width")
        seconds = time.perf_counter() - start
        results[name] = out
        cells = []
        for key in ("log10_volume", "expected_accuracy"):
            mc = float(out[f"{key}_se"].pow(2).sum().sqrt()) / args.episodes
            cells.append(f"{float(out[key].mean()):.3f} ± {mc:.3f}")
        for key in ("log10_volume", "expected_accuracy"):
            gap = out[key] - results["NNGP (H = inf)"][key]
            se = (out[f"{key}_se"] ** 2 + results["NNGP (H = inf)"][f"{key}_se"] ** 2).sum().sqrt() / args.episodes
            cells.append("—" if name.startswith("NNGP") else f"{float(gap.mean()):+.3f} ± {float(se):.3f}")
        print(f"| {name} | " + " | ".join(cells) + f" | {seconds:.1f} |")
    print("(± = Monte Carlo error of the mean over episodes, from each episode's independent repeats; "
          "the gaps are per-episode differences, averaged)")


if __name__ == "__main__":
    main()
