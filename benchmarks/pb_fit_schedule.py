"""The cached pb fit's schedule on the MNIST-1D MLP: chosen candidates' correlation and the
phase's cost (recording epoch + ``Grower.step``) in plain epochs, per (steps, lr).

Each schedule starts from the same model (seeded, ``--warmup`` plain epochs of training under
the grower, no growth), so the correlations compare like for like; times are the calling
thread's CPU time (one torch thread) against a plain epoch measured in the same run.

    python benchmarks/pb_fit_schedule.py                         # width 100 and 16, seeds 0-2
    python benchmarks/pb_fit_schedule.py --schedules 100:0.01,20:0.05 --widths 100
"""
from __future__ import annotations

import argparse
import json
import statistics
import time

import torch
import torch.nn.functional as F

import perforate as pf
from perforate.experiments.data.datasets import load_dataset
from perforate.experiments.data.models import build_model


def _epoch(model, opt, x, y, batch, gen):
    model.train()
    perm = torch.randperm(len(x), generator=gen)
    for i in range(0, len(x), batch):
        idx = perm[i:i + batch]
        opt.zero_grad(set_to_none=True)
        F.cross_entropy(model(x[idx]), y[idx]).backward()
        opt.step()


def measure(width: int, seed: int, steps: int, lr: float, warmup: int, data, batch: int = 32) -> dict:
    x, y = data.x_train, data.y_train
    cfg = pf.Config(mode="pb", patience=10**6, seed=seed, candidate_steps=steps, candidate_lr=lr)
    model = pf.perforate(build_model("mlp", data, width, seed=seed), cfg)
    grower = pf.Grower(model, cfg, optimizer_factory=lambda p: torch.optim.Adam(p, 1e-3))
    gen = torch.Generator().manual_seed(seed)
    for _ in range(warmup):
        _epoch(grower.model, grower.optimizer, x, y, batch, gen)
    plain = build_model("mlp", data, width, seed=seed)
    popt = torch.optim.Adam(plain.parameters(), 1e-3)
    pgen = torch.Generator().manual_seed(seed)
    _epoch(plain, popt, x, y, batch, pgen)
    start = time.thread_time()
    for _ in range(2):
        _epoch(plain, popt, x, y, batch, pgen)
    plain_s = (time.thread_time() - start) / 2
    grower.add_dendrites()
    start = time.thread_time()
    _epoch(grower.model, grower.optimizer, x, y, batch, gen)
    record_s = time.thread_time() - start
    start = time.thread_time()
    grower.step(0.5)
    fit_s = time.thread_time() - start
    corr = [v for k, v in grower.history[-1].items() if k.startswith("corr/")]
    return {"width": width, "seed": seed, "steps": steps, "lr": lr,
            "phase_epochs": round((record_s + fit_s) / plain_s, 2),
            "fit_epochs": round(fit_s / plain_s, 2),
            "mean_correlation": round(sum(corr) / len(corr), 4), "correlations": [round(c, 4) for c in corr]}


def main(argv=None) -> list[dict]:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--widths", default="100,16")
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--schedules", default="100:0.01,20:0.05,30:0.03,20:0.03")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    data = load_dataset("mnist1d", seed=0)
    schedules = [(int(s.split(":")[0]), float(s.split(":")[1])) for s in args.schedules.split(",")]
    rows = []
    for width in (int(w) for w in args.widths.split(",")):
        for seed in range(args.seeds):
            for steps, lr in schedules:  # interleaved: each seed runs every schedule in turn
                rows.append(measure(width, seed, steps, lr, args.warmup, data))
                print(json.dumps(rows[-1]), flush=True)
    print("summary (medians over seeds):")
    for width in sorted({r["width"] for r in rows}, reverse=True):
        for steps, lr in schedules:
            sel = [r for r in rows if r["width"] == width and (r["steps"], r["lr"]) == (steps, lr)]
            print(f"  width {width} steps {steps} lr {lr}: phase {statistics.median(r['phase_epochs'] for r in sel):.2f} "
                  f"plain epochs, mean |corr| {statistics.median(r['mean_correlation'] for r in sel):.4f}")
    return rows


if __name__ == "__main__":
    main()
