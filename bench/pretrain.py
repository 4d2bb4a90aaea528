"""Pretraining throughput: the real training step (index uint8 images, augment on the device,
forward, backward, SGD) next to the bare forward+backward+SGD step on a ready float batch.

The ratio says how much the data pipeline costs; it should be >= 0.9 on CPU.

    python bench/pretrain.py                           # width 0.25, batch 64, 32x32
    python bench/pretrain.py --width 0.5 --steps 8     # a slower, wider model
    python bench/pretrain.py --device cuda --width 1 --batch-size 256 [--no-bf16] [--compile]

Also prints the training step's GFLOP/s (forward + backward, counted by torch's FlopCounterMode)
as a fraction of the device's measured dense matmul peak in the step's precision.
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

from device_peak import matmul_peak_gflops, precision_name, synchronize

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


def seconds_per_step(run_step, steps: int, device: torch.device) -> float:
    synchronize(device)
    start = time.perf_counter()
    for step in range(steps):
        run_step(step)
    synchronize(device)
    return (time.perf_counter() - start) / steps


def training_gflop_per_image(trainer: Trainer, images: torch.Tensor, labels: torch.Tensor) -> float:
    """Forward + backward GFLOP per image of the (uncompiled) network, in train mode."""
    with FlopCounterMode(display=False) as counter:
        F.cross_entropy(trainer.network(images), labels).backward()
    trainer.optimizer.zero_grad(set_to_none=True)
    return counter.get_total_flops() / len(labels) / 1e9


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--width", type=float, default=0.25)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--image-size", type=int, default=32)
    parser.add_argument("--steps", type=int, default=16, help="timed steps of each variant (median kept)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--no-bf16", dest="bf16", action="store_false", help="CUDA: no bf16 autocast")
    parser.add_argument("--compile", action="store_true", help="torch.compile the network (CUDA)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    base = glyph_like_split(64, max(60, 2 * args.batch_size * args.steps // 64 + 1), args.image_size)
    settings = PretrainConfig(epochs=10, batch_size=args.batch_size, bf16=args.bf16, compile=args.compile)
    trainer = Trainer(BackboneConfig(width=args.width), settings, base, device=device, seed=0)
    gflop = training_gflop_per_image(trainer, *trainer.batch(1, 0))
    # Distinct ready batches: one batch repeated is memorized, and the vanishing gradients turn
    # into denormal floats that slow the CPU down several times.
    ready = [trainer.batch(1, step) for step in range(args.steps)]

    def pipeline(step: int) -> None:
        trainer.fit_batch(*trainer.batch(0, step))

    def bare(step: int) -> None:
        trainer.fit_batch(*ready[step % len(ready)])

    def data_only(step: int) -> None:
        trainer.batch(0, step)

    uint8_batch = trainer.images[:args.batch_size]

    def augment_only(step: int) -> None:
        augment(uint8_batch, torch.Generator().manual_seed(step))

    for step in range(3 if device.type == "cuda" else 1):  # warm-up (allocator, oneDNN/cuDNN, compile)
        pipeline(step), bare(step)
    # Alternate single steps, so that load from other processes hits both variants alike.
    times: dict[str, list[float]] = {"pipeline": [], "bare": []}
    for step in range(args.steps):
        times["pipeline"].append(seconds_per_step(lambda _: pipeline(step + 1), 1, device))
        times["bare"].append(seconds_per_step(lambda _: bare(step), 1, device))
    per_step = {name: statistics.median(values) for name, values in times.items()}
    data_step = seconds_per_step(data_only, 32, device)
    augment_step = seconds_per_step(augment_only, 32, device)
    rate = {name: args.batch_size / seconds for name, seconds in per_step.items()}
    bf16 = device.type == "cuda" and args.bf16
    compiled = device.type == "cuda" and args.compile
    peak = matmul_peak_gflops(device, torch.bfloat16 if bf16 else torch.float32)
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    print(f"ResNet-12 width {args.width} ({trainer.backbone.feature_dim}-d), batch {args.batch_size}, "
          f"{args.image_size}x{args.image_size}, {where}, bf16 {bf16}, compile {compiled}, "
          f"median of {args.steps} alternating steps each")
    print(f"  training step with data pipeline + augmentation: {rate['pipeline']:8.1f} img/s "
          f"({1000 * per_step['pipeline']:.0f} ms/step)")
    print(f"  bare forward+backward+SGD on a ready batch:      {rate['bare']:8.1f} img/s "
          f"({1000 * per_step['bare']:.0f} ms/step)")
    print(f"  data pipeline alone (index + augment):           {1000 * data_step:8.2f} ms/batch "
          f"(augment {1000 * augment_step:.2f} ms)")
    print(f"  ratio pipeline / bare: {rate['pipeline'] / rate['bare']:.3f}  (target >= 0.9)")
    achieved = gflop * rate["pipeline"]
    print(f"  training: {gflop:.3f} GFLOP/img (forward + backward), {achieved:.1f} GFLOP/s; "
          f"{precision_name(device, bf16)} matmul peak {peak:.1f} GFLOP/s; fraction of peak {achieved / peak:.3f}")


if __name__ == "__main__":
    main()
