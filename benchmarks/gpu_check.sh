#!/usr/bin/env bash
# One short script for a lent GPU machine: environment, the default diagnosis and the pretraining
# example (artifact vs twin, GPU size) on the GPU with stage times and throughput (tokens/s, MFU),
# and the pretraining / probe / attribution benchmarks. Run from the repository root:
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
probe run --quiet examples/pretrain-artifact-gpu.yaml --set output_dir=/tmp/gpu-reports
python3 - <<'PY'
import json
for v in ("artifact", "twin"):
    s = json.load(open(f"/tmp/gpu-reports/pretrain-artifact-gpu/{v}/summary.json"))
    p = s["pretraining"]
    print(v, "pretrain tokens/s", round(p["tokens_per_second"]), "MFU", p.get("mfu"), "loss",
          round(p["initial_loss"], 3), "->", round(p["final_loss"], 3), "timings", s["timings"])
print(open("/tmp/gpu-reports/pretrain-artifact-gpu/comparison_differences.csv").read())
PY
python3 benchmarks/bench_pretrain.py --model-size small --steps 200 --batch-size 64 --device cuda --repeats 2
python3 benchmarks/bench_probes.py --repeats 3 --cv
python3 benchmarks/bench_attribution.py --n 16 --budgets 4096 16384
