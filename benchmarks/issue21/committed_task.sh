#!/bin/bash
# The committed task results/frontier-breast_cancer-mlp without its (slow) perforatedai arm, run
# outputs kept. Compare with the committed file:
#   benchmarks/issue21/committed_task.sh src /tmp/now
#   python benchmarks/issue21/compare_runs.py results/frontier-breast_cancer-mlp/results.json /tmp/now/results.json
set -euo pipefail
SRC=$1; OUT=$2
export PYTHONPATH=$SRC WANDB_MODE=offline WANDB_SILENT=true MPLBACKEND=Agg OMP_NUM_THREADS=1
python -m perforate.cli bench frontier --dataset breast_cancer --model mlp --widths 1,2,4,8,16,32 --grow-widths 1,2,4 \
  --arms gd,pb --seeds 5 --epochs 150 --patience 20 --stopping budget --lr 0.01 --batch-size 32 --run-outputs --out "$OUT"
