"""Issue 20's repro: MLP 40-16-16-10 on MNIST-1D, Adam 1e-3, batch 64, a 300-epoch budget, the
best-validation model kept; plain vs gd vs pb, each under trial="rollback" and trial="shadow".

    python benchmarks/issue20/noregret.py --out results/issue20-noregret.jsonl [--seeds 0,1,2]
        [--arms plain,gd-rollback,gd-shadow,pb-rollback,pb-shadow]

One JSON line per run (a restarted script skips finished runs); summarize with
``python benchmarks/issue20/summarize_noregret.py results/issue20-noregret.jsonl``.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

import perforate as pf
from perforate.experiments.data.datasets import load_dataset
from perforate.experiments.harness.train import train_model

ARMS = {
    "plain": None,
    "gd-rollback": dict(mode="gd", trial="rollback"),
    "gd-shadow": dict(mode="gd", trial="shadow"),
    "pb-rollback": dict(mode="pb", trial="rollback"),
    "pb-shadow": dict(mode="pb", trial="shadow"),
    "gd-shadow-lr1": dict(mode="gd", trial="shadow", growth_lr_scale=1.0),
    "pb-shadow-lr1": dict(mode="pb", trial="shadow", growth_lr_scale=1.0),
}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--arms", default="plain,gd-rollback,gd-shadow,pb-rollback,pb-shadow")
    ap.add_argument("--epochs", type=int, default=300)
    ap.add_argument("--width", type=int, default=16)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--batch-size", type=int, default=64)
    args = ap.parse_args()
    torch.set_num_threads(1)
    done = set()
    if args.out.exists():
        for line in args.out.read_text().splitlines():
            r = json.loads(line)
            done.add((r["arm"], r["seed"]))
    for seed in map(int, args.seeds.split(",")):
        data = load_dataset("mnist1d", seed=seed)
        for arm in args.arms.split(","):
            if (arm, seed) in done:
                continue
            spec = ARMS[arm]
            start = time.time()
            kw = dict(lr=args.lr, batch_size=args.batch_size, max_epochs=args.epochs, seed=seed)
            if spec is None:
                r = train_model(data, "mlp", args.width, early_stopping=False, **kw)
            else:
                cfg = pf.Config(max_epochs=args.epochs, checkpoint_every=0, plots=False,
                                **{k: v for k, v in spec.items() if k != "mode"})
                r = train_model(data, "mlp", args.width, mode=spec["mode"], config=cfg, **kw)
            events = [(h["epoch"], h["event"]) for h in r.history if h["event"]]
            row = dict(arm=arm, seed=seed, width=args.width, lr=args.lr, batch_size=args.batch_size,
                       epochs=r.epochs, val=r.val_score, test=r.test_score, params=r.params,
                       dendrites=r.dendrites, best_epoch=r.best_epoch, events=events,
                       seconds=round(time.time() - start, 1))
            with open(args.out, "a") as f:
                f.write(json.dumps(row) + "\n")
            print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
