"""Sensitivity of the volume analysis to the prior's bias scale and to feature centring (issue 17, item 6).

The fitting cone and the normalized losses are invariant under scaling the logits, so of the
Gaussian prior W ~ N(0, s^2), b ~ N(0, s_b^2) only s_b / s matters (the test in
`tests/fewshot/heads/test_guess_check_exact.py`). This script tables s_b / s in {0, 0.5, 1, 2}
(s = 1) x feature centring off / on (`features.center`: subtract each episode's support mean
before the L2 normalization) on the demo's features, for each shot setting, over the first
`--episodes` episodes: log10 P(fit), guess & check's expected query accuracy (the volume-weighted
accuracy of all fitting heads) and SGD's percentile in that distribution, each as mean ± CI95
over episodes (MC error of the mean); with `--matched`, also guess & check at SGD's own
span-normalized loss on the first `--matched-episodes` (one splitting run per episode: costly,
hundreds of levels at 5 shots).

The features are the demo's, read from the feature cache of its data root (the same pipeline as
`fewshot benchmark`: `fewshot.run.pipeline.split_features`, computed and cached if absent). The
splitting settings are the demo's volume settings; SGD is the demo's `sgd` head (defaults).

    FEWSHOT_DATA=DATA python bench/sensitivity.py --checkpoint RUN/checkpoint-best.pt
    FEWSHOT_DATA=DATA python bench/sensitivity.py --checkpoint RUN/checkpoint-best.pt --matched --shots 1
"""
from __future__ import annotations

import argparse
import dataclasses
import math
import time
from pathlib import Path

import torch
from rich.console import Console

from backbones.checkpoint import checkpoint_sha256, load_checkpoint
from backbones.distributed import Ranks
from episodes import Episodes, load_dataset
from fewshot.config import FeaturesConfig, load_config
from fewshot.heads import get_head
from fewshot.heads.losses import decision_loss
from fewshot.results.stats import summarize
from fewshot.run.evaluate import CHUNK_SIZE, episode_tensors
from fewshot.run.pipeline import RunContext, episode_samplers, split_features
from fewshot.run.volume_analysis import head_percentile, analyze_in_batches
from fewshot.run.volume_matched import analyze_matched, matched_key


def estimate(values: torch.Tensor, errors: torch.Tensor | None, scale: float = 1.0) -> str:
    """`mean ± ci95 (MC ± mc)` over the finite episodes (no MC part without per-episode errors)."""
    keep = torch.isfinite(values)
    if not bool(keep.any()):
        return "n/a"
    summary = summarize(values[keep] * scale)
    ci = summary["ci95"] if summary["ci95"] is not None else math.nan
    text = f"{summary['mean']:.2f} ± {ci:.2f}"
    if errors is None:
        return text
    return text + f" (MC ± {float((errors[keep] * scale).pow(2).sum().sqrt() / int(keep.sum())):.2f})"


def first_episodes(features: torch.Tensor, episodes: Episodes, count: int,
                   settings: FeaturesConfig) -> tuple[torch.Tensor, ...]:
    """Preprocessed (support, labels, query, query labels) of the first `count` episodes, as the heads see them."""
    chunks = [episode_tensors(features, episodes, chunk, settings, "cpu") for chunk in range(-(-count // CHUNK_SIZE))]
    return tuple(torch.cat([chunk[i] for chunk in chunks])[:count] for i in range(4))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", type=Path, required=True, help="the demo run's checkpoint-best.pt")
    parser.add_argument("--data-root", type=Path, default=None, help="else FEWSHOT_DATA, else ~/.cache/fewshot")
    parser.add_argument("--episodes", type=int, default=50)
    parser.add_argument("--ratios", type=float, nargs="+", default=[0.0, 0.5, 1.0, 2.0])
    parser.add_argument("--shots", type=int, nargs="+", default=None, help="default: the demo's")
    parser.add_argument("--matched", action="store_true", help="also G&C at SGD's span-normalized loss")
    parser.add_argument("--matched-episodes", type=int, default=10)
    parser.add_argument("--threads", type=int, default=0)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    config = load_config(None)
    if args.shots:
        config.episodes.k_shot = args.shots
    dataset = load_dataset(config.dataset.name, args.data_root, config.dataset.path, config.dataset.image_size)
    console = Console(stderr=True)
    run = RunContext(output_dir=Path("."), device="cpu", data_root=args.data_root, console=console, ranks=Ranks())
    model, _ = load_checkpoint(args.checkpoint, device="cpu")
    features = split_features(config, dataset, model, checkpoint_sha256(args.checkpoint), run)
    del model
    base = dataclasses.replace(config.volume, poisoned=False, episodes=args.episodes,
                               matched_loss="span_norm" if args.matched else "none",
                               matched_episodes=args.matched_episodes)
    print(f"torch threads {torch.get_num_threads()}; demo features {tuple(features.shape)}; first {args.episodes} "
          f"episodes per setting; chains {base.chains} x {base.repeats} repeats, level_fraction "
          f"{base.level_fraction}, sweeps {base.sweeps}; s = 1")
    columns = ["setting", "s_b/s", "centring", "log10 P(fit)", "G&C accuracy (%)", "SGD (%)", "SGD percentile"]
    if args.matched:
        columns += ["SGD's loss", "log10 P(fit, loss <= SGD's)", "G&C at SGD's loss (%)"]
    print("| " + " | ".join(columns) + " | time (s) |")
    print("|---|---:|---|" + "---:|" * (len(columns) - 2))
    n_way = config.episodes.n_way
    for k_shot, sampler in episode_samplers(config, dataset).items():
        episodes = sampler.sample(config.episodes.count)
        ids = list(range(args.episodes))
        for center in (False, True):
            support, labels, query, query_labels = first_episodes(features, episodes, args.episodes,
                                                                  FeaturesConfig(normalize="l2", center=center))
            sgd = get_head("sgd")
            fit = sgd.fit(support, labels, n_way, generator=torch.Generator().manual_seed(config.episodes.seed))
            accuracy = (sgd.predict(fit, query).argmax(-1) == query_labels).double().mean(1)
            loss = decision_loss("span_norm", support, labels, fit.weight, fit.bias).double()
            for ratio in args.ratios:
                volume = dataclasses.replace(base, bias_scale=ratio)
                start = time.perf_counter()
                values = analyze_in_batches(support, labels, query, query_labels, n_way, ids, volume,
                                            seed=config.episodes.seed, setting=f"{n_way}way-{k_shot}shot")
                percentile = head_percentile(values["chain_accuracy"], accuracy)
                cells = [f"{n_way}-way {k_shot}-shot", f"{ratio:g}", "on" if center else "off",
                         estimate(values["log10_volume"], values["log10_volume_se"]),
                         estimate(values["expected_accuracy"], values["expected_accuracy_se"], 100),
                         f"{100 * float(accuracy.mean()):.2f}", estimate(percentile, None)]
                if args.matched:
                    part = analyze_matched(support, labels, query, query_labels, n_way, ids, volume, {"sgd": loss},
                                           seed=config.episodes.seed, setting=f"{n_way}way-{k_shot}shot")
                    get = lambda key: part[matched_key("sgd", key)]  # noqa: E731
                    cells += [estimate(get("loss"), None),
                              estimate(get("log10_volume"), get("log10_volume_se")),
                              estimate(get("expected_accuracy"), get("expected_accuracy_se"), 100)]
                print("| " + " | ".join(cells) + f" | {time.perf_counter() - start:.1f} |", flush=True)


if __name__ == "__main__":
    main()
