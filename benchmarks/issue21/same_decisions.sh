#!/bin/bash
# Issue 21 (the grower split) promised no behaviour change. This runs two small frontier tasks
# with every dendritic run's history.csv kept, for diffing two versions of the code:
#   benchmarks/issue21/same_decisions.sh OLD_SRC /tmp/old; benchmarks/issue21/same_decisions.sh src /tmp/new
#   python benchmarks/issue21/diff_histories.py /tmp/old /tmp/new
# (OLD_SRC: the src/ folder of another checkout, e.g. `git worktree add /tmp/base 8a9a917`.)
# Covered: gd, pb, gd with trial="shadow" and pb online under a budget; gd, pb and pb shadow
# with retries under early stopping (grow, retry, dendrite_start, join, continue, hold, done).
set -euo pipefail
SRC=$1; OUT=$2
export PYTHONPATH=$SRC WANDB_MODE=offline WANDB_SILENT=true MPLBACKEND=Agg OMP_NUM_THREADS=1
python -m perforate.cli bench frontier --dataset breast_cancer --model mlp --widths 2,4 --grow-widths 2 \
  --arms gd,pb,gd-shadow,pb-online --variant gd-shadow=gd,trial=shadow --variant pb-online=pb,candidate_training=online \
  --seeds 2 --epochs 120 --patience 10 --lr 0.01 --batch-size 32 --run-outputs --out "$OUT"
python -m perforate.cli bench frontier --dataset mnist1d --model mlp --widths 4 --grow-widths 4 \
  --arms gd,pb,pb-shadow --variant pb-shadow=pb,trial=shadow,max_growth_retries=2 \
  --seeds 2 --epochs 100 --patience 4 --stopping patience --lr 0.003 --batch-size 64 --run-outputs --out "$OUT/patience"
