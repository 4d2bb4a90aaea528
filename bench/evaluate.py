"""Evaluation with the feature cache vs the per-episode backbone forward most peers do.

Both paths fit the same head (prototype) on the same 600 episodes of the same images; the
cached path runs the backbone once per image, the per-episode path once per episode image.
Also prints feature-extraction GFLOP/s as a fraction of this machine's fp32 matmul peak.

    python bench/evaluate.py [--width 1.0] [--episodes 600] [--measure-episodes 60]
    python bench/evaluate.py --device cuda [--no-bf16] [--compile]   # on a GPU
"""
from __future__ import annotations

import argparse
import time

import torch
from torch.utils.flop_counter import FlopCounterMode

from device_peak import matmul_peak_gflops, precision_name, synchronize

from backbones import get_backbone
from backbones.features import extract_features
from episodes import EpisodeSampler
from fewshot.heads import get_head


def forward_gflop_per_image(model: torch.nn.Module, image_size: int) -> float:
    from backbones.augment import to_float
    images = torch.zeros(8, 3, image_size, image_size, dtype=torch.uint8)
    with FlopCounterMode(display=False) as counter, torch.inference_mode():
        model(to_float(images))
    return counter.get_total_flops() / 8 / 1e9


def accuracy(head, support, labels, query, query_labels, n_way: int) -> torch.Tensor:
    fit = head.fit(support, labels, n_way, generator=torch.Generator().manual_seed(0))
    return (head.predict(fit, query).argmax(-1) == query_labels).float().mean(-1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--width", type=float, default=1.0)
    parser.add_argument("--classes", type=int, default=20)
    parser.add_argument("--images-per-class", type=int, default=600)
    parser.add_argument("--image-size", type=int, default=32)
    parser.add_argument("--episodes", type=int, default=600)
    parser.add_argument("--measure-episodes", type=int, default=60,
                        help="per-episode path: episodes actually run (the rest is extrapolated per episode)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--no-bf16", dest="bf16", action="store_false", help="CUDA: no bf16 autocast")
    parser.add_argument("--compile", action="store_true", help="torch.compile the backbone (CUDA)")
    args = parser.parse_args()
    device = torch.device(args.device)
    torch.manual_seed(0)
    model = get_backbone("resnet12", width=args.width).eval()
    gflop = forward_gflop_per_image(model, args.image_size)
    model = model.to(device, memory_format=torch.channels_last)
    if args.compile:
        model = torch.compile(model)
    extract = lambda batch, size=0: extract_features(model, batch, batch_size=size, device=device, bf16=args.bf16)
    images = torch.randint(0, 256, (args.classes * args.images_per_class, 3, args.image_size, args.image_size),
                           dtype=torch.uint8)
    labels = torch.arange(args.classes).repeat_interleave(args.images_per_class)
    episodes = EpisodeSampler(labels, 5, 5, 15, seed=0).sample(args.episodes)
    head = get_head("prototype")

    # Warm-up on every batch shape the timed runs use (cuDNN autotuning, compilation).
    extract(images if device.type == "cuda" else images[:256])
    extract(images[:25], 25), extract(images[:75], 75)
    synchronize(device)
    start = time.perf_counter()
    features = extract(images)
    extraction = time.perf_counter() - start
    start = time.perf_counter()
    cached = accuracy(head, features[episodes.support], episodes.support_labels, features[episodes.query],
                      episodes.query_labels, 5)
    cached_total = extraction + time.perf_counter() - start

    measured = min(args.measure_episodes, args.episodes)
    start = time.perf_counter()
    per_episode = []
    for e in range(measured):
        # as peers do: one forward of the support images and one of the queries per episode
        support = extract(images[episodes.support[e]], 25).unsqueeze(0)
        query = extract(images[episodes.query[e]], 75).unsqueeze(0)
        per_episode.append(accuracy(head, support, episodes.support_labels[e:e + 1], query,
                                    episodes.query_labels[e:e + 1], 5))
    per_episode_total = (time.perf_counter() - start) * args.episodes / measured
    same = torch.allclose(torch.cat(per_episode), cached[:measured])

    achieved = gflop * len(images) / extraction
    bf16 = device.type == "cuda" and args.bf16
    peak = matmul_peak_gflops(device, torch.bfloat16 if bf16 else torch.float32)
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    print(f"ResNet-12 width {args.width}, {args.image_size}x{args.image_size}, {len(images)} novel images, "
          f"{args.episodes} 5-way 5-shot 15-query episodes, {where}, bf16 {bf16}, compile {args.compile}")
    print(f"  feature cache: extract once + heads    {cached_total:8.1f} s  ({len(images)} forwards)")
    print(f"  per-episode backbone forward           {per_episode_total:8.1f} s  "
          f"({args.episodes * 100} forwards; {measured} episodes run, time scaled to {args.episodes})")
    print(f"  speed-up                               {per_episode_total / cached_total:8.1f}x  "
          f"(image counts allow {args.episodes * 100 / len(images):.1f}x); same accuracies: {same}")
    print(f"  extraction: {gflop:.3f} GFLOP/img, {len(images) / extraction:.0f} img/s, {achieved:.1f} GFLOP/s; "
          f"{precision_name(device, bf16)} matmul peak {peak:.1f} GFLOP/s; fraction of peak {achieved / peak:.3f}")


if __name__ == "__main__":
    main()
