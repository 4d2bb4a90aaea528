"""Guess & check at matched loss at benchmark scale (issue 17's goal).

Synthetic clustered, L2-normalized features (`bench/volume.py`'s), 5-way 5-shot, `--dim`-d. SGD
(default settings) is fitted on every episode; its span-normalized support loss h is the target.
Per seed (independent streams), timed: the fit volume (`analyze_in_batches`, P(fit)) and the
matched comparison (`analyze_matched`, P(fit and loss <= h)); then per episode
log10 P(loss <= h | fit) = the difference, with its error two ways: the spread across seeds and
the error each run reports (its repeats). Goal: the matched analysis of 600 episodes under 10
minutes on 2 cores, per-episode error of log10 P(in band | fit) <= 0.3 decades.

Where a level goes (profiled: `python -m cProfile -s tottime bench/matched.py --episodes 1 --max-levels 100`):
before this change 57 of 59 s were the loss level's shrinking bracket (`slice_class_step`): a move
runs as many bracket rounds as its slowest chain needs (9.4 on average, the max over 256 chains;
a chain itself needs 2.4 draws on average, never near MAX_SHRINK = 60), and every round scored
every chain of every problem with one chain still shrinking: 1.11M chain scores for 345k draws
that mattered. Now only the chains still shrinking are scored (bit-identical numbers: same
streams, same samples): 100 levels of 4 episodes took 47.3 s before, 19.3 s after (side by
side, 1 thread, load ~8 on the 2 cores). What remains is Python overhead of small tensors (time
per episode-level: 150, 70, 51 ms at 1, 4, 16 episodes per call, `--scaling 1,4,16`) and the float64 level
score (`span_norm_sq`, the top entry). Torch threads: under the shared load, 2 threads ran the
same 4 episodes more than 13x slower than 1 (killed at 268 s against 19 s), hence `--threads 1`.

The goal is out of reach, by arithmetic, not by implementation: see `project` and docs/volume.md
("Cost of the matched run"). On these features log10 P(loss <= SGD's | fit) ~ -170, ~605 levels
at level fraction 1/2; exact fixed-fraction splitting has var(ln P) ~ n (1 - p0) / (p0 C) per run,
so 0.3 decades needs ~1270 chains per episode (C x R, against 256 today), ~7.7e5 chain-levels per
episode, 4.6e8 for 600 episodes: 10 minutes on 2 cores would be 2.6 us of one core per
chain-level (10 elliptical moves, each a 25-d proposal, 25 arcs and ~2.4 scored brackets);
measured ~700 us at 2 episodes per call (`--episodes 2 --max-levels 1000`: projection 88 h).

    python bench/matched.py                                        # 4 episodes, 2 seeds
    python bench/matched.py --scaling 1,4,16 --max-levels 100      # time per level vs episodes per call
    python bench/matched.py --episodes 2 --max-levels 1000         # the goal's setting, 2 episodes
    python bench/matched.py --dim 320 --shots 1 --episodes 4       # demo-like features
"""
from __future__ import annotations

import argparse
import math
import time

import torch

from volume import episodes     # bench/volume.py: this folder is on sys.path when run as a script
from fewshot.heads import get_head
from fewshot.heads.losses import decision_loss
from fewshot.run.volume_analysis import analyze_in_batches
from fewshot.run.volume_matched import analyze_matched, matched_key
from fewshot.volume.config import VolumeConfig


def sgd_targets(s: torch.Tensor, y: torch.Tensor, q: torch.Tensor, qy: torch.Tensor, n_way: int):
    """SGD (default settings) on every episode: its span-normalized support loss and query accuracy."""
    fit = get_head("sgd").fit(s, y, n_way, generator=torch.Generator().manual_seed(0))
    loss = decision_loss("span_norm", s, y, fit.weight, fit.bias)
    return loss, ((q @ fit.weight + fit.bias[:, None]).argmax(-1) == qy).double().mean(1)


def matched_in_chunks(s, y, q, qy, n_way: int, loss: torch.Tensor, config: VolumeConfig, seed: int,
                      chunk: int) -> dict[str, torch.Tensor]:
    """`analyze_matched` over chunks of `chunk` episodes (the numbers do not depend on the chunking)."""
    ids, matched = list(range(s.shape[0])), {}
    for first in range(0, s.shape[0], chunk):
        rows = slice(first, min(s.shape[0], first + chunk))
        part = analyze_matched(s[rows], y[rows], q[rows], qy[rows], n_way, ids[rows], config, {"sgd": loss[rows]},
                               seed=seed, setting="bench")
        for key, value in part.items():
            matched[key] = value if first == 0 else torch.cat([matched[key], value])
    return matched


def scaling(args: argparse.Namespace, config: VolumeConfig) -> None:
    """Time per level of the matched run against the episodes batched in one call, side by side."""
    counts = [int(c) for c in args.scaling.split(",")]
    s, y, q, qy = episodes(max(counts), 5, args.shots, 15, args.dim, args.spread, seed=0)
    loss, _ = sgd_targets(s, y, q, qy, 5)
    base = None
    for count in counts:
        start = time.perf_counter()
        out = matched_in_chunks(s[:count], y[:count], q[:count], qy[:count], 5, loss[:count], config, 0, count)
        took = time.perf_counter() - start
        per = took / (count * args.max_levels)
        base = base or per
        print(f"{count:4d} episodes in one call, {args.max_levels} levels (stalled "
              f"{int(out[matched_key('sgd', 'stalled')].nansum())}): {took:7.1f} s, "
              f"{1000 * per:6.1f} ms per episode-level ({base / per:.2f}x the 1st row's throughput)", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--episodes", type=int, default=4)
    parser.add_argument("--shots", type=int, default=5)
    parser.add_argument("--max-levels", type=int, default=300)
    parser.add_argument("--dim", type=int, default=640)
    parser.add_argument("--seeds", type=int, default=2)
    parser.add_argument("--spread", type=float, default=1.5)
    parser.add_argument("--chains", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=4)
    parser.add_argument("--sweeps", type=int, default=2)
    parser.add_argument("--level-fraction", type=float, default=0.5)
    parser.add_argument("--chunk", type=int, default=25, help="episodes per analyze_matched call")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (0 = torch's default)")
    parser.add_argument("--scaling", default="", help="e.g. 1,4,16: time per level vs episodes per call, then stop")
    parser.add_argument("--goal-episodes", type=int, default=600)
    parser.add_argument("--goal-se", type=float, default=0.3)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    config = VolumeConfig(enabled=True, chains=args.chains, repeats=args.repeats, sweeps=args.sweeps,
                          level_fraction=args.level_fraction, poisoned=False, matched_loss="span_norm",
                          max_levels=args.max_levels)
    print(f"torch threads {torch.get_num_threads()}; 5-way {args.shots}-shot, {args.dim}-d; {args.chains} chains x "
          f"{args.repeats} repeats, {args.sweeps} sweeps, level fraction {args.level_fraction}", flush=True)
    if args.scaling:
        scaling(args, config)
        return
    s, y, q, qy = episodes(args.episodes, 5, args.shots, 15, args.dim, args.spread, seed=0)
    loss, sgd_accuracy = sgd_targets(s, y, q, qy, 5)
    print(f"{args.episodes} episodes; SGD: span-normalized loss mean {loss.mean():.4f}, query accuracy "
          f"{sgd_accuracy.mean():.4f}")
    ids = list(range(args.episodes))
    runs, seconds = [], []
    for seed in range(args.seeds):
        start = time.perf_counter()
        plain = analyze_in_batches(s, y, q, qy, 5, ids, config, seed=seed, setting="bench")
        middle = time.perf_counter()
        matched = matched_in_chunks(s, y, q, qy, 5, loss, config, seed, args.chunk)
        end = time.perf_counter()
        seconds.append(end - middle)
        get = lambda key: matched[matched_key("sgd", key)]  # noqa: E731
        given = get("log10_volume") - plain["log10_volume"]
        given_se = (get("log10_volume_se") ** 2 + plain["log10_volume_se"] ** 2).sqrt()
        runs.append((given, given_se, get("log10_volume"), get("stalled")))
        print(f"seed {seed}: fit volume {middle - start:.1f} s, matched {end - middle:.1f} s (ratio "
              f"{(end - middle) / (middle - start):.2f}); log10 P(fit) {plain['log10_volume'].mean():.2f}, "
              f"log10 P(fit and loss <= SGD's) {get('log10_volume').nanmean():.2f}, "
              f"log10 P(loss <= SGD's | fit) {given.nanmean():.2f}; G&C accuracy: all fitting "
              f"{plain['expected_accuracy'].mean():.4f}, at SGD's loss {get('expected_accuracy').nanmean():.4f}, "
              f"SGD {sgd_accuracy.mean():.4f}; stalled {int(get('stalled').nansum())}, "
              f"empty {int(get('empty').nansum())}", flush=True)
    given = torch.stack([run[0] for run in runs])
    reported = torch.stack([run[1] for run in runs])
    print(f"per-episode error of log10 P(loss <= SGD's | fit): each run's own se rms "
          f"{reported.pow(2).nanmean().sqrt():.3f}, median {reported.nanmedian():.3f} (goal <= {args.goal_se})")
    if args.seeds >= 2:
        spread = given.std(0)
        print(f"spread across {args.seeds} seeds, per episode: rms {spread.pow(2).nanmean().sqrt():.3f}, median "
              f"{spread.nanmedian():.3f} decades (should match the reported se)")
    project(args, torch.stack([run[2] for run in runs]), bool(torch.stack([run[3] for run in runs]).nansum() > 0),
            sum(seconds) / len(seconds))


def project(args: argparse.Namespace, log10: torch.Tensor, stalled: bool, seconds: float) -> None:
    """The goal's cost from the measured one: levels n ~ log10 P / log10 p0; fixed-fraction splitting with
    exact conditional moves has var(ln P_run) ~ n (1 - p0) / (p0 C), so the goal's error needs
    C R >= n (1 - p0) / (p0 (ln 10 se)^2) chains per episode, at the measured cost per chain-level."""
    p0, chains = args.level_fraction, args.chains * args.repeats
    levels = float((log10.nanmean() / math.log10(p0)).clamp_min(1))
    ideal = math.sqrt(levels * (1 - p0) / (p0 * chains)) / math.log(10)
    needed = levels * (1 - p0) / (p0 * (math.log(10) * args.goal_se) ** 2)
    per_chain_level = seconds / (args.episodes * chains * levels)
    hours = per_chain_level * needed * levels * args.goal_episodes / 3600
    print(f"projection{' (runs stalled: levels and cost are lower bounds)' if stalled else ''}: ~{levels:.0f} levels; "
          f"ideal-mixing se of one episode's log10 P at {chains} chains in all: {ideal:.2f} decades; the goal's "
          f"{args.goal_se} needs ~{needed:.0f} chains in all (C x R); at the measured {1e6 * per_chain_level:.0f} us "
          f"per chain-level, {args.goal_episodes} episodes take ~{hours:.1f} h on this process's threads "
          f"(goal: 10 minutes)", flush=True)


if __name__ == "__main__":
    main()
