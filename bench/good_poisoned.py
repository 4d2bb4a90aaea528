"""The demo's good and poisoned volumes: one splitting run over both regions vs a run per region.

`fewshot.run.volume_analysis` splits the "good" region (fits the support, every query right) and
the "poisoned" one (every query as (y + 1) mod N) in one run of 2E problems, each on its own
streams; the straightforward way is a `split_volume` run per region. The poisoned region sits
decades deeper, so the merged run takes the levels of the deeper region only. Both ways are timed
side by side on the demo's features (its first `--episodes` episodes per setting, its volume
settings), alternating `--repeats` times, and their estimates must be bit-identical.

    FEWSHOT_DATA=DATA python bench/good_poisoned.py --checkpoint RUN/checkpoint-best.pt
"""
from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import torch
from rich.console import Console

from backbones.checkpoint import checkpoint_sha256, load_checkpoint
from backbones.distributed import Ranks
from episodes import load_dataset
from fewshot.config import load_config
from fewshot.run.pipeline import RunContext, episode_samplers, split_features
from fewshot.run.volume_analysis import _good_and_poisoned, _streams
from fewshot.volume import Constraints, split_volume
from sensitivity import first_episodes


def one_run_per_region(prior, labels, query_labels, n_way, ids, config, *, seed, setting):
    """The straightforward way: a splitting run per region."""
    parts = {}
    for part, target in (("good", query_labels), ("poisoned", (query_labels + 1) % n_way)):
        region = Constraints.beat_all(torch.cat([labels, target], 1), n_way, prior)
        result = split_volume(prior, region, n_way, _streams(seed, setting, ids, part, config.repeats),
                              config.splitting())
        parts[part] = (result.log10, result.se, result.stalled.double())
    return parts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", type=Path, required=True, help="the demo run's checkpoint-best.pt")
    parser.add_argument("--data-root", type=Path, default=None, help="else FEWSHOT_DATA, else ~/.cache/fewshot")
    parser.add_argument("--episodes", type=int, default=0, help="default: the demo's poisoned_episodes")
    parser.add_argument("--repeats", type=int, default=2, help="timed runs of each way, alternating")
    args = parser.parse_args()
    config = load_config(None)
    volume = config.volume
    count = args.episodes or volume.poisoned_episodes
    dataset = load_dataset(config.dataset.name, args.data_root, config.dataset.path, config.dataset.image_size)
    run = RunContext(output_dir=Path("."), device="cpu", data_root=args.data_root, console=Console(stderr=True),
                     ranks=Ranks())
    model, _ = load_checkpoint(args.checkpoint, device="cpu")
    features = split_features(config, dataset, model, checkpoint_sha256(args.checkpoint), run)
    del model
    print(f"torch threads {torch.get_num_threads()}; the demo's first {count} episodes per setting; chains "
          f"{volume.chains} x {volume.repeats} repeats, block_size {volume.block_size}; median of {args.repeats}")
    print("| setting | a run per region (s) | one run (s) | ratio | log10 good | log10 poisoned | identical |")
    print("|---|---:|---:|---:|---:|---:|---|")
    n_way = config.episodes.n_way
    for k_shot, sampler in episode_samplers(config, dataset).items():
        support, labels, query, query_labels = first_episodes(features, sampler.sample(config.episodes.count), count,
                                                              config.features)
        prior = volume.logit_prior(torch.cat([support, query], 1))
        setting, ids = f"{n_way}way-{k_shot}shot", list(range(count))
        times, outputs = {"separate": [], "merged": []}, {}
        for _ in range(args.repeats):
            for name, way in (("separate", one_run_per_region), ("merged", _good_and_poisoned)):
                start = time.perf_counter()
                outputs[name] = way(prior, labels.long(), query_labels.long(), n_way, ids, volume, seed=0,
                                    setting=setting)
                times[name].append(time.perf_counter() - start)
        separate, merged = statistics.median(times["separate"]), statistics.median(times["merged"])
        identical = all(torch.equal(a, b) for part in ("good", "poisoned")
                        for a, b in zip(outputs["separate"][part], outputs["merged"][part]))
        good, poisoned = (float(outputs["merged"][part][0].mean()) for part in ("good", "poisoned"))
        print(f"| {n_way}-way {k_shot}-shot | {separate:.2f} | {merged:.2f} | {separate / merged:.2f}x | {good:.2f} | "
              f"{poisoned:.2f} | {identical} |")


if __name__ == "__main__":
    main()
