"""The volume lab at benchmark scale: exact guess & check vs naive rejection.

Synthetic clustered, L2-normalized features. Prints, for `--episodes` 5-way 5-shot episodes of
`--dim`-d features: the time of the exact method (multilevel splitting + LIN-ESS) and, over
`--seeds` seeds, the per-episode standard error of log10_volume (spread across seeds) and of
the expected query accuracy; then naive rejection timed at 2-way 1-shot to the same accuracy
CI, and its projected time at 5-way 5-shot (1/p guesses per accepted head times the cost of one
guess measured at 5-way 5-shot).

    python bench/volume.py                     # 600 episodes, 5 seeds (minutes)
    python bench/volume.py --episodes 50 --seeds 2 --threads 1
"""
from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F

from fewshot.heads import get_head
from fewshot.volume.analysis import analyze_episodes
from fewshot.volume.config import VolumeConfig


def episodes(count: int, n_way: int, k_shot: int, n_query: int, dim: int, spread: float, seed: int):
    """Clustered features: class centres plus isotropic noise, L2-normalized."""
    g = torch.Generator().manual_seed(seed)
    centres = torch.randn(count, n_way, dim, generator=g)
    def draw(k: int) -> tuple[torch.Tensor, torch.Tensor]:
        x = centres.repeat_interleave(k, 1) + spread * torch.randn(count, n_way * k, dim, generator=g)
        return F.normalize(x, dim=-1), torch.arange(n_way).repeat_interleave(k).expand(count, -1).contiguous()
    return (*draw(k_shot), *draw(n_query))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--episodes", type=int, default=600)
    parser.add_argument("--dim", type=int, default=640)
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--spread", type=float, default=1.5, help="noise / centre norm ratio (per dim)")
    parser.add_argument("--chains", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--sweeps", type=int, default=2)
    parser.add_argument("--threads", type=int, default=0)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"torch threads {torch.get_num_threads()}; cores shared with other jobs: timings are noisy")
    s, y, q, qy = episodes(args.episodes, 5, 5, 15, args.dim, args.spread, seed=0)
    config = VolumeConfig(enabled=True, chains=args.chains, repeats=args.repeats, sweeps=args.sweeps, poisoned=False)
    volumes, accuracies = [], []
    for seed in range(args.seeds):
        start = time.perf_counter()
        out = analyze_episodes(s, y, q, qy, 5, list(range(args.episodes)), config, seed=seed, setting="bench")
        seconds = time.perf_counter() - start
        volumes.append(out["log10_volume"])
        accuracies.append(out["expected_accuracy"])
        print(f"seed {seed}: {seconds:.1f} s for {args.episodes} episodes (5-way 5-shot, {args.dim}-d); "
              f"mean log10_volume {out['log10_volume'].mean():.2f}, mean levels {out['levels'].mean():.1f}, "
              f"E[query acc | fit] {out['expected_accuracy'].mean():.4f}, stalled {int(out['stalled'].sum())}")
    volumes, accuracies = torch.stack(volumes), torch.stack(accuracies)
    if args.seeds >= 2:
        print(f"per-episode SE over {args.seeds} seeds (median over episodes): log10_volume "
              f"{volumes.std(0).median():.3f} decades (goal <= 0.15); expected accuracy "
              f"{accuracies.std(0).median():.4f} (goal <= 0.01)")
    # Naive rejection at 2-way 1-shot, to the same accuracy CI as the exact method's mean.
    s2, y2, q2, qy2 = episodes(200, 2, 1, 15, args.dim, args.spread, seed=1)
    start = time.perf_counter()
    fit = get_head("guess_check", distribution="gaussian", max_guesses=10**6).fit(s2, y2, 2, generator=torch.Generator().manual_seed(0))
    rejection_seconds = time.perf_counter() - start
    start = time.perf_counter()
    exact = analyze_episodes(s2, y2, q2, qy2, 2, list(range(200)), config, seed=0, setting="bench2")
    exact_seconds = time.perf_counter() - start
    print(f"2-way 1-shot, 200 episodes: rejection {rejection_seconds:.2f} s ({fit.stats['guesses'].mean():.0f} guesses "
          f"per episode on average), exact analysis {exact_seconds:.2f} s")
    # Cost of one guess at 5-way 5-shot, and the projected rejection time there.
    guess = get_head("guess_check", distribution="gaussian", max_guesses=2000)
    start = time.perf_counter()
    guess.fit(s[:50], y[:50], 5, generator=torch.Generator().manual_seed(0))
    per_guess = (time.perf_counter() - start) / (50 * 2000)
    mean_p = float(torch.pow(10.0, volumes[0]).mean())
    print(f"5-way 5-shot: one guess costs {per_guess * 1e6:.2f} us; mean P(fit) {mean_p:.2e} -> naive rejection would "
          f"need about {per_guess / mean_p * args.episodes / 3600 / 24 / 365:.2e} years for {args.episodes} episodes "
          "(1 / p guesses per episode)")


if __name__ == "__main__":
    main()
