#!/usr/bin/env bash
# The GPU check of issues 16 and 27, as one script for a lent GPU machine (it has no network): the default
# diagnosis (precision budgets on, analyses.precision: budget) on a fresh machine, timed from the shell
# (the 60 s target includes a fresh machine's first import and matplotlib's font cache), with its budgets
# table (examples and steps each budgeted analysis used, and why it stopped); then steady-state training
# against transformers.Trainer on a bert-base-sized model in bf16 (several hundred steps; pretraining's MFU
# target is 35 %), then attribution's internal batch size on the GPU and whether torch.compile pays there.
# Set GPU_CHECK_PRECISION=1 to add the budgeted-vs-precise comparison (benchmarks/compare_precision.py:
# two more default runs, about 5 minutes on an H100). With the device tool, from the repository root, after
# `bash ../shared/gpu/bundle.sh` here (see ../shared/gpu/README.md):
#   run  carry: [".gpu"]  command: . .gpu/setup.sh && bash benchmarks/gpu_check.sh
# Record what it prints in benchmarks/RESULTS.md with the date and the machine.
#
#   bash benchmarks/gpu_check.sh --dry-run    # every step on the CPU at tiny sizes (tiny-bert, a few steps):
#                                             # checks the script end to end without a GPU (a few minutes)
set -euo pipefail
export HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
DRY=0
if [[ "${1:-}" == "--dry-run" ]]; then DRY=1; fi
if (( DRY )); then
  DEVICE=cpu
  OUT=$(mktemp -d /tmp/gpu-check-dry.XXXXXX)
  RUN_SETS=(--set model.backbone=tiny-bert --set task.train_size=150 --set task.validation_size=50
            --set task.test_size=120 --set task.max_length=32 --set finetune.epochs=1
            --set analyses.bootstrap_samples=200 --set "causal.layers=[0,2]")
  PRETRAIN=(--model-size tiny --steps 3 --batch-size 4 --max-length 32 --device cpu)
  ATTRIBUTION=(--n 4 --n-steps 8 --budgets 4096 --short-words 0)
  COMPILE=(--device cpu --batches 2 --steps 2 --shapes 1)
  PRECISION=(--quick)
  echo "dry run on the CPU, tiny sizes; runs under $OUT"
else
  DEVICE=cuda
  OUT=/tmp/gpu-reports
  RUN_SETS=()
  PRETRAIN=(--model-size base --steps 300 --batch-size 64 --max-length 128 --device cuda)
  ATTRIBUTION=(--n 16 --budgets 4096 16384)
  COMPILE=(--device cuda --batches 200 --steps 100)
  PRECISION=()
  nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
fi
date -u
python3 -c "import torch; print('torch', torch.__version__, 'cuda', torch.cuda.is_available())"
start=$(date +%s.%N)
python3 -m probe run --quiet --set device=$DEVICE --set output_dir=$OUT "${RUN_SETS[@]}"
echo "default, wall clock from the shell: $(python3 -c "print(round($(date +%s.%N) - $start, 1))") s"
OUT=$OUT python3 - <<'PY'
import json, os
import pandas as pd
run = os.path.join(os.environ["OUT"], "default")
s = json.load(open(os.path.join(run, "summary.json")))
print("verdict:", s["verdict"])
print("timings:", s["timings"])
print("throughput:", s["throughput"])
budgets = os.path.join(run, "tables", "budgets.csv")
if os.path.exists(budgets):
    print(pd.read_csv(budgets).drop(columns=["seed"], errors="ignore").to_string(index=False))
PY
if [[ "${GPU_CHECK_PRECISION:-0}" == "1" || $DRY == 1 ]]; then
  python3 benchmarks/compare_precision.py "${PRECISION[@]}" --out "$OUT/precision" | head -40
fi
python3 benchmarks/bench_pretrain.py "${PRETRAIN[@]}"
python3 benchmarks/bench_attribution.py "${ATTRIBUTION[@]}"
python3 benchmarks/bench_compile.py "${COMPILE[@]}"
