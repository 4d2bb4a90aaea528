"""Pretraining throughput: the real training step (index uint8 images, augment on the device,
forward, backward, SGD) next to the bare forward+backward+SGD step on a ready float batch.

The ratio says how much the data pipeline costs; it should be >= 0.9 on CPU.

    python bench/pretrain.py                           # width 0.25, batch 64, 32x32
    python bench/pretrain.py --width 0.5 --steps 8     # a slower, wider model
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch

from backbones.augment import augment
from backbones.config import BackboneConfig, PretrainConfig
from backbones.trainer import Trainer
from episodes.base import Split


def glyph_like_split(classes: int, per_class: int, size: int) -> Split:
    """Random uint8 images in the shape of the glyphs base split."""
    generator = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (classes * per_class, 3, size, size), dtype=torch.uint8, generator=generator)
    labels = torch.arange(classes).repeat_interleave(per_class)
    return Split(images, labels, tuple(f"class{i}" for i in range(classes)))


def seconds_per_step(run_step, steps: int) -> float:
    start = time.perf_counter()
    for step in range(steps):
        run_step(step)
    return (time.perf_counter() - start) / steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--width", type=float, default=0.25)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--image-size", type=int, default=32)
    parser.add_argument("--steps", type=int, default=16, help="timed steps of each variant (median kept)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    base = glyph_like_split(64, 60, args.image_size)
    settings = PretrainConfig(epochs=10, batch_size=args.batch_size)
    trainer = Trainer(BackboneConfig(width=args.width), settings, base, device=torch.device("cpu"), seed=0)
    # Distinct ready batches: one batch repeated is memorized, and the vanishing gradients turn
    # into denormal floats that slow the CPU down several times.
    ready = [trainer.batch(1, step) for step in range(args.steps)]

    def pipeline(step: int) -> None:
        trainer.fit_batch(*trainer.batch(0, step))

    def bare(step: int) -> None:
        trainer.fit_batch(*ready[step % len(ready)])

    def data_only(step: int) -> None:
        trainer.batch(0, step)

    uint8_batch = base.images[:args.batch_size]

    def augment_only(step: int) -> None:
        augment(uint8_batch, torch.Generator().manual_seed(step))

    pipeline(0), bare(0)  # warm-up (allocator, oneDNN primitives)
    # Alternate single steps, so that load from other processes hits both variants alike.
    times: dict[str, list[float]] = {"pipeline": [], "bare": []}
    for step in range(args.steps):
        times["pipeline"].append(seconds_per_step(lambda _: pipeline(step + 1), 1))
        times["bare"].append(seconds_per_step(lambda _: bare(step), 1))
    per_step = {name: statistics.median(values) for name, values in times.items()}
    data_step = seconds_per_step(data_only, 32)
    augment_step = seconds_per_step(augment_only, 32)
    rate = {name: args.batch_size / seconds for name, seconds in per_step.items()}
    print(f"ResNet-12 width {args.width} ({trainer.backbone.feature_dim}-d), batch {args.batch_size}, "
          f"{args.image_size}x{args.image_size}, {torch.get_num_threads()} threads, "
          f"median of {args.steps} alternating steps each")
    print(f"  training step with data pipeline + augmentation: {rate['pipeline']:8.1f} img/s "
          f"({1000 * per_step['pipeline']:.0f} ms/step)")
    print(f"  bare forward+backward+SGD on a ready batch:      {rate['bare']:8.1f} img/s "
          f"({1000 * per_step['bare']:.0f} ms/step)")
    print(f"  data pipeline alone (index + augment):           {1000 * data_step:8.2f} ms/batch "
          f"(augment {1000 * augment_step:.2f} ms)")
    print(f"  ratio pipeline / bare: {rate['pipeline'] / rate['bare']:.3f}  (target >= 0.9)")


if __name__ == "__main__":
    main()
