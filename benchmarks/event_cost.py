"""Per-event cost of a long budgeted run (issue 27, item 5): the wall time of ``Grower.step`` at
its "hold" events near epoch 100 and near the end, with the files written to a temporary folder.

    python benchmarks/event_cost.py --epochs 2000 --patience 10 [--plots] [--epoch-ms 10]

The model is tiny and the scores flat, so the step's own cost is the writer's.
"""
from __future__ import annotations

import argparse
import logging
import os
import statistics
import tempfile
import time

import torch
from torch import nn

import perforate as pf


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--epochs", type=int, default=2000)
    ap.add_argument("--patience", type=int, default=10)
    ap.add_argument("--plots", action="store_true")
    ap.add_argument("--epoch-ms", type=float, default=10.0,
                    help="time an epoch's training takes (slept), so the background writer runs")
    args = ap.parse_args()
    torch.set_num_threads(1)
    logging.getLogger("perforate").setLevel(logging.WARNING)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 3))
    cfg = pf.Config(patience=args.patience, max_dendrites=1, max_growth_retries=0,
                    max_epochs=args.epochs, plots=args.plots)
    with tempfile.TemporaryDirectory() as out:
        g = pf.Grower(model, cfg, lambda p: torch.optim.SGD(p, lr=0.01), out_dir=out)
        events: list[tuple[int, str, float]] = []
        t0 = time.perf_counter()
        for epoch in range(args.epochs):
            time.sleep(args.epoch_ms / 1000)
            start = time.perf_counter()
            d = g.step(0.5 + 1e-9 * (epoch % 2))
            took = time.perf_counter() - start
            if d.event:
                events.append((epoch, d.event, took))
            if d.done:
                break
        g.finish()
        total = time.perf_counter() - t0
        sizes = {name: os.path.getsize(os.path.join(out, name)) for name in ("best.pt", "history.csv")}
    holds = [(e, t) for e, ev, t in events if ev == "hold"]
    kinds = sorted({ev for _, ev, _ in events})

    def near(lo: int, hi: int) -> str:
        ts = [t for e, t in holds if lo <= e < hi]
        return f"{1000 * statistics.median(ts):.1f} ms (n={len(ts)})" if ts else "none"

    overhead = total - args.epochs * args.epoch_ms / 1000
    print(f"epochs {args.epochs}, patience {args.patience}, plots {args.plots}: {len(holds)} holds, "
          f"events {kinds}; total {total:.1f} s, "
          f"{overhead:.1f} s of it not training")
    print(f"hold step near epoch 100: {near(50, 150)}; near epoch {args.epochs}: "
          f"{near(args.epochs - 200, args.epochs)}; file sizes {sizes}")


if __name__ == "__main__":
    main()
