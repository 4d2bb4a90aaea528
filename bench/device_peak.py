"""Measured peaks of the device a bench runs on, so throughput can be read as a fraction of it.

    python bench/device_peak.py [--device cuda]
"""
from __future__ import annotations

import argparse
import time

import torch


def synchronize(device: torch.device) -> None:
    """Wait for queued kernels, so that wall-clock timers measure finished work."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def matmul_peak_gflops(device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32,
                       size: int = 0, repeats: int = 10) -> float:
    """Dense matmul throughput on `device` in `dtype`: the practical peak to compare with.

    On CUDA, float32 is measured with TF32 as cuDNN's convolutions use it by default
    (`torch.backends.cudnn.allow_tf32`): ResNet "fp32" training runs on the TF32 tensor cores.

    Args:
        device: where to measure.
        dtype: float32 or bfloat16.
        size: square matrix size (0: 2048 on the CPU, 8192 on CUDA).
        repeats: timed products after one warm-up.
    """
    device = torch.device(device)
    size = size or (8192 if device.type == "cuda" else 2048)
    a = torch.randn(size, size, device=device, dtype=dtype)
    b = torch.randn(size, size, device=device, dtype=dtype)
    tf32 = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32
    try:
        torch.mm(a, b)
        synchronize(device)
        start = time.perf_counter()
        for _ in range(repeats):
            torch.mm(a, b)
        synchronize(device)
    finally:
        torch.backends.cuda.matmul.allow_tf32 = tf32
    return 2 * size ** 3 * repeats / (time.perf_counter() - start) / 1e9


def precision_name(device: torch.device, bf16: bool) -> str:
    """What the matmul peak of a run was measured in: bf16, tf32 (CUDA fp32 convs) or fp32."""
    if bf16:
        return "bf16"
    return "tf32" if device.type == "cuda" and torch.backends.cudnn.allow_tf32 else "fp32"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    device = torch.device(args.device)
    print(f"{precision_name(device, False)} matmul: {matmul_peak_gflops(device):.1f} GFLOP/s")
    if device.type == "cuda":
        print(f"bf16 matmul: {matmul_peak_gflops(device, torch.bfloat16):.1f} GFLOP/s")


if __name__ == "__main__":
    main()
