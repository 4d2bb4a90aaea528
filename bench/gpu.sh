#!/usr/bin/env bash
# The CUDA rows of bench/pretrain.py and bench/evaluate.py (bf16 and torch.compile on and off),
# as run on a lent GPU machine: `bash bench/gpu.sh [LOG]`. Each run is time-limited so one
# hang cannot eat the others' time.
set -u
log=${1:-/dev/stdout}
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1
run() { echo "\$ $*"; timeout 150 python "$@" 2>&1 | grep -v Warning; echo; }
{
nvidia-smi --query-gpu=name,memory.total,clocks.max.sm --format=csv,noheader
python -c "import torch; print('torch', torch.__version__)"
run bench/device_peak.py --device cuda
run bench/pretrain.py --device cuda --width 1 --batch-size 256 --steps 16
run bench/pretrain.py --device cuda --width 1 --batch-size 256 --steps 16 --no-bf16
run bench/pretrain.py --device cuda --width 1 --batch-size 128 --steps 16 --image-size 84
run bench/pretrain.py --device cuda --width 1 --batch-size 128 --steps 16 --image-size 84 --no-bf16
run bench/evaluate.py --device cuda --measure-episodes 30
run bench/evaluate.py --device cuda --measure-episodes 30 --no-bf16
run bench/evaluate.py --device cuda --measure-episodes 30 --image-size 84 --images-per-class 300
run bench/pretrain.py --device cuda --width 1 --batch-size 256 --steps 16 --compile
run bench/pretrain.py --device cuda --width 1 --batch-size 256 --steps 16 --compile --no-bf16
run bench/evaluate.py --device cuda --measure-episodes 30 --compile
run bench/evaluate.py --device cuda --measure-episodes 30 --compile --no-bf16
} > "$log"
