#!/usr/bin/env bash
# The whole demo (`fewshot benchmark`, built-in data, empty data root) on a lent GPU machine,
# twice: the first run renders the data and pretrains, the second reuses the checkpoint and the
# cached features. `bash bench/gpu_demo.sh OUTDIR` writes the log, leaderboard.md and results.csv.
set -u
device=${DEVICE:-cuda}
out=${1:-/tmp/gpu_demo}
mkdir -p "$out"
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1 FEWSHOT_DATA=/tmp/gpu_demo_data
rm -rf "$FEWSHOT_DATA" /tmp/gpu_demo_run1 /tmp/gpu_demo_run2
{
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
python -c "import torch, os; print('torch', torch.__version__, 'cuda', torch.cuda.is_available(), 'cpus', os.cpu_count())"
for run in 1 2; do
  echo "\$ fewshot benchmark --device $device --output-dir /tmp/gpu_demo_run$run"
  start=$SECONDS
  timeout $((run == 1 ? 300 : 120)) python -m fewshot benchmark --device "$device" --quiet \
      --output-dir /tmp/gpu_demo_run$run 2>&1 | grep -v Warning
  echo "exit ${PIPESTATUS[0]}  wall $((SECONDS - start)) s"
done
} > "$out/log.txt" 2>&1
cp /tmp/gpu_demo_run1/leaderboard.md "$out/leaderboard1.md" 2>/dev/null
cp /tmp/gpu_demo_run2/leaderboard.md "$out/leaderboard2.md" 2>/dev/null
cp /tmp/gpu_demo_run1/results.csv "$out/results1.csv" 2>/dev/null
cat "$out/log.txt"
