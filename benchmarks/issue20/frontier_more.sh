#!/bin/sh
# Issue 20 item 4 on the tasks not tuned on: rollback vs shadow trials, reduced widths, under each
# task's harness protocol (results/frontier.md) and the untuned one (Adam 1e-3, batch 64, 300 epochs).
# usage: SEEDS=5 sh benchmarks/issue20/frontier_more.sh TASK PROTOCOL   (TASK: bc, digits, gru; PROTOCOL: harness, lr1e-3)
set -e
ARMS="--arms gd,pb,gd-shadow,pb-shadow --variant gd-shadow=gd,trial=shadow --variant pb-shadow=pb,trial=shadow \
 --seeds ${SEEDS:-5} --patience 20 --stopping budget --threads 1"
case "$1" in
  bc) TASK="--dataset breast_cancer --model mlp --widths 1,2,4,8 --grow-widths 2,4"; NAME=breast_cancer-mlp; HARNESS="--epochs 150 --lr 0.01 --batch-size 32";;
  digits) TASK="--dataset digits --model cnn2d --widths 2,4,8,16 --grow-widths 4,8"; NAME=digits-cnn2d; HARNESS="--epochs 150 --lr 0.01 --batch-size 32";;
  gru) TASK="--dataset mnist1d --model gru --widths 4,6,8,12 --grow-widths 4,8"; NAME=mnist1d-gru; HARNESS="--epochs 120 --lr 0.01 --batch-size 100";;
  *) echo "task: bc, digits or gru" >&2; exit 2;;
esac
case "$2" in
  harness) PROTO="$HARNESS";;
  lr1e-3) PROTO="--epochs 300 --lr 0.001 --batch-size 64";;
  *) echo "protocol: harness or lr1e-3" >&2; exit 2;;
esac
perforate bench frontier $TASK $ARMS $PROTO --out results/issue20-frontier-$NAME-$2
