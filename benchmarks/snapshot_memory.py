"""Peak RSS of a growth run on a ~50M-parameter MLP with the grower's snapshots in memory or
on disk (``Config.snapshot_device``). One torch thread; one process per setting (peak RSS is
per process): it re-runs itself for each.

    python benchmarks/snapshot_memory.py                 # model, disk and auto, side by side
    python benchmarks/snapshot_memory.py --place disk    # one setting, in this process
"""
from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys

import torch
import torch.nn.functional as F
from torch import nn

import perforate as pf
from perforate import snapshots


def _rss_mib() -> float:
    """Peak resident memory of this process so far."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def _current_mib() -> float:
    """Resident memory now (Linux)."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize() / 2**20


def run(place: str, width: int = 4800, epochs: int = 8) -> dict:
    torch.set_num_threads(1)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(1024, width), nn.ReLU(), nn.Linear(width, width), nn.ReLU(),
                          nn.Linear(width, width), nn.ReLU(), nn.Linear(width, 10))
    params = sum(p.numel() for p in model.parameters())
    x, y = torch.randn(16, 1024), torch.randint(0, 10, (16,))
    # a growth on trial at the end: best, before-growth and trial snapshots all held
    cfg = pf.Config(mode="gd", patience=1, smoothing=1, max_epochs=100, snapshot_device=place,
                    include=["0", "2"])
    model = pf.perforate(model, cfg)
    grower = pf.Grower(model, cfg, optimizer_factory=lambda p: torch.optim.Adam(p, lr=1e-4))
    peaks, held, now = [], [], []
    scores = [0.5, 0.6, 0.6] + [0.61, 0.62] * epochs
    for score in scores[:epochs]:
        loss = F.cross_entropy(grower.model(x), y)
        grower.optimizer.zero_grad()
        loss.backward()
        grower.optimizer.step()
        d = grower.step(score)
        peaks.append(round(_rss_mib()))
        now.append(round(_current_mib()))
        held.append(sum(1 for k in ("_best", "_trial", "_before") if getattr(grower, k) is not None))
    snap = {k: snapshots.nbytes(getattr(grower, k)) for k in ("_best", "_trial", "_before")}
    return {"place": place, "params_M": round(params / 1e6, 1), "peak_rss_mib": peaks[-1],
            "peak_rss_by_epoch": peaks, "rss_by_epoch": now, "snapshots_held": held, "last_event": d.event,
            "snapshot_mib": {k: [round(b / 2**20), w] for k, (b, w) in snap.items()}}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--place", default=None)
    args = p.parse_args(argv)
    if args.place:
        print(json.dumps(run(args.place)), flush=True)
        return
    for place in ("model", "disk", "auto"):
        subprocess.run([sys.executable, __file__, "--place", place], check=True)


if __name__ == "__main__":
    main()
