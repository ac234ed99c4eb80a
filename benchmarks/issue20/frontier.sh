#!/bin/sh
# Issue 20's reduced frontier (mnist1d / mlp): rollback vs shadow trials, under the harness
# protocol (Adam 1e-2, batch 100, 150 epochs) and the untuned one (Adam 1e-3, batch 64, 300 epochs).
set -e
COMMON="--dataset mnist1d --model mlp --widths 8,16,32 --grow-widths 8,16 --arms gd,pb,gd-shadow,pb-shadow \
 --variant gd-shadow=gd,trial=shadow --variant pb-shadow=pb,trial=shadow --seeds ${SEEDS:-2} --patience 20 --stopping budget --threads 1"
perforate bench frontier $COMMON --epochs 150 --lr 0.01 --batch-size 100 --out results/issue20-frontier-mnist1d-mlp-harness
perforate bench frontier $COMMON --epochs 300 --lr 0.001 --batch-size 64 --out results/issue20-frontier-mnist1d-mlp-lr1e-3
