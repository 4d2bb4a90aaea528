"""The volume lab at benchmark scale: exact guess & check vs naive rejection.

Synthetic clustered, L2-normalized features. Prints, for `--episodes` 5-way 5-shot episodes of
`--dim`-d features:
- the time of the volume analysis per seed (multilevel splitting + LIN-ESS, then the query
  accuracies of the fitting heads);
- over `--seeds` seeds, the per-episode standard error of log10_volume and of the expected query
  accuracy (the spread across seeds; median and root-mean-square over episodes), beside the
  error each run reports for itself;
- the float32 sampler against the float64 reference, timed side by side on the same episodes;
- naive rejection at 2-way 1-shot, run until each episode's expected accuracy has the exact
  method's standard error, timed beside the exact method; and its projected time at 5-way
  5-shot (1 / P(fit) guesses per accepted head times the cost of one guess, measured there).

    python bench/volume.py                     # 600 episodes, 5 seeds (about 10 minutes)
    python bench/volume.py --episodes 50 --seeds 2 --threads 1
"""
from __future__ import annotations

import argparse
import math
import time

import torch
import torch.nn.functional as F

from fewshot.volume import Constraints, LogitPrior, Streams, split_volume
from fewshot.run.volume_analysis import analyze_episodes, analyze_in_batches
from fewshot.volume.config import VolumeConfig


def episodes(count: int, n_way: int, k_shot: int, n_query: int, dim: int, spread: float, seed: int):
    """Clustered features: class centres plus isotropic noise, L2-normalized."""
    g = torch.Generator().manual_seed(seed)
    centres = torch.randn(count, n_way, dim, generator=g)
    def draw(k: int) -> tuple[torch.Tensor, torch.Tensor]:
        x = centres.repeat_interleave(k, 1) + spread * torch.randn(count, n_way * k, dim, generator=g)
        return F.normalize(x, dim=-1), torch.arange(n_way).repeat_interleave(k).expand(count, -1).contiguous()
    return (*draw(k_shot), *draw(n_query))


def rejection(support, labels, query, query_labels, n_way: int, target_se: torch.Tensor, batch: int = 512,
              seed: int = 0) -> dict[str, torch.Tensor]:
    """Naive guess & check: draw W ~ N(0, 1), b ~ N(0, 1) until each episode's accepted heads give its
    mean query accuracy with standard error <= target_se (at least 30 accepted heads)."""
    g = torch.Generator().manual_seed(seed)
    count, dim = support.shape[0], support.shape[2]
    points = torch.cat([support, query], 1).double()
    shots = labels.shape[1]
    total, square, accepted, guesses = (torch.zeros(count, dtype=torch.float64) for _ in range(4))
    todo = torch.arange(count)
    while todo.numel():
        weight = torch.randn(batch, dim, n_way, generator=g, dtype=torch.float64)
        bias = torch.randn(batch, 1, n_way, generator=g, dtype=torch.float64)
        logits = torch.einsum("epd,gdn->egpn", points[todo], weight) + bias            # [e, G, P, N]
        predicted = logits.argmax(-1)
        fits = (predicted[:, :, :shots] == labels[todo, None]).all(-1)                  # [e, G]
        accuracy = (predicted[:, :, shots:] == query_labels[todo, None]).double().mean(-1)
        guesses[todo] += batch
        accepted[todo] += fits.sum(1)
        total[todo] += (accuracy * fits).sum(1)
        square[todo] += (accuracy ** 2 * fits).sum(1)
        n = accepted[todo].clamp_min(1)
        variance = (square[todo] / n - (total[todo] / n) ** 2).clamp_min(0) * n / (n - 1).clamp_min(1)
        done = (accepted[todo] >= 30) & ((variance / n).sqrt() <= target_se[todo])
        todo = todo[~done]
    return {"accuracy": total / accepted, "accepted": accepted, "guesses": guesses}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--episodes", type=int, default=600)
    parser.add_argument("--dim", type=int, default=640)
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--spread", type=float, default=1.5, help="noise / centre norm ratio (per dim)")
    parser.add_argument("--chains", type=int, default=192)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--sweeps", type=int, default=1)
    parser.add_argument("--level-fraction", type=float, default=0.6)
    parser.add_argument("--block-size", type=int, default=0)
    parser.add_argument("--threads", type=int, default=0)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"torch threads {torch.get_num_threads()}")
    s, y, q, qy = episodes(args.episodes, 5, 5, 15, args.dim, args.spread, seed=0)
    config = VolumeConfig(enabled=True, chains=args.chains, repeats=args.repeats, sweeps=args.sweeps,
                          level_fraction=args.level_fraction, block_size=args.block_size, poisoned=False)
    print(f"settings: chains {config.chains}, repeats {config.repeats}, sweeps {config.sweeps}, level_fraction "
          f"{config.level_fraction}, block_size {config.block_size}")
    runs = []
    for seed in range(args.seeds):
        start = time.perf_counter()
        out = analyze_in_batches(s, y, q, qy, 5, list(range(args.episodes)), config, seed=seed, setting="bench")
        seconds = time.perf_counter() - start
        runs.append(out)
        print(f"seed {seed}: {seconds:.1f} s for {args.episodes} episodes (5-way 5-shot, {args.dim}-d); "
              f"mean log10_volume {out['log10_volume'].mean():.3f}, mean levels {out['levels'].mean():.1f}, "
              f"E[query acc | fit] {out['expected_accuracy'].mean():.4f}, stalled {int(out['stalled'].sum())}",
              flush=True)
    volumes = torch.stack([run["log10_volume"] for run in runs])
    accuracies = torch.stack([run["expected_accuracy"] for run in runs])
    reported = torch.stack([run["log10_volume_se"] for run in runs])
    if args.seeds >= 2:
        spread, accuracy_spread = volumes.std(0), accuracies.std(0)
        print(f"standard error over {args.seeds} seeds, per episode: log10_volume median {spread.median():.3f}, "
              f"rms {spread.pow(2).mean().sqrt():.3f} decades (goal <= 0.15); each run's own se: rms "
              f"{reported.pow(2).mean().sqrt():.3f}; expected accuracy median {accuracy_spread.median():.4f}, "
              f"rms {accuracy_spread.pow(2).mean().sqrt():.4f} (goal <= 0.01)")
    compare_dtypes(s[:50], y[:50], config)
    compare_rejection(args, config)
    # Cost of one guess at 5-way 5-shot (support logits and the fit check), and the projection.
    weight = torch.randn(2000, args.dim, 5, dtype=torch.float64)
    start = time.perf_counter()
    for e in range(20):
        (torch.einsum("pd,gdn->gpn", s[e].double(), weight).argmax(-1) == y[e]).all(-1)
    per_guess = (time.perf_counter() - start) / (20 * 2000)
    mean_p = float(torch.pow(10.0, volumes[0]).mean())
    years = per_guess / mean_p * args.episodes / 3600 / 24 / 365
    print(f"5-way 5-shot: one guess costs {per_guess * 1e6:.2f} us; mean P(fit) {mean_p:.2e} -> naive rejection "
          f"needs about {years:.2e} years for one accepted head in each of {args.episodes} episodes")


def compare_dtypes(support, labels, config: VolumeConfig) -> None:
    """The float32 sampler and the float64 reference on the same episodes and streams."""
    prior = LogitPrior.from_features(support, scale=1.0, bias_scale=1.0)
    constraints = Constraints.beat_all(labels, 5, prior)
    times, results = {}, {}
    for dtype in (torch.float64, torch.float32):
        streams = Streams(range(len(support) * config.repeats))
        start = time.perf_counter()
        results[dtype] = split_volume(prior, constraints, 5, streams, config.splitting(), dtype=dtype)
        times[dtype] = time.perf_counter() - start
    difference = (results[torch.float32].log10 - results[torch.float64].log10).mean()
    joint = (results[torch.float32].se ** 2 + results[torch.float64].se ** 2).mean().sqrt() / math.sqrt(len(support))
    print(f"sampler dtype, {len(support)} episodes: float64 {times[torch.float64]:.1f} s, float32 "
          f"{times[torch.float32]:.1f} s ({times[torch.float64] / times[torch.float32]:.2f}x); mean log10_volume "
          f"difference {difference:+.3f} (se {joint:.3f})")


def compare_rejection(args, config: VolumeConfig) -> None:
    """Exact analysis vs naive rejection at 2-way 1-shot, to the same per-episode accuracy error."""
    count = 200
    s2, y2, q2, qy2 = episodes(count, 2, 1, 15, args.dim, args.spread, seed=1)
    start = time.perf_counter()
    exact = analyze_episodes(s2, y2, q2, qy2, 2, list(range(count)), config, seed=0, setting="bench2")
    exact_seconds = time.perf_counter() - start
    start = time.perf_counter()
    naive = rejection(s2, y2, q2, qy2, 2, exact["expected_accuracy_se"].clamp_min(1e-3))
    naive_seconds = time.perf_counter() - start
    gap = (naive["accuracy"] - exact["expected_accuracy"]).mean()
    print(f"2-way 1-shot, {count} episodes, expected accuracy to se {exact['expected_accuracy_se'].mean():.4f}: exact "
          f"{exact_seconds:.2f} s, naive rejection {naive_seconds:.2f} s ({naive['guesses'].mean():.0f} guesses, "
          f"{naive['accepted'].mean():.0f} accepted per episode); mean accuracy exact "
          f"{exact['expected_accuracy'].mean():.4f}, rejection {naive['accuracy'].mean():.4f} (difference {gap:+.4f})")


if __name__ == "__main__":
    main()
