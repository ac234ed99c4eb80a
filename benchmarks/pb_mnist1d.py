"""MNIST-1D, MLP of width 100: baseline versus gradient dendrites (gd) versus Perforated
Backpropagation (pb), mean ± std of test accuracy over seeds, written as markdown.

Every arm starts from the same initial weights, data order and optimizer (Adam) and has the
same cap on epochs; test accuracy is read once, at the kept (best-validation) weights:

- ``baseline``: the plain MLP with early stopping under the patience gd/pb use to decide growth;
- ``budget``: the plain MLP trained for the whole epoch cap (at least as many epochs as any
  grown run used);
- ``gd`` / ``pb``: grown by ``pf.Grower`` until done or out of budget.

Run::

    python benchmarks/pb_mnist1d.py --out results/pb-mnist1d.md
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

import perforate as pf
from perforate.experiments.data.datasets import load_dataset
from perforate.experiments.harness.train import train_model

ARMS = ("baseline", "budget", "gd", "pb")


def _pm(values, digits=2):
    mean = statistics.fmean(values)
    std = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{mean:.{digits}f} ± {std:.{digits}f}"


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--width", type=int, default=100)
    p.add_argument("--epochs", type=int, default=300, help="epoch budget of every arm")
    p.add_argument("--lr", type=float, default=1e-2, help="Adam; 1e-2 and batch 100 as in the mnist1d paper")
    p.add_argument("--batch-size", type=int, default=100)
    p.add_argument("--patience", type=int, default=20, help="neuron-phase patience (epochs)")
    p.add_argument("--candidates", type=int, default=pf.Config.candidates)
    p.add_argument("--arms", default=",".join(ARMS))
    p.add_argument("--out", type=Path, default=None, help="markdown file to write (JSON beside it)")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    arms = [a for a in args.arms.split(",") if a]

    cfg = pf.Config(patience=args.patience, candidates=args.candidates)
    runs = {arm: [] for arm in arms}
    for seed in range(args.seeds):
        data = load_dataset("mnist1d", seed)
        for arm in arms:
            start = time.perf_counter()
            res = train_model(data, "mlp", args.width, mode=arm if arm in ("gd", "pb") else None,
                              config=cfg, lr=args.lr, batch_size=args.batch_size,
                              max_epochs=args.epochs, early_stopping=arm != "budget", seed=seed)
            row = {"seed": seed, "test": res.test_score, "val": res.val_score, "epochs": res.epochs,
                   "dendrites": res.dendrites, "params": res.params,
                   "dendrite_epochs": sum(r["phase"] == "dendrite" for r in res.history),
                   "seconds": round(time.perf_counter() - start, 1)}
            runs[arm].append(row)
            print(arm, json.dumps(row), flush=True)

    command = "python " + " ".join([sys.argv[0], *(argv if argv is not None else sys.argv[1:])])
    lines = [
        "# MNIST-1D, MLP width 100: baseline vs gd vs pb",
        "",
        f"Reproduce: `{command}` (CPU, `torch.set_num_threads(1)`).",
        "",
        f"Protocol: {args.seeds} seeds (model init, validation split, data order and dendrites all "
        f"follow the seed); Adam lr {args.lr}, batch {args.batch_size}; every arm is capped at "
        f"{args.epochs} epochs. baseline: the plain MLP with early stopping (patience {args.patience}); "
        "budget: the plain MLP for the whole cap; gd / pb: `pf.Grower` with patience "
        f"{args.patience}, candidates {args.candidates} (pb), other settings at `pf.Config` defaults, "
        "until done or at the cap. Every arm keeps its best-validation model; test accuracy is read "
        "once, at those weights.",
        "",
        "| arm | test accuracy (%) | val accuracy (%) | dendrites per layer | params | epochs used | dendrite-phase epochs | seconds |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for arm in arms:
        rs = runs[arm]
        lines.append(f"| {arm} | {_pm([r['test'] for r in rs])} | {_pm([r['val'] for r in rs])} | "
                     f"{_pm([r['dendrites'] for r in rs], 1)} | {_pm([r['params'] for r in rs], 0)} | "
                     f"{_pm([r['epochs'] for r in rs], 0)} | {_pm([r['dendrite_epochs'] for r in rs], 0)} | "
                     f"{_pm([r['seconds'] for r in rs], 0)} |")
    lines += ["", "Per seed (test accuracy %):", "", "| seed | " + " | ".join(arms) + " |",
              "|---" * (len(arms) + 1) + "|"]
    for i in range(args.seeds):
        lines.append(f"| {i} | " + " | ".join(f"{runs[a][i]['test']:.1f}" for a in arms) + " |")
    lines += [""]
    for arm in (a for a in ("gd", "pb") if a in arms):
        for ref in (r for r in ("baseline", "budget") if r in arms):
            diffs = [x["test"] - y["test"] for x, y in zip(runs[arm], runs[ref])]
            lines.append(f"- {arm} − {ref}: {_pm(diffs)} points (better in "
                         f"{sum(d > 0 for d in diffs)}/{len(diffs)} seeds, equal in "
                         f"{sum(d == 0 for d in diffs)}).")
        bare = sum(r["dendrites"] == 0 for r in runs[arm])
        lines.append(f"- {arm}: the kept (best-validation) model has no dendrites in {bare}/{len(runs[arm])} "
                     "seeds: growth did not beat the pre-growth best there.")
    text = "\n".join(lines) + "\n"
    print(text)
    doc = {"command": command, "settings": {**vars(args), "out": str(args.out)}, "runs": runs}
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text)
        args.out.with_suffix(".json").write_text(json.dumps(doc, indent=2))
    return doc


if __name__ == "__main__":
    main()
