"""The frontier: do dendrites beat width? (``perforate bench frontier``)

Plain models at a ladder of widths trace test score against parameters (and FLOPs); dendritic
models grown from the narrow widths are read against that curve. Every run of one seed shares
the seed's data split, initialisation of the starting width and data order, the epoch budget,
the stopping rule and the improvement rule (``Config.better``), so a dendritic run and the plain
run of its starting width are paired.

- The *plain frontier* of a seed is the upper (Pareto) envelope of its plain points: the best
  score any plain width reaches with at most that many parameters, interpolated linearly in
  log-parameters between envelope points and flat past the widest.
- A dendritic point's *distance* is its test score minus the frontier of the same seed at its
  own parameter count; reported as mean ± sample std over seeds and the number of seeds above
  the frontier. Its *gain* is its test score minus the plain model of its starting width,
  same seed (the no-regret comparison).
- Stopping rules: ``"budget"`` trains every arm for ``max_epochs`` and keeps the best
  validation epoch (the grower gets ``Config.max_epochs``); ``"patience"`` stops plain runs at
  a plateau (``patience`` epochs without a smoothed gain) and dendritic runs at a plateau where
  growth cannot go on.

Plain *controls* (``controls``) are more ladders beside the dense one, arms ``plain-<choice>``
(not to be confused with ``control-<arm>``, the width-matched control of a grown arm): the same
model with its first input-reading layer restricted to ``control_inputs`` inputs per unit, local
windows or random subsets (the mask mechanism of restricted-input dendrites on a plain layer:
``models.build_sparse_model`` for a harness task, :func:`pf.restrict_inputs` on a user's model),
so a reader sees whether dendrites or sparsity bought a gain. Each dendritic point is also read
against every control's frontier and against the best plain frontier of all ladders together
(``distance_best``, counted in non-zero parameters).

Results go to ``out/results.json`` (schema ``perforate-frontier/1``) after every run; a
restarted bench skips finished runs.

Every run trains a :class:`~perforate.experiments.task.Task` through
:func:`~perforate.experiments.task.fit`: a harness dataset and model are one such task
(:func:`~perforate.experiments.task.harness_task`), a user's own factory and loaders another
(:mod:`perforate.experiments.frontier.study`). Scores may improve upwards (accuracy) or downwards (a loss,
``direction="min"``); distances and gains are signed so that positive always means better.
Arms are pluggable: beside ``plain``, the dendritic variants and ``reference``, a caller may pass
``arms={name: fn}`` where ``fn(run: ArmRun) -> TrainResult`` trains a starting width its own way.
"""
from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

import torch

import perforate as pf
from perforate.errors import ExperimentError
from perforate.experiments.frontier.distances import derive
from perforate.experiments.frontier.protocol import (CONTROL, PLAIN, REFERENCE, SCHEMA,
                                                     FrontierProtocol, parse_control)
from perforate.experiments.frontier.task import Task, fit, harness_task
from perforate.experiments.harness import results as res
from perforate.experiments.harness.settings import finite_number
from perforate.files import write_json

log = logging.getLogger(__name__)

@dataclass(frozen=True)
class FrontierRun:
    """One (arm, starting width, seed); arm "plain" for the ladder."""

    arm: str
    width: float
    seed: int

    @property
    def run_id(self) -> str:
        return f"{self.arm}-w{self.width}-s{self.seed}"


def plan_frontier(p: FrontierProtocol) -> list[FrontierRun]:
    """Seed by seed: the plain ladder, the sparse controls' ladders, then each dendritic arm
    from each starting width."""
    runs = []
    for seed in p.seeds:
        runs += [FrontierRun("plain", w, seed) for w in p.widths]
        for control in p.controls:
            runs += [FrontierRun(f"{PLAIN}-{control}", w, seed) for w in p.ladder_of_controls]
        for arm in p.arms:
            starts = p.starts_of_reference if arm == REFERENCE else p.grow_widths
            runs += [FrontierRun(arm, w, seed) for w in starts]
    return runs


@dataclass
class ArmRun:
    """One run of an arm, as an arm's function receives it: ``fit()`` trains the task's model
    at this width and seed under the protocol's budget, optimizer and stopping rule."""

    protocol: FrontierProtocol
    task: Task
    spec: FrontierRun
    folder: Path
    on_epoch: Callable[[int, float], None] | None = None
    done: Mapping[str, dict[str, Any]] = field(default_factory=dict)
    """Records of the runs finished so far, by run id (a control reads its grown run's)."""
    extra: dict[str, Any] = field(default_factory=dict)
    """Fields an arm adds to its run's record (e.g. the control's width)."""

    @property
    def width(self) -> float:
        return self.spec.width

    @property
    def seed(self) -> int:
        return self.spec.seed

    def fit(self, **overrides: Any):
        """:func:`~perforate.experiments.task.fit` with this run's settings; ``overrides``
        (``width``, ``mode``, ``config``, ``model``, ``max_epochs``...) replace them."""
        p = self.protocol
        kwargs: dict[str, Any] = dict(
            max_epochs=p.max_epochs, epoch_callback=self.on_epoch, name=self.spec.run_id,
            optimizer=lambda params: torch.optim.Adam(params, lr=p.lr, weight_decay=p.weight_decay))
        kwargs.update(overrides)
        width = kwargs.pop("width", self.spec.width)
        return fit(self.task, width, self.spec.seed, **kwargs)


ArmFn = Callable[[ArmRun], Any]
"""Trains one run of an arm and returns its TrainResult."""


def _plain(run: ArmRun):
    p = run.protocol
    return run.fit(config=p.stopper_config(), early_stopping=p.stopping == "patience")


def _dendritic(run: ArmRun):
    p = run.protocol
    cfg = p.dendritic_config(run.spec.arm, run.seed)
    return run.fit(mode=cfg.mode, config=cfg, out_dir=run.folder if p.run_outputs else None)


def _reference(run: ArmRun):
    from perforate.experiments.harness.reference import train_reference

    p = run.protocol
    if run.task.harness is None:
        raise ExperimentError("arm 'reference' (perforatedai) runs only on the harness's own "
                              "datasets and models; leave it out for your own model")
    dataset, model = run.task.harness
    return train_reference(dataset, model, run.width, seed=run.seed, max_epochs=p.max_epochs,
                           lr=p.lr, batch_size=p.batch_size, weight_decay=p.weight_decay,
                           folder=run.folder)


def _control(run: ArmRun):
    """The width-matched control of a grown run: the plain model whose width gives the grown
    model's parameter count, trained as many epochs with the optimizer rebuilt at the epochs
    where the grown run restructured."""
    from perforate.experiments.frontier.task import matching_width

    grown_arm = run.spec.arm[len(CONTROL):]
    grown = run.done.get(FrontierRun(grown_arm, run.width, run.seed).run_id)
    if grown is None:
        raise ExperimentError(f"arm {run.spec.arm!r} needs the run of arm {grown_arm!r} from "
                              f"width {run.width}, seed {run.seed}: list {grown_arm!r} before it")
    width = matching_width(run.task, grown["params"], start=run.width)
    run.extra["control_width"] = width
    return run.fit(width=width, config=run.protocol.stopper_config(), early_stopping=False,
                   max_epochs=grown["epochs"], restart_epochs=grown["restart_epochs"])


def sparse_model(task: Task, width: float, seed: int, inputs: int, choice: str = "local",
                 expand: int = 1) -> torch.nn.Module:
    """The plain sparse control's model: ``task``'s model at ``width`` whose first layer that
    reads more than ``inputs`` inputs (a Linear's features, an ungrouped convolution's input
    channels) reads only ``inputs`` of them per unit, a local window or a random subset drawn
    from ``seed``. A harness task builds it with ``models.build_sparse_model`` (``expand``
    widens an MLP's first layer); a user's model gets :func:`pf.restrict_inputs` on that layer
    (``expand`` must be 1). Initialised as ``fit`` initialises the plain run of that seed."""
    from perforate.connectivity import input_size

    if task.harness is not None:
        from perforate.experiments.data.datasets import load_dataset
        from perforate.experiments.data.models import build_sparse_model

        dataset, model = task.harness
        return build_sparse_model(model, load_dataset(dataset, seed=seed), int(width), inputs,
                                  choice, seed=seed, expand=expand)
    if expand != 1:
        raise ExperimentError(f"a plain control with -x{expand} widens the harness MLP's first "
                              "layer; on your own model use local or random (no -xN), or widen "
                              "your factory's first layer yourself")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)  # as fit() builds the plain run of this seed
        model = task.build(width, seed)
    layer = next((m for m in model.modules() if (input_size(m) or 0) > inputs), None)
    if layer is None:
        raise ExperimentError(f"the plain control cannot restrict {task.model_name} at width "
                              f"{width!r}: it has no Linear or ungrouped convolution reading more "
                              f"than {inputs} inputs; lower control_inputs (--control-inputs) or "
                              "leave the controls out")
    pf.restrict_inputs(layer, inputs, choice, torch.Generator().manual_seed(seed))
    return model


def _sparse_plain(run: ArmRun):
    """A plain sparse control (``plain-<choice>``): the plain arm on :func:`sparse_model`."""
    p = run.protocol
    choice, expand = parse_control(run.spec.arm[len(PLAIN) + 1:])
    model = sparse_model(run.task, run.width, run.seed, p.control_inputs, choice, expand)
    return run.fit(model=model, config=p.stopper_config(), early_stopping=p.stopping == "patience")


def arm_function(p: FrontierProtocol, arm: str, arms: Mapping[str, ArmFn] | None = None) -> ArmFn:
    """How ``arm`` trains: a caller's function, plain, a plain sparse control
    (``plain-<choice>``), reference, a dendritic variant, or the width-matched control of one
    (``control-<variant>``)."""
    if arms and arm in arms:
        return arms[arm]
    if arm == "plain":
        return _plain
    if arm.startswith(f"{PLAIN}-"):
        parse_control(arm[len(PLAIN) + 1:])
        return _sparse_plain
    if arm == REFERENCE:
        return _reference
    if arm in p.variants:
        return _dendritic
    if arm.startswith(CONTROL) and arm[len(CONTROL):] in p.variants:
        return _control
    raise ExperimentError(f"arm {arm!r} has no function: pass arms={{{arm!r}: fn}}")


def run_one(p: FrontierProtocol, spec: FrontierRun, folder: Path,
            epoch_callback: Callable[[int, float], None] | None = None, task: Task | None = None,
            arms: Mapping[str, ArmFn] | None = None,
            done: Mapping[str, dict[str, Any]] | None = None) -> dict[str, Any]:
    """Train one run and return its record (JSON-able); ``done``: the finished runs' records."""
    task = task or harness_task(p.dataset, p.model, p.batch_size)
    run = ArmRun(p, task, spec, folder, epoch_callback, done or {})
    result = arm_function(p, spec.arm, arms)(run)
    record = {"run_id": spec.run_id, "arm": spec.arm, "width": spec.width, "seed": spec.seed,
              **{k: v for k, v in result.to_dict().items() if k != "history"}, **run.extra}
    record["decisions"] = [{"epoch": h["epoch"], "event": h["event"]}
                           for h in result.history if h.get("event")]
    return record


# ---------------------------------------------------------------------------- running
def open_frontier(out: Path, protocol: FrontierProtocol, command: str) -> dict[str, Any]:
    """The results document to extend: the saved one if its protocol matches, else a new one."""
    path = out / res.RESULTS
    if not path.exists():
        return {"schema": SCHEMA, "command": command, "protocol": protocol.to_dict(),
                "environment": res.environment(), "runs": []}
    doc = load_frontier(out)
    saved = FrontierProtocol.from_dict(doc["protocol"])
    if saved.key() != protocol.key():
        diff = [k for k, v in protocol.key().items() if saved.key().get(k) != v]
        raise ExperimentError(f"{out} holds frontier results of a different protocol (differs in "
                              f"{', '.join(diff)}); use the same options to resume, or a fresh --out")
    merged = protocol.to_dict()
    for name in ("widths", "grow_widths", "arms", "seeds", "controls"):
        merged[name] = saved_list = list(getattr(saved, name))
        saved_list += [x for x in getattr(protocol, name) if x not in saved_list]
    merged["variants"] = {**saved.variants, **protocol.variants}
    doc["protocol"], doc["command"] = merged, command or doc.get("command", "")
    return doc


def is_frontier(out: str | Path) -> bool:
    """True when ``out/results.json`` was written by a frontier bench (or the demo)."""
    try:
        return json.loads((Path(out) / res.RESULTS).read_text()).get("schema") == SCHEMA
    except (OSError, ValueError, AttributeError):
        return False


def load_frontier(out: str | Path) -> dict[str, Any]:
    """Read ``out/results.json`` of a frontier bench (or that file's path)."""
    return res.load_results(out, SCHEMA, "perforate bench frontier")


def save_frontier(out: Path, doc: dict[str, Any]) -> dict[str, Any]:
    doc["frontier"] = derive(doc["runs"], doc["protocol"].get("direction", "max") == "max")
    write_json(out / res.RESULTS, doc)
    return doc


@dataclass
class FrontierPlan:
    """What a frontier is about to run: the runs left, their estimated time and what a time cap
    dropped (:mod:`perforate.experiments.frontier.budget`). Made by :func:`prepare_frontier`."""

    protocol: FrontierProtocol
    task: Task
    out: Path
    doc: dict[str, Any]
    todo: list[FrontierRun]
    seconds: float | None
    """Estimated seconds of ``todo`` at full budgets (None when nothing is left)."""
    dropped: list[str] = field(default_factory=list)
    costs: Any = None
    arms: Mapping[str, ArmFn] | None = None
    max_minutes: float | None = None
    started: float = 0.0
    """``time.perf_counter()`` when preparation began: a time cap counts from there."""

    def describe(self) -> str:
        """One line: the runs, the time they take, and what the cap dropped."""
        done = len(self.doc["runs"])
        if not self.todo:
            return f"every run is already in {self.out} ({done})"
        costs = self.costs
        timing = ""
        if costs is not None:
            timing = (f" (a timed epoch took {costs.narrow[1]:.2f} s at {costs.narrow[0]:,} "
                      f"parameters, {costs.wide[1]:.2f} s at {costs.wide[0]:,})")
        line = (f"{len(self.todo)} training run(s) of at most {self.protocol.max_epochs} epochs "
                f"({done} already in {self.out}): about {_minutes(self.seconds)}{timing}")
        if self.dropped:
            line += (f"; to fit {self.max_minutes:g} min, dropped {', '.join(self.dropped)} "
                     "(order: " + "; ".join(_trim_order()) + ")")
        return line


def _minutes(seconds: float | None) -> str:
    if seconds is None:
        return "no time"
    return f"{seconds:.0f} s" if seconds < 90 else f"{seconds / 60:.1f} min"


def _trim_order() -> tuple[str, ...]:
    from perforate.experiments.frontier.budget import TRIM_ORDER

    return TRIM_ORDER


def _time_epochs(protocol: FrontierProtocol, task: Task, params: dict[float, int]):
    """Time plain epochs at the narrowest and widest ladder widths: the faster of the first
    two (the first pays one-time costs: allocation, caches, lazy imports)."""
    from perforate.experiments.frontier.budget import Costs

    timed = {}
    for width in (min(protocol.widths), max(protocol.widths)):
        if width not in timed:
            result = fit(task, width, protocol.seeds[0], max_epochs=2, early_stopping=False,
                         optimizer=lambda ps: torch.optim.Adam(ps, lr=protocol.lr))
            timed[width] = (params[width], min(row["seconds"] for row in result.history))
    return Costs(timed[min(timed)], timed[max(timed)], params)


def prepare_frontier(protocol: FrontierProtocol, out: str | Path, command: str = "",
                     task: Task | None = None, arms: Mapping[str, ArmFn] | None = None,
                     max_minutes: float | None = None) -> FrontierPlan:
    """Check everything that can fail before training (the task, the widths, the folder, a
    saved protocol), time a first epoch, and drop widths or seeds to fit ``max_minutes``."""
    import time

    from perforate.experiments.frontier import budget
    from perforate.experiments.frontier.task import parameter_counts

    started = time.perf_counter()
    task = task or harness_task(protocol.dataset, protocol.model, protocol.batch_size)
    if REFERENCE in protocol.arms:
        from perforate.experiments.harness.reference import available

        if task.harness is None:
            raise ExperimentError("arm 'reference' (perforatedai) runs only on the harness's own "
                                  "datasets and models; leave it out for your own model")
        if not available():
            raise ExperimentError("arm 'reference' needs perforatedai: pip install --no-deps "
                                  "perforatedai==3.2.9 matplotlib pandas pyyaml safetensors requests")
    for arm in protocol.arms:
        arm_function(protocol, arm, arms)
    for control in protocol.controls:  # a model the control cannot restrict: refused now
        choice, expand = parse_control(control)
        for width in sorted(set(protocol.ladder_of_controls)):
            sparse_model(task, width, protocol.seeds[0], protocol.control_inputs, choice, expand)
    if max_minutes is not None:
        finite_number("max_minutes", max_minutes, minimum=0.0, strict=True)
    out = res.prepare_out_dir(out)
    widths = sorted(set(protocol.widths) | set(protocol.grow_widths)
                    | set(protocol.reference_widths or []) | set(protocol.ladder_of_controls if protocol.controls else []))
    params = parameter_counts(task, widths)
    doc = open_frontier(out, protocol, command)
    if task.harness is None:
        doc["task"] = task.describe(protocol.lr)
    done = {r["run_id"] for r in doc["runs"]}
    plan = FrontierPlan(protocol, task, out, doc, [], None, arms=arms, max_minutes=max_minutes,
                        started=started)
    if not [r for r in plan_frontier(protocol) if r.run_id not in done]:
        return plan
    plan.costs = _time_epochs(protocol, task, params)
    def seconds(p: FrontierProtocol) -> float:
        return budget.estimate_seconds(plan_frontier(p), plan.costs, done, p.max_epochs)

    if max_minutes is not None:
        left = max_minutes * 60 - (time.perf_counter() - started)
        plan.protocol, plan.dropped = budget.trim(protocol, seconds, left)
    plan.todo = [r for r in plan_frontier(plan.protocol) if r.run_id not in done]
    plan.seconds = seconds(plan.protocol)
    return plan


def execute_frontier(plan: FrontierPlan, on_run: Callable[[FrontierRun, int, int], None] | None = None,
                     on_epoch: Callable[[int, float], None] | None = None) -> dict[str, Any]:
    """Run the plan's runs, saving ``results.json`` after each; returns the document. With a
    time cap, no run starts once the cap is spent (the rest stay to do: run again to resume)."""
    import time

    start = plan.started or time.perf_counter()
    out, doc, p = plan.out, plan.doc, plan.protocol
    for i, spec in enumerate(plan.todo):
        if plan.max_minutes is not None and time.perf_counter() - start > plan.max_minutes * 60:
            log.warning("the %g-minute cap is spent: %d run(s) not started; run again to resume",
                        plan.max_minutes, len(plan.todo) - i)
            break
        if on_run is not None:
            on_run(spec, i, len(plan.todo))
        done = {r["run_id"]: r for r in doc["runs"]}
        doc["runs"].append(run_one(p, spec, out / "runs" / spec.run_id, on_epoch, plan.task,
                                   plan.arms, done))
        save_frontier(out, doc)
    return save_frontier(out, doc)


def run_frontier(protocol: FrontierProtocol, out: str | Path, command: str = "",
                 on_run: Callable[[FrontierRun, int, int], None] | None = None,
                 on_epoch: Callable[[int, float], None] | None = None, task: Task | None = None,
                 arms: Mapping[str, ArmFn] | None = None,
                 max_minutes: float | None = None) -> dict[str, Any]:
    """Run every (arm, width, seed) not yet in ``out/results.json``; returns the document.

    ``task`` is what trains (default: the protocol's harness dataset and model); ``arms`` adds
    arms trained by the caller's functions. ``on_run(run, index, total)`` is called before each
    run still to do (``index`` of ``total`` runs left), ``on_epoch(epoch, score)`` after every
    epoch of the plain and perforate runs.
    """
    return execute_frontier(prepare_frontier(protocol, out, command, task, arms, max_minutes),
                            on_run, on_epoch)
