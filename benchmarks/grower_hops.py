"""Count the calls into perforate's own code that one ``Grower.step`` makes (the "hops").

A tiny gd model is driven on scripted scores (patience 2, smoothing 1); epochs 2 (a gain),
3 (no gain) and 4 (a plateau that grows) are profiled with ``sys.setprofile``, counting 'call'
events whose code lives under the imported perforate package (this thread only: a background
writer thread is not counted); "named" leaves out comprehensions, generator expressions and
lambdas. Run with ``PYTHONPATH=<checkout>/src`` to measure a checkout.

    python benchmarks/grower_hops.py [--out-dir]   # --out-dir: with a run folder (the writer)
"""
from __future__ import annotations

import os
import sys
import tempfile
from collections import Counter

import torch
from torch import nn

import perforate as pf

ROOT = os.path.dirname(pf.__file__) + os.sep
SCORES = [0.3, 0.4, 0.5, 0.5, 0.5]
LABELS = {2: "ordinary epoch, a gain", 3: "ordinary epoch, no gain", 4: "plateau epoch that grows"}


def profiled(fn):
    calls: list[tuple[str, str]] = []
    depth = [0, 0]  # current, deepest (perforate frames only)

    def prof(frame, event, arg):
        code = frame.f_code
        if not code.co_filename.startswith(ROOT):
            return
        if event == "call":
            calls.append((os.path.relpath(code.co_filename, ROOT), code.co_name))
            depth[0] += 1
            depth[1] = max(depth)
        elif event == "return":
            depth[0] -= 1

    sys.setprofile(prof)
    try:
        out = fn()
    finally:
        sys.setprofile(None)
    return out, calls, depth[1]


def main() -> None:
    torch.manual_seed(0)
    torch.set_num_threads(1)
    x = torch.randn(16, 4)
    model = nn.Sequential(nn.Linear(4, 6), nn.Tanh(), nn.Linear(6, 3))
    cfg = pf.Config(mode="gd", patience=2, smoothing=1)
    with tempfile.TemporaryDirectory() as tmp:
        out_dir = tmp if "--out-dir" in sys.argv else None
        grower = pf.Grower(model, cfg, lambda p: torch.optim.Adam(p, lr=1e-2), out_dir=out_dir)
        for epoch, score in enumerate(SCORES):
            grower.optimizer.zero_grad()
            grower.model(x).pow(2).mean().backward()
            grower.optimizer.step()
            decision, calls, deepest = profiled(lambda: grower.step(score, train_score=score))
            if epoch in LABELS:
                modules = Counter(path for path, _ in calls)
                funcs = set(calls)
                named = [c for c in calls if not c[1].startswith("<")]  # no comprehensions, lambdas
                print(f"epoch {epoch} ({LABELS[epoch]}; event {decision.event!r}): {len(calls)} calls "
                      f"({len(named)} to named functions), {len(funcs)} distinct functions, "
                      f"{len(modules)} modules, depth {deepest}")
                print("   ", ", ".join(f"{m} {n}" for m, n in sorted(modules.items())))
        grower.close() if hasattr(grower, "close") else None


if __name__ == "__main__":
    main()
