"""Why the harness's MNIST-1D MLP scores 57-62 % against the published 68 %: one factor at a time.

The published protocol (greydanus/mnist1d, notebooks/train.py + models.py; facts, not code):
MLPBase(40, 10, hidden 100) with a residual second layer ``h = h + relu(W2 h)``, Adam lr 1e-2,
batch 100 taken in order (no shuffle), 6000 steps (150 epochs of 4000 samples), the whole
4000-sample training split (no validation), the test accuracy at the last step.

Run: OMP_NUM_THREADS=1 python benchmarks/issue10/baseline_protocol.py [seeds]
Writes results/baseline-protocol.md.
"""
from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path

import torch
from torch import nn
from torch.nn import functional as F

from perforate.experiments.data.datasets import _mnist1d_arrays, load_dataset

torch.set_num_threads(1)


class ResMLP(nn.Module):
    def __init__(self, width: int = 100):
        super().__init__()
        self.l1, self.l2, self.l3 = nn.Linear(40, width), nn.Linear(width, width), nn.Linear(width, 10)

    def forward(self, x):
        h = self.l1(x).relu()
        h = h + self.l2(h).relu()
        return self.l3(h)


def plain_mlp(width: int = 100):
    return nn.Sequential(nn.Linear(40, width), nn.ReLU(), nn.Linear(width, width), nn.ReLU(),
                         nn.Linear(width, 10))


@torch.no_grad()
def acc(model, x, y):
    return float((model(x).argmax(1) == y).float().mean() * 100)


def run(seed, *, residual, lr, batch, epochs, use_val, shuffle, select):
    if use_val:
        d = load_dataset("mnist1d", seed=seed)
        xt, yt, xv, yv = d.x_train, d.y_train, d.x_val, d.y_val
        xs, ys = d.x_test, d.y_test
    else:
        a = _mnist1d_arrays()
        xt, yt = torch.tensor(a[0], dtype=torch.float32), torch.tensor(a[1])
        xs, ys = torch.tensor(a[2], dtype=torch.float32), torch.tensor(a[3])
        xv, yv = xs, ys
    torch.manual_seed(seed)
    model = ResMLP() if residual else plain_mlp()
    opt = torch.optim.Adam(model.parameters(), lr)
    g = torch.Generator().manual_seed(seed)
    best, best_test, best_val_loss, test_at_best_loss = -1.0, 0.0, float("inf"), 0.0
    n = len(yt)
    for _ in range(epochs):
        order = torch.randperm(n, generator=g) if shuffle else torch.arange(n)
        for i in range(0, n, batch):
            idx = order[i:i + batch]
            loss = F.cross_entropy(model(xt[idx]), yt[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
        with torch.no_grad():
            va = acc(model, xv, yv)
            vl = float(F.cross_entropy(model(xv), yv))
        if va > best:
            best, best_test = va, acc(model, xs, ys)
        if vl < best_val_loss:
            best_val_loss, test_at_best_loss = vl, acc(model, xs, ys)
    final = acc(model, xs, ys)
    return {"final": final, "best_val_acc": best_test, "best_val_loss": test_at_best_loss}


VARIANTS = {
    "published (res, lr1e-2, b100, 150ep, 4000 train, in order)":
        dict(residual=True, lr=1e-2, batch=100, epochs=150, use_val=False, shuffle=False),
    "published + shuffle": dict(residual=True, lr=1e-2, batch=100, epochs=150, use_val=False, shuffle=True),
    "3400 train + val split, res, lr1e-2, b100": dict(residual=True, lr=1e-2, batch=100, epochs=150, use_val=True, shuffle=True),
    "3400, plain mlp, lr1e-2, b100": dict(residual=False, lr=1e-2, batch=100, epochs=150, use_val=True, shuffle=True),
    "3400, res, lr1e-3, b64": dict(residual=True, lr=1e-3, batch=64, epochs=150, use_val=True, shuffle=True),
    "3400, plain mlp, lr1e-3, b64 (harness)": dict(residual=False, lr=1e-3, batch=64, epochs=150, use_val=True, shuffle=True),
}

HEADER = """# The MNIST-1D MLP baseline, trained as published (issue 10, item 6)

Reproduce: `OMP_NUM_THREADS=1 python benchmarks/issue10/baseline_protocol.py {seeds}` (CPU, one
thread, about {minutes} minutes).

The published protocol (greydanus/mnist1d, `notebooks/train.py` and `notebooks/models.py`; facts,
not code): `MLPBase(40, 10, hidden=100)` whose second layer is residual (`h = h + relu(W2 h)`),
Adam lr 1e-2, batch 100 taken in order, 6000 steps (150 epochs of 4000 samples), all 4000
training samples (no validation split), the test accuracy at the last step. The repository's own
notebook prints 65.1 % at step 6000 for that run; the paper's table says 68 %.

Each row changes one thing, {seeds} seeds (model init and batch order follow the seed; the
dataset is `make_dataset(get_dataset_args())`, identical to the published file). Test accuracy %,
mean ± std: at the last epoch, at the epoch of best validation accuracy, and at the epoch of
lowest validation loss (rows without a validation split select on the test split itself, so
those two columns are not honest estimates there and are left out).

| variant | final | best val accuracy | lowest val loss |
|---|---|---|---|
"""

FOOTER = """
What the rows say:

- The published recipe reproduces its own notebook (about 65 %), not the paper's 68 %.
- The harness's 15 % validation carve-out (3400 training samples) costs about 2 points; the
  residual connection makes no difference at lr 1e-2; Adam lr 1e-3 with batch 64 (the harness's
  old default) costs about 4 points more.
- Following the validation *loss* costs 5-7 points: on MNIST-1D it rises from epoch ~20 while
  the accuracy still climbs (the published run's test loss goes 2.09 -> 3.29 while its accuracy
  goes 60.9 -> 65.1).
- So the harness default is now Adam lr 1e-2, batch 100, 150 epochs, following the validation
  accuracy (`perforate bench`, `perforate bench frontier`). Its `mlp` (no residual connection)
  kept at its best validation epoch is the "3400, plain mlp, lr1e-2, b100" row: 62.7 %, against
  57-59 % before; the remaining ~2.5 points to the published recipe are the validation carve-out
  and selecting on a 600-sample validation split rather than reading the last epoch.
"""

if __name__ == "__main__":
    n_seeds = int(sys.argv[1]) if len(sys.argv) > 1 else 5
    seeds = range(n_seeds)
    start = time.perf_counter()
    out = {}
    rows = []
    for name, kw in VARIANTS.items():
        runs = [run(s, select=None, **kw) for s in seeds]
        out[name] = {k: (statistics.mean(r[k] for r in runs), statistics.stdev(r[k] for r in runs))
                     for k in runs[0]}
        cells = [f"{m:.1f} ± {sd:.1f}" for m, sd in out[name].values()]
        if not kw["use_val"]:
            cells[1:] = ["–", "–"]
        rows.append(f"| {name} | " + " | ".join(cells) + " |")
        print(rows[-1], flush=True)
    minutes = max(1, round((time.perf_counter() - start) / 60))
    path = Path(__file__).resolve().parents[2] / "results" / "baseline-protocol.md"
    path.write_text(HEADER.format(seeds=n_seeds, minutes=minutes) + "\n".join(rows) + "\n" + FOOTER)
    print(path)
