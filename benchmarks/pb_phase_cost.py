"""What an epoch of an *online* pb dendrite phase costs over a plain epoch of the same model.

Online candidate training (``Config(candidate_training="online")``) runs the correlation
statistics in every batch's backward; this splits that cost. The default, cached training, is
timed the way users run it (the caching epoch and ``Grower.step``, where the candidates are
fitted) by ``perforate bench cost`` (``pb_phase_ratio``).

MNIST-1D MLP (default width 100); both arms run the same loop (batches cut from tensors, Adam,
cross-entropy), timed interleaved and alternating order, on the calling thread's CPU time
(``time.thread_time``, one torch thread: other jobs on a shared machine disturb it far less than
wall time). Prints the median ratio (and its min-max over repeats) per batch size and number of
candidates, and the split of the dendrite phase's extra time: candidate forward/backward versus
the correlation statistics.

    python benchmarks/pb_phase_cost.py
    python benchmarks/pb_phase_cost.py --batch-sizes 32,128,512 --candidates 1,4 --repeats 9
"""
from __future__ import annotations

import argparse
import copy
import json
import statistics
import time

import torch
import torch.nn.functional as F

import perforate as pf
from perforate.experiments.data.datasets import load_dataset
from perforate.experiments.data.models import build_model
from perforate.growth import pb


class _FreeStatistics(pb.CandidatePool):
    """A pool whose backward hands on the raw error instead of the correlation gradient: the
    same graph and optimizer work without the statistics, to split the cost."""

    def _objective_gradient(self, a, delta, axis):
        return delta.unsqueeze(axis).expand_as(a)


def _epoch(model, optimizer, x, y, batch, gen):
    model.train()
    order = torch.randperm(len(x), generator=gen)
    for i in range(0, len(x), batch):
        idx = order[i:i + batch]
        loss = F.cross_entropy(model(x[idx]), y[idx])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()


def _dendrite_phase(base, candidates, pool_class=None):
    cfg = pf.Config(mode="pb", candidate_training="online", candidates=candidates, patience=10**6,
                    dendrite_patience=10**6, dendrite_max_epochs=10**6)
    grower = pf.Grower(pf.perforate(copy.deepcopy(base), cfg), cfg,
                       optimizer_factory=lambda p: torch.optim.Adam(p, lr=1e-3))
    grower.add_dendrites()
    if pool_class is not None:
        for layer in pf.dendritic_layers(grower.model).values():
            layer.candidate_pool.__class__ = pool_class
    return grower


def measure(batch: int, candidates: int, repeats: int, width: int) -> dict:
    data = load_dataset("mnist1d", 0)
    x, y = data.x_train, data.y_train
    base = build_model("mlp", data, width, seed=0)
    plain = copy.deepcopy(base)
    plain_opt = torch.optim.Adam(plain.parameters(), lr=1e-3)
    full = _dendrite_phase(base, candidates)
    free = _dendrite_phase(base, candidates, _FreeStatistics)
    arms = {"plain": lambda g: _epoch(plain, plain_opt, x, y, batch, g),
            "dendrite phase": lambda g: _epoch(full.model, full.optimizer, x, y, batch, g),
            "dendrite phase, no statistics": lambda g: _epoch(free.model, free.optimizer, x, y, batch, g)}
    for run in arms.values():  # warm up
        run(torch.Generator().manual_seed(0))
    times = {name: [] for name in arms}
    for r in range(repeats):
        names = list(arms) if r % 2 == 0 else list(reversed(arms))
        for name in names:
            start = time.thread_time()
            arms[name](torch.Generator().manual_seed(r))
            times[name].append(time.thread_time() - start)
    ratios = [d / p for d, p in zip(times["dendrite phase"], times["plain"])]
    free_ratios = [d / p for d, p in zip(times["dendrite phase, no statistics"], times["plain"])]
    return {"batch": batch, "candidates": candidates, "width": width,
            "plain_epoch_s": statistics.median(times["plain"]),
            "dendrite_epoch_s": statistics.median(times["dendrite phase"]),
            "ratio": statistics.median(ratios), "ratio_min": min(ratios), "ratio_max": max(ratios),
            "ratio_without_statistics": statistics.median(free_ratios)}


def main(argv=None) -> list[dict]:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--batch-sizes", default="32,128,512")
    p.add_argument("--candidates", default="1")
    p.add_argument("--width", type=int, default=100)
    p.add_argument("--repeats", type=int, default=7)
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    results = []
    for batch in (int(b) for b in args.batch_sizes.split(",")):
        for cands in (int(c) for c in args.candidates.split(",")):
            res = measure(batch, cands, args.repeats, args.width)
            results.append(res)
            print(json.dumps({k: round(v, 4) if isinstance(v, float) else v for k, v in res.items()}),
                  flush=True)
    return results


if __name__ == "__main__":
    main()
