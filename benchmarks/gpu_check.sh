#!/usr/bin/env bash
# The GPU check of issue 16, as one script for a lent GPU machine (it has no network): the default
# diagnosis on a fresh machine, timed from the shell (the 60 s target includes a fresh machine's first
# import and matplotlib's font cache), then steady-state training against transformers.Trainer on a
# bert-base-sized model in bf16 (several hundred steps; pretraining's MFU target is 35 %), then
# attribution's internal batch size on the GPU and whether torch.compile pays there. With the device tool, from the repository root, after
# `bash ../shared/gpu/bundle.sh` here (see ../shared/gpu/README.md):
#   run  carry: [".gpu"]  command: . .gpu/setup.sh && bash benchmarks/gpu_check.sh
# Record what it prints in benchmarks/RESULTS.md with the date and the machine.
set -euo pipefail
export HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
date -u; nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
python3 -c "import torch; print('torch', torch.__version__, 'cuda', torch.cuda.is_available())"
start=$(date +%s.%N)
python3 -m probe run --quiet --set device=cuda --set output_dir=/tmp/gpu-reports
echo "default, wall clock from the shell: $(python3 -c "print(round($(date +%s.%N) - $start, 1))") s"
python3 - <<'PY'
import json
s = json.load(open("/tmp/gpu-reports/default/summary.json"))
print("verdict:", s["verdict"])
print("timings:", s["timings"])
print("throughput:", s["throughput"])
PY
python3 benchmarks/bench_pretrain.py --model-size base --steps 300 --batch-size 64 --max-length 128 --device cuda
python3 benchmarks/bench_attribution.py --n 16 --budgets 4096 16384
python3 benchmarks/bench_compile.py --device cuda --batches 200 --steps 100
