"""The pb cached dendrite phase's memory against ``Config.candidate_cache_mb`` (issue 27, item 3).

A wide Linear model runs one dendrite-phase epoch (caching) and the fit of the candidates
(``pb.fit_cached``, what the next ``step`` runs before joining); a thread samples the
process's RSS. Prints the RSS before the phase and the peaks
above it while caching and while fitting.

    python benchmarks/pb_cache_peak.py --width 4096 --cache-mb 64 --batches 40 --steps 2
"""
from __future__ import annotations

import argparse
import os
import threading
import time

import torch
from torch import nn

import perforate as pf
from perforate.growth import pb

PAGE = os.sysconf("SC_PAGE_SIZE")


def rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * PAGE


class Peak:
    def __init__(self) -> None:
        self.value, self._stop = rss(), threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            self.value = max(self.value, rss())
            time.sleep(0.002)

    def stop(self) -> int:
        self._stop.set()
        self._thread.join()
        return max(self.value, rss())


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--width", type=int, default=4096)
    ap.add_argument("--cache-mb", type=float, default=64)
    ap.add_argument("--batches", type=int, default=40)
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--steps", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    w = args.width
    model = nn.Sequential(nn.Linear(w, w))
    cfg = pf.Config(mode="pb", candidates=1, candidate_steps=args.steps, candidate_cache_mb=args.cache_mb,
                    plots=False, include=["0"])
    g = pf.Grower(model, cfg, lambda p: torch.optim.SGD(p, lr=0.01))
    g.step(0.5)
    g.add_dendrites()
    x, y = torch.randn(args.batch, w), torch.randn(args.batch, w)
    base = rss()
    peak = Peak()
    t0 = time.perf_counter()
    for _ in range(args.batches):
        nn.functional.mse_loss(g.model(x), y).backward()
    caching = peak.stop()
    t1 = time.perf_counter()
    cached = sum(e["x"].shape[0] for e in g.layers["0"].candidate_pool.cache)
    peak = Peak()
    pb.fit_cached(g.layers, cfg.candidate_steps, cfg.candidate_lr)  # what the next step() fits
    fitting = peak.stop()
    t2 = time.perf_counter()
    mb = 2 ** 20
    print(f"width {w}, cap {args.cache_mb:.0f} MB, {cached} samples cached of {args.batches * args.batch}: "
          f"RSS before {base / mb:.0f} MB; peak above it while caching {(caching - base) / mb:.0f} MB "
          f"({t1 - t0:.0f} s), while fitting {(fitting - base) / mb:.0f} MB ({t2 - t1:.0f} s, "
          f"{args.steps} steps)")


if __name__ == "__main__":
    main()
