"""Does the CPU kernel family change pretraining? Twenty SGD steps of the demo's ResNet-12 (width 0.5,
32 px, batch 64) from one seed, under each pinning of the kernels, in processes of their own: the
weights' hash and the time, side by side (the ratio is to the default in this same run).

    python bench/isa_pin.py [--steps 20]

Equal hashes under two settings mean the same float paths; the environment variables must be set
before torch starts, hence one process per setting.
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys

SETTINGS = {"default": {}, "ONEDNN_MAX_CPU_ISA=AVX2": {"ONEDNN_MAX_CPU_ISA": "AVX2"},
            "ATEN_CPU_CAPABILITY=avx2": {"ATEN_CPU_CAPABILITY": "avx2"},
            "both pinned to AVX2": {"ONEDNN_MAX_CPU_ISA": "AVX2", "ATEN_CPU_CAPABILITY": "avx2"}}

STEPS = """
import hashlib, sys, time, torch
from backbones.resnet12 import ResNet12
torch.manual_seed(0)
model = ResNet12(width=0.5)
head = torch.nn.Linear(model.feature_dim, 64)
opt = torch.optim.SGD(list(model.parameters()) + list(head.parameters()), lr=0.05, momentum=0.9)
x = torch.randn(64, 3, 32, 32, generator=torch.Generator().manual_seed(1))
y = torch.randint(0, 64, (64,), generator=torch.Generator().manual_seed(2))
start = time.perf_counter()
for _ in range(int(sys.argv[1])):
    opt.zero_grad()
    torch.nn.functional.cross_entropy(head(model(x)), y).backward()
    opt.step()
took = time.perf_counter() - start
digest = hashlib.sha256(b"".join(p.detach().numpy().tobytes() for p in model.parameters())).hexdigest()[:12]
print(torch.backends.cpu.get_cpu_capability(), digest, took)
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--steps", type=int, default=20)
    args = parser.parse_args()
    rows = []
    for name, extra in SETTINGS.items():
        env = {key: value for key, value in os.environ.items() if key not in ("ONEDNN_MAX_CPU_ISA", "ATEN_CPU_CAPABILITY")}
        out = subprocess.run([sys.executable, "-c", STEPS, str(args.steps)], env={**env, **extra},
                             capture_output=True, text=True, check=True).stdout.split()
        rows.append((name, out[0], out[1], float(out[2])))
    base = rows[0][3]
    print(f"{args.steps} SGD steps, ResNet-12 width 0.5, batch 64 of 32x32 images")
    for name, capability, digest, took in rows:
        print(f"  {name:28s} torch {capability:8s} weights {digest}  {took:7.2f} s  {took / base:5.2f}x")


if __name__ == "__main__":
    main()
