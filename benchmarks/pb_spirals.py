"""Two spirals: a small MLP with Perforated Backpropagation dendrites versus the same MLP without.

Every arm starts from the same initial weights, data order and optimizer (Adam) and has the
same cap on epochs; test accuracy is read once, at the kept (best-validation) weights:

- ``baseline``: the plain MLP with early stopping under the same patience pb uses to decide
  growth (the BENCHMARKS.md baseline: the stopping rule applied fairly to both);
- ``budget``: the plain MLP trained for the whole epoch cap (the stronger control: at least as
  many epochs as any grown run used);
- ``pb``: the MLP grown with ``mode="pb"`` until the grower is done or the cap is reached
  (dendrite-phase epochs count against it);
- ``gd``: gradient dendrites under the same rules, for reference.

Run::

    python benchmarks/pb_spirals.py                       # 5 seeds, defaults below
    python benchmarks/pb_spirals.py --seeds 1 --epochs 100  # a quick look
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


def _mean_std(values):
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seeds", type=int, default=5)
    p.add_argument("--width", type=int, default=8, help="hidden width of the 2-w-w-2 MLP")
    p.add_argument("--epochs", type=int, default=400, help="epoch budget of each arm")
    p.add_argument("--lr", type=float, default=1e-2)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--patience", type=int, default=25, help="neuron-phase patience (epochs)")
    p.add_argument("--candidates", type=int, default=pf.Config.candidates)
    p.add_argument("--dendrite-patience", type=int, default=pf.Config.dendrite_patience)
    p.add_argument("--dendrite-max-epochs", type=int, default=pf.Config.dendrite_max_epochs)
    p.add_argument("--max-dendrites", type=int, default=pf.Config.max_dendrites)
    p.add_argument("--retries", type=int, default=pf.Config.max_growth_retries)
    p.add_argument("--init-scale", type=float, default=pf.Config.init_scale)
    p.add_argument("--arms", default="baseline,budget,pb,gd", help="comma list of baseline,budget,pb,gd")
    p.add_argument("--out", type=Path, default=None, help="write the results as JSON here")
    args = p.parse_args(argv)
    torch.set_num_threads(1)

    cfg = pf.Config(mode="pb", patience=args.patience, candidates=args.candidates,
                    dendrite_patience=args.dendrite_patience,
                    dendrite_max_epochs=args.dendrite_max_epochs, max_dendrites=args.max_dendrites,
                    max_growth_retries=args.retries, init_scale=args.init_scale)
    common = dict(lr=args.lr, batch_size=args.batch_size, max_epochs=args.epochs, config=cfg)
    arms = [a for a in args.arms.split(",") if a]
    runs = []
    for seed in range(args.seeds):
        data = load_dataset("spirals", seed)
        run = {"seed": seed}
        for arm in arms:
            start = time.perf_counter()
            mode = arm if arm in ("pb", "gd") else None
            res = train_model(data, "mlp", args.width, mode=mode, early_stopping=arm != "budget",
                              seed=seed, **common)
            run[arm] = {"test": res.test_score, "val": res.val_score, "dendrites": res.dendrites,
                        "epochs": res.epochs, "params": res.params,
                        "dendrite_epochs": sum(r["phase"] == "dendrite" for r in res.history),
                        "seconds": round(time.perf_counter() - start, 1)}
        runs.append(run)
        print(json.dumps(run), flush=True)

    summary = {}
    for arm in arms:
        summary[arm] = {}
        for key in ("test", "val", "dendrites", "epochs", "params", "dendrite_epochs"):
            m, s_ = _mean_std([r[arm][key] for r in runs])
            summary[arm][key] = {"mean": m, "std": s_}
    for arm in ("pb", "gd"):
        for ref in ("baseline", "budget"):
            if arm in arms and ref in arms:
                diffs = [r[arm]["test"] - r[ref]["test"] for r in runs]
                m, s_ = _mean_std(diffs)
                summary[f"{arm}_minus_{ref}"] = {"mean": m, "std": s_, "wins": sum(d > 0 for d in diffs),
                                                 "of": len(diffs)}
    doc = {"command": "python " + " ".join([sys.argv[0], *(argv if argv is not None else sys.argv[1:])]),
           "settings": {**vars(args), "out": str(args.out)}, "config": cfg.to_dict(),
           "runs": runs, "summary": summary}
    for arm in arms:
        a = summary[arm]
        print(f"{arm:9s} test {a['test']['mean']:.2f} ± {a['test']['std']:.2f} %  "
              f"epochs {a['epochs']['mean']:.0f}  dendrites/layer {a['dendrites']['mean']:.1f}  "
              f"params {a['params']['mean']:.0f}")
    for key, d in summary.items():
        if "_minus_" in key:
            print(f"{key}: {d['mean']:+.2f} ± {d['std']:.2f} points, better in {d['wins']}/{d['of']} seeds")
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(doc, indent=2))
    return doc


if __name__ == "__main__":
    main()
