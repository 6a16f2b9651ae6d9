#!/usr/bin/env bash
# One short script for a lent GPU machine: environment, the default diagnosis on the GPU with its
# stage times and throughput, and the probe / attribution benchmarks. Run from the repository root:
#   bash benchmarks/gpu_check.sh
# Not yet run on a GPU (none has been lent so far); record what it prints in benchmarks/RESULTS.md.
# The lent machine has no network: it needs torch and probe's dependencies already installed there
# (or carried as wheels, see the device tool's notes); this script installs nothing.
set -euo pipefail
export HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
probe() { python3 -m probe "$@"; }
date -u; nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
python3 -c "import torch; print('torch', torch.__version__, 'cuda', torch.cuda.is_available())"
probe run --quiet --set device=cuda --set output_dir=/tmp/gpu-reports
python3 - <<'PY'
import json
s = json.load(open("/tmp/gpu-reports/default/summary.json"))
print("verdict:", s["verdict"])
print("timings:", s["timings"])
print("throughput:", s["throughput"])
PY
python3 benchmarks/bench_probes.py --repeats 3 --cv
python3 benchmarks/bench_attribution.py --n 16 --budgets 4096 16384
