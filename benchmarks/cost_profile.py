"""Where the time goes in the figures ``perforate bench cost`` misses: op counts and profiles.

One thread, the cost bench's own models and sizes. Sections:

- ``layers``: forward + backward of a Linear(100) at batch 32 and a Linear(512) at batch 256, plain
  (k + 1 times as wide) against k = 1, 2, 4 dendrites (gd, pb): aten ops per call (counted below
  autograd, so backward ops count), microseconds per call and per op, and the split of the
  profiled time between matmuls, other ops and time outside any op (Python, autograd engine).
- ``export``: ``pf.export`` of the MNIST-1D MLP (width 100, 2 dendrites) against the plain MLP of
  equal parameters, batch 1 and 256: ops per forward and per layer, the same split.
- ``pb``: the default cached dendrite phase (one recording epoch, then ``Grower.step`` fits the
  candidates): the fit's steps, its op table and its matmul FLOPs against a plain epoch's.
- ``phase``: how many epochs a dendrite phase lasts with the default ``Config`` (cached and
  online), from the same starting point as the cost bench.

    OMP_NUM_THREADS=1 python benchmarks/cost_profile.py
    OMP_NUM_THREADS=1 python benchmarks/cost_profile.py --sections layers,export --json out.json
"""
from __future__ import annotations

import argparse
import copy
import json
import statistics
import time
from collections import Counter

import torch
from torch import nn
from torch.profiler import ProfilerActivity, profile
from torch.utils._python_dispatch import TorchDispatchMode

import perforate as pf
from perforate.experiments.cost.bench import _adam, _grown, _Loop
from perforate.experiments.data.datasets import load_dataset
from perforate.experiments.data.models import build_model, width_for_params
from perforate.growth import cached

MATMULS = {"aten::mm", "aten::addmm", "aten::addmm_", "aten::bmm", "aten::baddbmm", "aten::matmul"}


class _OpCount(TorchDispatchMode):
    """Counts the aten ops that reach a kernel (below autograd: backward ops count too)."""

    def __init__(self) -> None:
        super().__init__()
        self.ops: Counter = Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.ops[str(func.overloadpacket)] += 1
        return func(*args, **(kwargs or {}))


def _count(fn) -> Counter:
    with _OpCount() as mode:
        fn()
    return mode.ops


def _per_call(fn, calls: int = 200, blocks: int = 9) -> float:
    """Median thread-CPU seconds per call over ``blocks`` blocks of ``calls`` calls."""
    fn()
    out = []
    for _ in range(blocks):
        t0 = time.thread_time()
        for _ in range(calls):
            fn()
        out.append((time.thread_time() - t0) / calls)
    return statistics.median(out)


def _split(fn, calls: int = 100) -> dict:
    """Profiled microseconds per call: matmuls, other aten ops (self time), outside any op."""
    fn()
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        t0 = time.thread_time()
        for _ in range(calls):
            fn()
        total = (time.thread_time() - t0) / calls
    aten = [e for e in prof.key_averages() if e.key.startswith("aten::")]
    mat = sum(e.self_cpu_time_total for e in aten if e.key in MATMULS) / calls
    other = sum(e.self_cpu_time_total for e in aten if e.key not in MATMULS) / calls
    top = sorted(aten, key=lambda e: -e.self_cpu_time_total)[:5]
    return {"profiled_us": round(total * 1e6, 1), "matmul_us": round(mat, 1),
            "other_ops_us": round(other, 1), "outside_ops_us": round(total * 1e6 - mat - other, 1),
            "top_self_us": {e.key: round(e.self_cpu_time_total / calls, 1) for e in top}}


def _describe(fn, calls: int) -> dict:
    ops = _count(fn)
    n = sum(ops.values())
    t = _per_call(fn, calls)
    return {"ops": n, "us": round(t * 1e6, 1), "us_per_op": round(t * 1e6 / n, 2),
            **_split(fn, max(20, calls // 2)), "top_ops": dict(ops.most_common(6))}


def layers() -> dict:
    gen = torch.Generator().manual_seed(0)
    out = {}
    for width, batch, calls in ((100, 32, 400), (512, 256, 20)):
        x = torch.randn(batch, width, generator=gen).requires_grad_(True)
        for k in (1, 2, 4):
            modules = {"plain": nn.Linear(width, (k + 1) * width)}
            for mode in ("gd", "pb"):
                layer = _grown(pf.perforate(nn.Linear(width, width), pf.Config(mode=mode)), k)
                layer.freeze_dendrites(mode == "pb")
                modules[mode] = layer
            for arm, module in modules.items():
                grad = torch.randn(module(x).shape, generator=gen)

                def run(module=module, grad=grad):
                    x.grad = None
                    for p in module.parameters():
                        p.grad = None
                    module(x).backward(grad)

                out[f"linear{width}/k={k}/{arm}"] = _describe(run, calls)
    return out


def export() -> dict:
    data = load_dataset("mnist1d", seed=0)
    model = _grown(pf.perforate(build_model("mlp", data, 100, seed=0)), 2)
    exported = pf.export(model).eval()
    plain = build_model("mlp", data, width_for_params("mlp", data, pf.count_parameters(exported)),
                        seed=0).eval()
    out = {}
    for batch, calls in ((1, 1000), (256, 100)):
        x = data.x_val[:batch]
        for name, m in (("exported", exported), ("plain", plain)):
            def run(m=m):
                with torch.no_grad():
                    m(x)
            out[f"batch={batch}/{name}"] = _describe(run, calls)
        hidden = exported[3]  # the 100 -> 100 hidden layer, exported
        h = torch.randn(batch, 100)

        def one_layer():
            with torch.no_grad():
                hidden(h)
        out[f"batch={batch}/one exported hidden layer"] = _describe(one_layer, calls)
    out["modules"] = {"exported": str(exported), "plain": str(plain)}
    return out


def _grower(training: str, data, seed: int = 0):
    cfg = pf.Config(mode="pb", candidate_training=training, patience=10**6, seed=seed)
    base = build_model("mlp", data, 100, seed=seed)
    grower = pf.Grower(pf.perforate(base, cfg), cfg, optimizer_factory=_adam)
    grower.add_dendrites()  # a dendrite phase starts, as in the cost bench
    return grower, cfg


def pb() -> dict:
    data = load_dataset("mnist1d", seed=0)
    loop = _Loop(data, 32, torch.device("cpu"))
    plain = build_model("mlp", data, 100, seed=0)
    plain_opt = _adam(plain.parameters())
    plain_s = statistics.median(_timed(lambda: loop.epoch(plain, plain_opt)) for _ in range(5))
    grower, cfg = _grower("cached", data)
    record_s = _timed(lambda: loop.epoch(grower.model, grower.optimizer))
    fit_s = _timed(lambda: grower.step(1.0))  # the fit, scoring and join, not profiled
    grower, cfg = _grower("cached", data)
    taken: list = []
    real_fit = cached.fit

    def spy(pools, *args):
        taken.append(real_fit(pools, *args))
        return taken[-1]

    cached.fit = spy
    try:
        score = loop.epoch(grower.model, grower.optimizer)
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            grower.step(score)
    finally:
        cached.fit = real_fit
    table = sorted(((e.key, e.self_cpu_time_total / 1e3, e.count) for e in prof.key_averages()
                    if e.key.startswith("aten::")), key=lambda r: -r[1])[:8]
    samples = len(data.x_train)
    # matmul multiply-adds: a plain epoch runs 3 per weight (forward, dW, dx; no dx for the first
    # layer); a fit step 2 per candidate layer (z = x Wc^T forward, dWc), every cached sample
    layer_macs = [(40, 100), (100, 100), (100, 10)]
    plain_macs = samples * sum(i * o * (3 if n else 2) for n, (i, o) in enumerate(layer_macs))
    fit_macs_per_step = samples * sum(2 * i * o for i, o in layer_macs)
    steps = taken[0] if taken else []
    fit_macs = sum(samples * 2 * i * o * s for (i, o), s in zip(layer_macs, steps))
    return {"plain_epoch_s": round(plain_s, 4), "recording_epoch_s": round(record_s, 4),
            "step_s (the fit, scoring, join)": round(fit_s, 4),
            "fit_steps_per_layer": steps, "candidate_steps": cfg.candidate_steps,
            "plain_epoch_matmul_gmac": round(plain_macs / 1e9, 3),
            "fit_matmul_gmac_per_step": round(fit_macs_per_step / 1e9, 3),
            "fit_matmul_gmac": round(fit_macs / 1e9, 3),
            "fit_gmac_per_s": round(fit_macs / 1e9 / fit_s, 1),
            "top_ops_ms": [(k, round(ms, 1), n) for k, ms, n in table]}


def _timed(fn) -> float:
    t0 = time.thread_time()
    fn()
    return time.thread_time() - t0


def phase(seeds: int = 3) -> dict:
    data = load_dataset("mnist1d", seed=0)
    out = {}
    for training in ("cached", "online"):
        lengths = []
        for seed in range(seeds):
            grower, cfg = _grower(training, data, seed)
            loop = _Loop(data, 32, torch.device("cpu"))
            epochs = 0
            while grower.state.phase == "dendrite" and epochs < 100:
                grower.step(loop.epoch(grower.model, grower.optimizer))
                epochs += 1
            lengths.append(epochs)
        out[training] = {"dendrite_phase_epochs": lengths,
                         "dendrite_patience": cfg.dendrite_patience,
                         "dendrite_max_epochs": cfg.dendrite_max_epochs}
    return out


SECTIONS = {"layers": layers, "export": export, "pb": pb, "phase": phase}


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sections", default=",".join(SECTIONS))
    p.add_argument("--json", default=None)
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    torch.manual_seed(0)
    out = {"torch": torch.__version__}
    for name in args.sections.split(","):
        out[name] = SECTIONS[name]()
        print(json.dumps({name: out[name]}, indent=1), flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(out, f, indent=1)
    return out


if __name__ == "__main__":
    main()
