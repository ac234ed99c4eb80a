"""``perforate bench cost``: what dendrites, wrapping and the controller cost, measured side by side.

Every figure is a ratio of two (or more) arms timed in one run, interleaved: each repeat runs every
arm once, alternating the order, and the ratio is taken per repeat; the table shows the median
ratio with its min-max over repeats. On CPU the clock is the calling thread's CPU time
(``time.thread_time``, one torch thread), which other jobs on a shared machine disturb far less
than wall time; wall-time medians are kept in the JSON beside it. On CUDA the clock is wall time
with the device synchronised.

Figures (targets from the speed issue):

- ``controller_overhead``: a training epoch (train + validation) with ``Grower.step`` called
  after it versus without, zero dendrites, real validation scores (the best model changes as
  it does in a run); with ``out_dir=None`` and with an ``out_dir`` (the files a run writes:
  history, resume state, best snapshots). Clocked in CPU time of every thread, each arm waiting
  for its background writes, so their cost counts where it was incurred. Target <= 1.02.
- ``wrap_overhead``: the perforated model with zero dendrites versus the plain model, same loop.
  Target <= 1.05.
- ``dendrite_layer_ratio``: forward + backward of a DendriticLayer (Linear and Conv2d, k = 1, 2,
  4 dendrites, ``gd`` and ``pb`` modes) versus a plain layer k + 1 times as wide (equal forward
  FLOPs). Target <= 1.5, and <= 1.15 for layers of 256 units or more.
- ``pb_phase_ratio``: an epoch of a ``pb`` dendrite phase versus a plain epoch of the same model,
  ``Grower.step`` included; for the default cached candidate training (a one-epoch phase: the
  epoch records inputs and errors, ``Grower.step`` fits the candidates with full-batch steps and
  joins them) and for online training (one epoch of a longer phase). Target <= 3 for the
  cached phase (the whole phase per growth), <= 1.5 per epoch online. The cached
  case also reports the phase's peak memory above its start (``peak_mb``: resident set on CPU,
  allocated memory on CUDA) beside ``Config.candidate_cache_mb`` (``cap_mb``), from one more,
  untimed phase.
- ``export_latency_ratio``: ``pf.export`` of a dendritic model versus a plain model of equal
  parameter count (eager), batch 1 and 256; full runs also time the exported model compiled
  ahead of time (``pf.export(model, compile_for=x)``, AOTInductor). Target <= 1.5 (batch 1),
  <= 1.3 (batch 256).
- ``pb_phase_per_growth`` and ``grown_epoch_ratio``: the cached pb phase on other families
  (conv + BN blocks, LSTM, attention; <= 3 plain epochs) and a whole epoch after one growth
  (<= 1.3); see :mod:`perforate.experiments.cost.growth`.
- ``peak_memory_ratio``: peak memory of one training step (forward, backward, Adam step) with k
  dendrites versus the plain model of equal parameter count, as ``pf.peak_training_memory``
  counts it (the harness's ``peak_memory_mb`` column is the same quantity). No target:
  reported for information.
- ``snapshot_memory``: the bytes of the grower's rollback snapshots held in the model's device
  memory while a growth is on trial (best, before-growth and trial models), per
  ``Config.snapshot_device``, as a multiple of the model's own state; ``host_bytes`` and
  ``disk_bytes`` say where the rest is. No target: reported for information.

- ``reference_ratio`` (full runs, where ``perforatedai`` is installed): seconds per epoch of
  perforatedai against perforate on the same MNIST-1D loop with one growth (see
  :mod:`perforate.experiments.cost.reference`). Target >= 30 (a speed-up).

Epoch-level figures use the MNIST-1D MLP of width 100, batch 32, batches cut from tensors (no
DataLoader, so no loader overhead hides the cost being measured).
"""
from __future__ import annotations

import contextlib
import copy
import math
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Optional

import torch
import typer
from rich.console import Console
from rich.table import Table

from perforate.experiments.cost import growth as cost_growth
from perforate.experiments.cost import reference as reference_cost
from perforate.experiments.harness.reference import available as reference_available
from perforate.files import write_json

TARGETS: dict[str, float | None] = {
    "controller_overhead": 1.02,
    "wrap_overhead": 1.05,
    "dendrite_layer_ratio": 1.5,
    "pb_phase_ratio": 1.5,
    "pb_phase_per_growth": cost_growth.PB_PHASE_TARGET,
    "grown_epoch_ratio": cost_growth.GROWN_EPOCH_TARGET,
    "export_latency_ratio": 1.5,
    "peak_memory_ratio": None,
    "snapshot_memory": None,
}
"""Figure name -> target ratio (None: informational); layers of ``WIDE_UNITS`` or more units
have the tighter ``WIDE_LAYER_TARGET``; cases in ``CASE_TARGETS`` have their own."""
CASE_TARGETS = {("pb_phase_ratio", "cached"): cost_growth.PB_PHASE_TARGET,
                ("export_latency_ratio", "batch=256"): 1.3}
"""(figure, case) -> the speed issue's target where it differs from the figure's: the cached
pb phase is one epoch, so its ratio is the whole phase per growth (<= 3 plain epochs); export
at a large batch <= 1.3."""
_REFERENCE_BATCH = 64  # the quality protocol's batch, on which perforatedai was first timed
WIDE_UNITS = 256
WIDE_LAYER_TARGET = 1.15

_FULL = {
    "data": "mnist1d", "width": 100, "batch": 32, "export_k": 2, "export_batches": (1, 256),
    "compile_export": True, "memory_batch": 256, "block_s": 0.02, "repeats": 25, "family_repeats": 5,
    # (name, kind, features or channels, batch, image side): an MNIST-1D hidden layer, a mid-size
    # MLP layer, and two 3x3 convolutions of a small CNN
    "layers": [("linear100", "linear", 100, 32, 0), ("linear512", "linear", 512, 256, 0),
               ("conv2d32", "conv2d", 32, 32, 16), ("conv2d64", "conv2d", 64, 16, 16)],
}
_QUICK = {
    "data": "synthetic", "width": 16, "batch": 16, "export_k": 2, "export_batches": (1, 8),
    "compile_export": False, "memory_batch": 8, "block_s": 0.0, "repeats": 2, "family_repeats": 1,
    "layers": [("linear16", "linear", 16, 8, 0), ("conv2d4", "conv2d", 4, 2, 6)],
}


class _Clock:
    """Thread CPU time on CPU (robust on a shared machine), synchronised wall time on CUDA.

    ``process=True`` counts the CPU time of every thread of the process instead (the run
    writer's background thread included)."""

    def __init__(self, device: torch.device, process: bool = False) -> None:
        self.device = device
        self.cuda = device.type == "cuda"
        self._cpu = time.process_time if process else time.thread_time
        self.name = ("wall time, CUDA synchronised" if self.cuda else
                     "process CPU time (all threads)" if process else "thread CPU time (1 torch thread)")

    def now(self) -> tuple[float, float]:
        if self.cuda:
            torch.cuda.synchronize(self.device)
            wall = time.perf_counter()
            return wall, wall
        return self._cpu(), time.perf_counter()


def _paired(arms: dict[str, Callable[[], Any]], repeats: int, clock: _Clock,
            block_s: float, prepare: dict[str, Callable[[], Any]] | None = None,
            ) -> dict[str, dict[str, list[float]]]:
    """Seconds per call of every arm, ``repeats`` interleaved rounds, order alternating.

    Each arm is warmed up once; the number of calls per timed block is chosen from the first
    arm's warm-up time so that a block lasts about ``block_s`` seconds. ``prepare[name]``, where
    given, runs untimed before each of that arm's blocks (which then hold one call).
    """
    names = list(arms)
    prepare = prepare or {}
    inner = 1
    for i, name in enumerate(names):
        if name in prepare:
            prepare[name]()
        start, _ = clock.now()
        arms[name]()
        elapsed, _ = clock.now()
        if i == 0 and block_s > 0:
            inner = max(1, min(1000, math.ceil(block_s / max(elapsed - start, 1e-6))))
    out = {n: {"t": [], "wall": []} for n in names}
    for r in range(repeats):
        for name in (names if r % 2 == 0 else names[::-1]):
            if name in prepare:
                prepare[name]()
            t0, w0 = clock.now()
            for _ in range(1 if name in prepare else inner):
                arms[name]()
            t1, w1 = clock.now()
            out[name]["t"].append((t1 - t0) / inner)
            out[name]["wall"].append((w1 - w0) / inner)
    return out


def _ratio(times: dict[str, dict[str, list[float]]], num: str, den: str, target: float | None,
           **detail: Any) -> dict[str, Any]:
    """Median (min-max) over repeats of the per-repeat ratio ``num / den``."""
    ratios = [a / b for a, b in zip(times[num]["t"], times[den]["t"])]
    walls = [a / b for a, b in zip(times[num]["wall"], times[den]["wall"])]
    med = statistics.median(ratios)
    return {
        "median": med, "min": min(ratios), "max": max(ratios), "target": target,
        "met": None if target is None else med <= target,
        "wall_median": statistics.median(walls),
        "numerator_s": statistics.median(times[num]["t"]),
        "denominator_s": statistics.median(times[den]["t"]),
        "numerator": num, "denominator": den, **detail,
    }


# ---------------------------------------------------------------------- data and loops
def _synthetic(n_train: int = 256, n_val: int = 64):
    from perforate.experiments.data.datasets import DatasetSplits

    gen = torch.Generator().manual_seed(0)

    def draw(n):
        return torch.randn(n, 40, generator=gen), torch.randint(0, 10, (n,), generator=gen)

    (xt, yt), (xv, yv), (xs, ys) = draw(n_train), draw(n_val), draw(n_val)
    return DatasetSplits("synthetic", "classification", xt, yt, xv, yv, xs, ys, (40,), 10)


def _adam(params):
    return torch.optim.Adam(params, lr=1e-3)


class _Loop:
    """One epoch of a plain training loop (train batches + validation accuracy)."""

    def __init__(self, data, batch: int, device: torch.device) -> None:
        self.x, self.y = data.x_train.to(device), data.y_train.to(device)
        self.xv, self.yv = data.x_val.to(device), data.y_val.to(device)
        self.batch = batch
        self.gen = torch.Generator().manual_seed(0)

    def epoch(self, model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> float:
        model.train()
        perm = torch.randperm(len(self.x), generator=self.gen).to(self.x.device)
        for i in range(0, len(perm), self.batch):
            idx = perm[i:i + self.batch]
            optimizer.zero_grad(set_to_none=True)
            loss = torch.nn.functional.cross_entropy(model(self.x[idx]), self.y[idx])
            loss.backward()
            optimizer.step()
        model.eval()
        with torch.no_grad():
            return (model(self.xv).argmax(1) == self.yv).float().mean().item() * 100.0


def _grown(model: torch.nn.Module, k: int, seed: int = 0) -> torch.nn.Module:
    """``k`` dendrites on every wrapped layer, with random (trained-looking) cascade/output weights."""
    import perforate as pf

    gen = torch.Generator().manual_seed(seed)
    for layer in pf.dendritic_layers(model).values():
        layer.add_dendrites(k, gen)
        with torch.no_grad():
            layer.output_weight.copy_(torch.randn(layer.output_weight.shape, generator=gen))
            if layer.cascade_weight is not None:
                layer.cascade_weight.copy_(torch.randn(layer.cascade_weight.shape, generator=gen))
    return model


# ---------------------------------------------------------------------- figures
def _epoch_figures(s: dict, data, device: torch.device, repeats: int, clock: _Clock) -> dict:
    """Epoch-level ratios: the controller, the wrapping and a pb dendrite phase."""
    import perforate as pf
    from perforate.experiments.data.models import build_model

    base = build_model("mlp", data, s["width"], seed=0).to(device)
    cfg = pf.Config(patience=10**6, seed=0)  # no growth while we time
    return {"controller_overhead": _controller_overhead(s, data, device, repeats, clock, base, cfg),
            "wrap_overhead": _wrap_overhead(s, data, device, repeats, clock, base, cfg),
            "pb_phase_ratio": _pb_phase_ratio(s, data, device, repeats, clock, base)}


def _controller_overhead(s: dict, data, device: torch.device, repeats: int, clock: _Clock,
                         base: torch.nn.Module, cfg) -> dict:
    """The same perforated model and loop, with and without ``Grower.step`` (and an out_dir)."""
    import perforate as pf
    from perforate.errors import ExperimentError

    loops = {name: _Loop(data, s["batch"], device) for name in ("none", "step", "disk")}
    free = pf.perforate(copy.deepcopy(base), cfg)
    free_opt = _adam(free.parameters())
    grower = pf.Grower(pf.perforate(copy.deepcopy(base), cfg), cfg, optimizer_factory=_adam)
    step_times: dict[str, list[float]] = {"step": [], "disk": []}
    # every thread's CPU: the writes the run writer does in the background count, each within
    # its own epoch (the arm waits for them; waiting costs no CPU)
    clock = _Clock(device, process=True)

    def stepped(g, loop, key):
        def run():
            score = loop.epoch(g.model, g.optimizer)
            start, _ = clock.now()
            decision = g.step(score)
            if g.writer is not None:
                g.writer.flush()
            step_times[key].append(clock.now()[0] - start)
            if decision.restructured:
                raise ExperimentError("the cost bench grew the model; it must not")
        return run

    with tempfile.TemporaryDirectory(prefix="perforate-cost-") as tmp:
        disk = pf.Grower(pf.perforate(copy.deepcopy(base), cfg), cfg, optimizer_factory=_adam,
                         out_dir=tmp)
        times = _paired({"loop": lambda: loops["none"].epoch(free, free_opt),
                         "loop + Grower.step": stepped(grower, loops["step"], "step"),
                         "loop + Grower.step, out_dir": stepped(disk, loops["disk"], "disk")},
                        repeats, clock, 0.0)
        disk.finish()
    target = TARGETS["controller_overhead"]
    epoch_s = statistics.median(times["loop"]["t"])
    # Grower.step timed on its own too: a precise complement to the (noisier) paired ratio
    return {
        "out_dir=None": _ratio(times, "loop + Grower.step", "loop", target, clock=clock.name,
                               step_s=statistics.median(step_times["step"]),
                               step_share=statistics.median(step_times["step"]) / epoch_s),
        "out_dir=tmp (its writes' CPU included)":
            _ratio(times, "loop + Grower.step, out_dir", "loop", target, clock=clock.name,
                   step_s=statistics.median(step_times["disk"]),
                   step_share=statistics.median(step_times["disk"]) / epoch_s),
    }


def _wrap_overhead(s: dict, data, device: torch.device, repeats: int, clock: _Clock,
                   base: torch.nn.Module, cfg) -> dict:
    """The plain model against the perforated one with zero dendrites."""
    import perforate as pf

    plain = copy.deepcopy(base)
    wrapped = pf.perforate(copy.deepcopy(base), cfg)
    opts = {"plain": _adam(plain.parameters()), "wrapped": _adam(wrapped.parameters())}
    loops = {name: _Loop(data, s["batch"], device) for name in opts}
    times = _paired({"perforated, 0 dendrites": lambda: loops["wrapped"].epoch(wrapped, opts["wrapped"]),
                     "plain": lambda: loops["plain"].epoch(plain, opts["plain"])},
                    repeats, clock, 0.0)
    return _ratio(times, "perforated, 0 dendrites", "plain", TARGETS["wrap_overhead"])


def _pb_phase_ratio(s: dict, data, device: torch.device, repeats: int, clock: _Clock,
                    base: torch.nn.Module) -> dict:
    """An epoch of a pb dendrite phase against a plain epoch of the same model, for the default
    cached candidate training and for online training."""
    return {f"{training}{' (default)' if training == 'cached' else ''}":
            _pb_phase_case(s, data, device, repeats, clock, base, training)
            for training in ("cached", "online")}


def _pb_phase_case(s: dict, data, device: torch.device, repeats: int, clock: _Clock,
                   base: torch.nn.Module, training: str) -> dict:
    """The dendrite-phase arm is what a user's epoch costs: the training loop and
    ``Grower.step`` after it, where cached candidate training fits the candidates on the
    recorded epoch and joins the winner (its phase is that one epoch). Each repeat starts a
    fresh dendrite phase, untimed."""
    import perforate as pf
    from perforate.errors import ExperimentError

    pb_cfg = pf.Config(mode="pb", candidate_training=training, patience=10**6, seed=0)
    loops = {name: _Loop(data, s["batch"], device) for name in ("pb", "plain")}
    plain = copy.deepcopy(base)
    plain_opt = _adam(plain.parameters())
    held: dict[str, Any] = {}
    step_times: list[float] = []

    def start_phase():
        grower = pf.Grower(pf.perforate(copy.deepcopy(base), pb_cfg), pb_cfg, optimizer_factory=_adam)
        grower.add_dendrites()  # starts a dendrite phase: candidates train, the rest is frozen
        held["grower"] = grower

    def phase_epoch():
        grower = held["grower"]
        score = loops["pb"].epoch(grower.model, grower.optimizer)
        start, _ = clock.now()
        grower.step(score)
        step_times.append(clock.now()[0] - start)
        if training == "cached" and grower.state.phase == "dendrite":
            raise ExperimentError("the cached dendrite phase did not end after one epoch")

    times = _paired({"pb dendrite phase": phase_epoch,
                     "plain": lambda: loops["plain"].epoch(plain, plain_opt)},
                    repeats, clock, 0.0, prepare={"pb dendrite phase": start_phase})
    step_s = statistics.median(step_times)
    memory = {}
    if training == "cached":  # one more phase, untimed: its memory against the cap
        start_phase()
        memory = {"peak_mb": _peak_memory_mb(phase_epoch, device), "cap_mb": pb_cfg.candidate_cache_mb}
    return _ratio(times, "pb dendrite phase", "plain",
                  CASE_TARGETS.get(("pb_phase_ratio", training), TARGETS["pb_phase_ratio"]),
                  candidates=pb_cfg.candidates, candidate_training=training,
                  candidate_steps=pb_cfg.candidate_steps if training == "cached" else None,
                  step_s=step_s, step_share=step_s / statistics.median(times["plain"]["t"]), **memory)


def _peak_memory_mb(run: Callable[[], Any], device: torch.device) -> float | None:
    """Peak memory (MiB) above where it stood while ``run`` runs: CUDA memory allocated on a
    GPU, else the process's resident set (sampled every 2 ms from /proc; None without it)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        before = torch.cuda.memory_allocated(device)
        run()
        torch.cuda.synchronize(device)
        return (torch.cuda.max_memory_allocated(device) - before) / 2**20
    statm = Path("/proc/self/statm")
    if not statm.exists():
        return None
    import threading

    page = os.sysconf("SC_PAGE_SIZE")

    def rss() -> int:
        return int(statm.read_text().split()[1]) * page

    before, peak, stop = rss(), [0], threading.Event()

    def sample() -> None:
        while not stop.is_set():
            peak[0] = max(peak[0], rss())
            time.sleep(0.002)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        run()
    finally:
        stop.set()
        sampler.join()
    return (max(peak[0], rss()) - before) / 2**20


def _layer_figures(s: dict, device: torch.device, repeats: int, clock: _Clock) -> dict:
    import perforate as pf
    from torch import nn

    out: dict[str, Any] = {}
    gen = torch.Generator().manual_seed(0)
    for name, kind, width, batch, side in s["layers"]:
        if kind == "linear":
            def make(c_out, width=width):
                return nn.Linear(width, c_out)
            shape = (batch, width)
        else:
            def make(c_out, width=width):
                return nn.Conv2d(width, c_out, 3, padding=1)
            shape = (batch, width, side, side)
        # the input of a hidden layer: its gradient is computed too
        x = torch.randn(shape, generator=gen).to(device).requires_grad_(True)
        for k in (1, 2, 4):
            modules = {"plain": make((k + 1) * width).to(device)}
            for mode in ("gd", "pb"):
                layer = _grown(pf.perforate(make(width).to(device), pf.Config(mode=mode)), k)
                layer.freeze_dendrites(mode == "pb")  # pb: frozen dendrites, as in a neuron phase
                modules[mode] = layer
            arms = {}
            for arm, module in modules.items():
                grad = torch.randn(module(x).shape, generator=gen).to(device)

                def run(module=module, grad=grad):
                    x.grad = None
                    for p in module.parameters():
                        p.grad = None
                    module(x).backward(grad)

                arms[arm] = run
            times = _paired(arms, repeats, clock, s["block_s"])
            for mode in ("gd", "pb"):
                out[f"{name}/{mode}/k={k}"] = _ratio(
                    times, mode, "plain",
                    WIDE_LAYER_TARGET if width >= WIDE_UNITS else TARGETS["dendrite_layer_ratio"],
                    input=list(shape),
                    plain=f"{kind} with {(k + 1) * width} outputs")
    return out


def _export_figures(s: dict, data, device: torch.device, repeats: int, clock: _Clock) -> dict:
    """Exported model against a plain one of equal parameters, eager and (full runs) compiled
    ahead of time (``pf.export(..., compile_for=...)``)."""
    import perforate as pf
    from perforate.experiments.data.models import build_model, width_for_params

    k = s["export_k"]
    model = _grown(pf.perforate(build_model("mlp", data, s["width"], seed=0)), k).to(device)
    exported = pf.export(model).eval()
    params = pf.count_parameters(exported)
    width = width_for_params("mlp", data, params)
    plain = build_model("mlp", data, width, seed=0).to(device).eval()
    compiled, compile_s = None, None
    if s["compile_export"]:
        started = time.perf_counter()
        try:
            compiled = pf.export(model, compile_for=data.x_val[:1].to(device))
            compile_s = round(time.perf_counter() - started, 1)
        except Exception as exc:  # no C++ compiler: the eager figures still stand
            Console(stderr=True).print(f"[yellow]AOTInductor compile skipped: {exc}"[:300])
    out: dict[str, Any] = {}
    detail = dict(dendrites=k, params=params, plain_params=pf.count_parameters(plain), plain_width=width)
    for batch in s["export_batches"]:
        x = data.x_val[:batch].to(device)
        if len(x) < batch:
            x = x.repeat(math.ceil(batch / len(x)), 1)[:batch]

        def call(m):
            def run():
                with torch.no_grad():
                    m(x)
            return run

        arms = {"exported": call(exported), "plain": call(plain)}
        if compiled is not None:
            arms["compiled"] = call(compiled)
        times = _paired(arms, repeats, clock, s["block_s"])
        target = CASE_TARGETS.get(("export_latency_ratio", f"batch={batch}"), TARGETS["export_latency_ratio"])
        out[f"batch={batch}"] = _ratio(times, "exported", "plain", target, **detail)
        if compiled is not None:
            out[f"batch={batch}, AOTInductor"] = _ratio(times, "compiled", "plain", target,
                                                        compile_s=compile_s, **detail)
    return out


def _peak_training_bytes(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> int:
    """Peak bytes of one Adam training step (``pf.peak_training_memory``), after a first step
    made the optimizer state resident."""
    from perforate.measure import peak_training_memory

    opt = _adam(model.parameters())

    def step():
        opt.zero_grad(set_to_none=True)
        torch.nn.functional.cross_entropy(model(x), y).backward()
        opt.step()

    step()
    opt.zero_grad(set_to_none=True)
    with peak_training_memory(model, opt) as peak:
        step()
    return peak.bytes


def _memory_figures(s: dict, data, device: torch.device) -> dict:
    import perforate as pf
    from perforate.experiments.data.models import build_model, width_for_params

    batch = s["memory_batch"]
    x = data.x_train[:batch].to(device)
    y = data.y_train[:batch].to(device)
    out: dict[str, Any] = {}
    for k in (1, 2, 4):
        model = _grown(pf.perforate(build_model("mlp", data, s["width"], seed=0)), k).to(device)
        params = pf.count_parameters(model)
        width = width_for_params("mlp", data, params)
        plain = build_model("mlp", data, width, seed=0).to(device)
        ours = _peak_training_bytes(model, x, y)
        theirs = _peak_training_bytes(plain, x, y)
        ratio = ours / theirs
        out[f"k={k}"] = {"median": ratio, "min": ratio, "max": ratio, "target": None, "met": None,
                         "bytes": ours, "plain_bytes": theirs, "params": params,
                         "plain_params": pf.count_parameters(plain), "batch": batch,
                         "mode": "gd (dendrites trainable)"}
    return out


def _snapshot_figures(s: dict, data, device: torch.device) -> dict:
    """Snapshot bytes per ``Config.snapshot_device`` with a growth on trial (see the module
    docstring)."""
    import perforate as pf
    from perforate import snapshots
    from perforate.experiments.data.models import build_model

    out: dict[str, Any] = {}
    for place in ("model", "cpu", "disk", "auto"):
        cfg = pf.Config(mode="gd", snapshot_device=place)
        model = pf.perforate(build_model("mlp", data, s["width"], seed=0), cfg).to(device)
        own = sum(t.numel() * t.element_size() for t in model.state_dict().values())
        grower = pf.Grower(model, cfg, optimizer_factory=_adam)
        grower.step(0.5)  # the best model
        grower.add_dendrites()  # the model from before the growth
        grower.step(0.6)  # the grown model's best, on trial
        held = [snapshots.nbytes(getattr(grower, key)) for key in ("_best", "_before", "_trial")]
        on_device = sum(b for b, where in held if where == device.type)
        ratio = on_device / own
        out[place] = {"median": ratio, "min": ratio, "max": ratio, "target": None, "met": None,
                      "bytes": on_device, "plain_bytes": own,
                      "host_bytes": sum(b for b, where in held if where == "cpu" and device.type != "cpu"),
                      "disk_bytes": sum(b for b, where in held if where == "disk"),
                      "resolved": snapshots.where(grower.model, place)}
        grower.finish()
    return out


# ---------------------------------------------------------------------- report
def _fmt_time(seconds: float) -> str:
    if seconds >= 1.0:
        return f"{seconds:.2f} s"
    if seconds >= 1e-3:
        return f"{seconds * 1e3:.2f} ms"
    return f"{seconds * 1e6:.0f} µs"


def _rows(results: dict) -> list[tuple[str, str, dict]]:
    rows = []
    for figure in TARGETS:
        entry = results.get(figure)
        if entry is None:
            continue
        if "median" in entry:
            rows.append((figure, "", entry))
        else:
            rows.extend((figure, case, sub) for case, sub in entry.items())
    return rows


def render_table(results: dict) -> Table:
    """A rich table of every ratio: median, min-max, target and whether it is met."""
    table = Table(title=f"perforate cost ({results['device']}, clock: {results['clock']}, "
                        f"{results['repeats']} interleaved repeats)")
    for col, justify in (("figure", "left"), ("case", "left"), ("ratio", "right"),
                         ("min–max", "right"), ("target", "right"), ("met", "center"),
                         ("wall ratio", "right"), ("ours / reference", "right")):
        table.add_column(col, justify=justify)
    for figure, case, e in _rows(results):
        met = "—" if e["met"] is None else ("[green]yes[/green]" if e["met"] else "[red]no[/red]")
        if "bytes" in e:
            detail = f"{e['bytes'] / 2**20:.2f} / {e['plain_bytes'] / 2**20:.2f} MiB"
        else:
            detail = f"{_fmt_time(e['numerator_s'])} / {_fmt_time(e['denominator_s'])}"
        if "step_s" in e:
            detail += f" (step {_fmt_time(e['step_s'])} = {100 * e['step_share']:.1f}%)"
        if e.get("peak_mb") is not None:
            detail += f", peak +{e['peak_mb']:.0f} MiB (cap {e['cap_mb']:g})"
        wall = f"{e['wall_median']:.3f}" if "wall_median" in e else "—"
        table.add_row(figure, case, f"{e['median']:.3f}", f"{e['min']:.3f}–{e['max']:.3f}",
                      "—" if e["target"] is None else f"≤ {e['target']:.2f}", met, wall, detail)
    return table


def reference_line(figure: dict) -> str:
    """One sentence for the perforatedai figure (a speed-up: the target is a minimum)."""
    per = figure["seconds_per_epoch"]
    verdict = "[green]met[/green]" if figure["met"] else "[red]not met[/red]"
    return (f"perforatedai {figure['perforatedai_version']} on the same MNIST-1D loop (batch "
            f"{_REFERENCE_BATCH}, {figure['epochs']} epochs, one growth after "
            f"{figure['growth_after']}, median of {figure['repeats']} runs): plain "
            f"{_fmt_time(per['plain'])}, perforate {_fmt_time(per['perforate'])} (out_dir set), "
            f"perforatedai {_fmt_time(per['perforatedai'])} per epoch: perforate is "
            f"{figure['median']:.1f}x faster per epoch (target >= {figure['target']:.0f}x: {verdict}).")


def _device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def run_cost(quick: bool = False, device: str = "cpu", repeats: int | None = None,
             reference: bool = True) -> dict:
    """Measure every figure and return the JSON-able results (see the module docstring);
    ``reference``: also time perforatedai where it is installed (not with ``quick``)."""
    dev = _cost_device(device)
    s = dict(_QUICK if quick else _FULL)
    reference = reference and not quick
    repeats = s["repeats"] if repeats is None else repeats
    if repeats < 1:
        raise typer.BadParameter("repeats must be at least 1", param_hint="--repeats")
    clock = _Clock(dev)
    threads = torch.get_num_threads()
    started = time.perf_counter()
    load_before = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    try:
        torch.set_num_threads(1)
        with torch.random.fork_rng(devices=[dev] if dev.type == "cuda" else []):
            torch.manual_seed(0)
            data = _cost_data(s)
            results: dict[str, Any] = {
                "schema": "perforate-cost/1", "quick": quick, "device": str(dev),
                "device_name": _device_name(dev), "cpu_count": os.cpu_count(),
                "torch": torch.__version__, "threads": torch.get_num_threads(), "clock": clock.name,
                "repeats": repeats,
                "epoch_model": f"mlp width {s['width']} on {s['data']}, batch {s['batch']}",
                "targets": TARGETS,
            }
            results.update(_figures(s, data, dev, repeats, clock, quick, reference))
    finally:
        torch.set_num_threads(threads)
    results["seconds"] = round(time.perf_counter() - started, 2)
    results["load_average"] = {"start": load_before,
                               "end": os.getloadavg()[0] if hasattr(os, "getloadavg") else None}
    return results


def _cost_device(device: str) -> torch.device:
    """``--device`` as a torch device the cost bench runs on (cpu, or cuda where available)."""
    try:
        dev = torch.device(device)
    except RuntimeError as exc:
        raise typer.BadParameter(f"{device!r} is not a torch device; use cpu or cuda",
                                 param_hint="--device") from exc
    if dev.type not in ("cpu", "cuda"):
        raise typer.BadParameter(f"the cost bench runs on cpu or cuda, not {dev.type}",
                                 param_hint="--device")
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise typer.BadParameter("CUDA is not available on this machine; use --device cpu",
                                 param_hint="--device")
    return dev


def _cost_data(s: dict):
    """The data the epoch figures train on: synthetic (``--quick``) or a harness dataset."""
    if s["data"] == "synthetic":
        return _synthetic()
    from perforate.experiments.data.datasets import load_dataset

    return load_dataset(s["data"], seed=0)


def _figures(s: dict, data, dev: torch.device, repeats: int, clock: _Clock, quick: bool,
             reference: bool) -> dict[str, Any]:
    """Every measured figure, in the order the results file lists them."""
    from perforate.experiments.data.models import build_model

    out: dict[str, Any] = dict(_epoch_figures(s, data, dev, repeats, clock))
    out["pb_phase_per_growth"] = cost_growth.pb_phase_figures(
        quick, None if s["data"] == "synthetic" else data, dev, min(repeats, s["family_repeats"]),
        clock, _paired, _ratio, _Loop, _adam)
    out["grown_epoch_ratio"] = cost_growth.grown_epoch_figure(
        data, s["batch"], dev, repeats, clock, _paired, _ratio, _Loop, _adam,
        build_model("mlp", data, s["width"], seed=0).to(dev), _grown)
    out["dendrite_layer_ratio"] = _layer_figures(s, dev, repeats, clock)
    out["export_latency_ratio"] = _export_figures(s, data, dev, repeats, clock)
    out["peak_memory_ratio"] = _memory_figures(s, data, dev)
    out["snapshot_memory"] = _snapshot_figures(s, data, dev)
    if reference and reference_available():
        out["reference_ratio"] = reference_cost.reference_figure(
            build_model("mlp", data, s["width"], seed=0).to(dev),
            lambda: _Loop(data, _REFERENCE_BATCH, dev), _adam)
    return out


def cost_command(
    json_path: Optional[Path] = typer.Option(
        None, "--json", help="Also write every figure as JSON to this file."),
    quick: bool = typer.Option(
        False, "--quick", help="Tiny sizes and 2 repeats: a smoke run, not a measurement."),
    device: str = typer.Option("cpu", "--device", help="cpu, or cuda where a GPU is available."),
    repeats: Optional[int] = typer.Option(
        None, "--repeats", help="Interleaved repeats per figure (default 25; 2 with --quick)."),
    reference: bool = typer.Option(
        True, "--reference/--no-reference",
        help="Also time perforatedai on the MNIST-1D loop where it is installed (not with --quick)."),
) -> None:
    """Measure what dendrites, wrapping and the growth controller cost, side by side, in one run."""
    results = run_cost(quick=quick, device=device, repeats=repeats, reference=reference)
    console = Console()
    if not console.is_terminal:  # a pipe or a log file: do not squeeze the table into 80 columns
        console = Console(width=150)
    console.print(render_table(results))
    if "reference_ratio" in results:
        console.print(reference_line(results["reference_ratio"]))
    load = {k: "n/a" if v is None else f"{v:.1f}" for k, v in results["load_average"].items()}
    console.print(f"{results['seconds']:.0f} s; 1-minute load average {load['start']} at start, "
                  f"{load['end']} at end. Ratios are medians over interleaved repeats: other "
                  "jobs on a shared machine move absolute times, far less the ratios.")
    if json_path is not None:
        json_path = Path(json_path)
        json_path.parent.mkdir(parents=True, exist_ok=True)
        write_json(json_path, results)
        console.print(f"wrote {json_path}")


if __name__ == "__main__":  # pragma: no cover
    typer.run(cost_command)
