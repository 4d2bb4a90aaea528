"""Every head (the demo's, then the other registered ones) on the CPU and a GPU, side by side.

A device check for a lent GPU machine: on the same synthetic episodes, each head runs through
`fewshot.run.evaluate.evaluate_chunk` (fit, predict, diagnostics) on both devices, so a tensor left
on the wrong device shows up as that head's error instead of ending a whole benchmark run.
Prints, per head and setting, the mean query accuracy on each device (heads with random streams
draw different numbers there, so their accuracies agree only statistically), and the fit time
on each.

    python bench/cuda_heads.py                  # 30 episodes per setting, 640-d
"""
from __future__ import annotations

import argparse
import traceback

import torch

from heads import synthetic_episodes

from fewshot.config import DEFAULT_HEADS, head_spec
from fewshot.run.evaluate import evaluate_chunk
from fewshot.heads import get_head
from fewshot.heads.base import available_heads


def run(label: str, entry: dict, tensors: tuple[torch.Tensor, ...], n_way: int, device: str) -> tuple[str, str]:
    """(mean accuracy, fit seconds) of one head on one device, or the error's last line."""
    name, overrides = head_spec(label, entry)
    moved = tuple(t.to(device) for t in tensors)
    try:
        result = evaluate_chunk(label, get_head(name, **overrides), moved, n_way, 0, seed=0, device=device)
    except Exception as error:  # a device check: report every head, do not stop at the first
        traceback.print_exc()
        return f"error: {type(error).__name__}: {str(error).splitlines()[0][:80]}", ""
    return f"{100 * result['accuracy'].mean().item():.2f}", f"{result['seconds']:.2f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--episodes", type=int, default=30)
    parser.add_argument("--dim", type=int, default=640)
    parser.add_argument("--device", default="cuda")
    args = parser.parse_args()
    print(f"torch {torch.__version__}; {args.device}: "
          f"{torch.cuda.get_device_name() if args.device.startswith('cuda') else 'cpu'}")
    print("| setting | head | cpu acc (%) | gpu acc (%) | cpu fit (s) | gpu fit (s) |")
    print("|---|---|---:|---:|---:|---:|")
    # The demo's heads, then every other registered head with its defaults.
    heads = {**DEFAULT_HEADS, **{name: {} for name in available_heads() if name not in DEFAULT_HEADS}}
    for k_shot in (1, 5):
        data = synthetic_episodes(args.episodes, k_shot=k_shot, dim=args.dim)
        tensors = (data.support, data.support_labels, data.query, data.query_labels)
        for label, entry in heads.items():
            cpu_acc, cpu_s = run(label, entry, tensors, data.n_way, "cpu")
            gpu_acc, gpu_s = run(label, entry, tensors, data.n_way, args.device)
            print(f"| 5-way {k_shot}-shot | {label} | {cpu_acc} | {gpu_acc} | {cpu_s} | {gpu_s} |", flush=True)


if __name__ == "__main__":
    main()
