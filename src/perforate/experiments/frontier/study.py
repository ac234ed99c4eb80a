"""Do dendrites help *your* model? The frontier and its controls on your model, data and loop.

::

    from perforate.experiments.study import dendrites_vs_width

    result = dendrites_vs_width(make_model, loaders, widths=[8, 16, 32, 64, 128],
                                grow_widths=[8, 16], seeds=3, epochs=30, max_minutes=10)
    print(result.verdict)           # "Dendrites matched width at equal parameters on ...: ..."
    result.table                    # one row per run (pandas DataFrame)
    result.distances                # per arm and starting width: distance to the frontier ± std

``make_model(width)`` builds a fresh model whose size grows with ``width``; ``loaders`` is
``(train, val, test)`` or a function returning them. Plain models at every width trace the
frontier; dendritic models (gd and pb by default) grow from ``grow_widths``; every run gets the
same budget, stopping rule and seed (initialisation and data order), so a grown model and the
plain model it grew from are paired. Runs are saved to ``out/results.json`` as they finish: run
the same call again after Ctrl-C to resume. ``out`` also gets ``report.md`` and the graphs,
exactly as ``perforate bench frontier`` writes them (which runs the harness's own tasks through
this same code).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterable, Mapping, Sequence

from perforate.experiments.frontier.protocol import DEFAULT_VARIANTS, FrontierProtocol
from perforate.experiments.frontier.runs import ArmFn, execute_frontier, prepare_frontier
from perforate.experiments.frontier.task import Task

if TYPE_CHECKING:  # pragma: no cover
    import pandas

log = logging.getLogger(__name__)

__all__ = ["FrontierResult", "Task", "dendrites_vs_width", "frontier_result"]


@dataclass
class FrontierResult:
    """What a frontier found: the verdict, the numbers and where the files are."""

    doc: dict[str, Any]
    """The results document (``out/results.json``)."""
    out: Path
    report: Path
    plots: dict[str, Path]
    """``{"params": ..., "flops": ...}``: score against parameters and against FLOPs."""
    complete: bool
    """False when a time cap stopped it before every planned run (run again to resume)."""

    @property
    def verdict(self) -> str:
        """One sentence: dendrites beat, matched or lost to width, by how much over how many seeds."""
        from perforate.experiments.frontier.report import headline

        return headline(self.doc)

    @property
    def verdict_lines(self) -> list[str]:
        """The verdict and the sentences under it in the report."""
        from perforate.experiments.frontier.report import verdict

        return verdict(self.doc)

    @property
    def table(self) -> pandas.DataFrame:
        """One row per run: arm, width, seed, scores, parameters, FLOPs, dendrites, epochs, seconds."""
        import pandas as pd

        columns = ["arm", "width", "seed", "test_score", "val_score", "params",
                   "flops_per_sample", "dendrites", "epochs", "best_epoch", "seconds"]
        rows = [{c: r.get(c) for c in columns} for r in self.doc["runs"]]
        return pd.DataFrame(rows, columns=columns)

    @property
    def distances(self) -> pandas.DataFrame:
        """Per dendritic arm and starting width: its distance to the plain frontier at equal
        parameters and FLOPs (mean, std over seeds; positive is better than width), seeds
        above, and its gain over the plain model it grew from; with plain sparse controls also
        its distance to the best plain frontier of all ladders (``distance_best``) and the
        ladder best at its size (``best_plain``)."""
        import pandas as pd

        rows = []
        for pt in self.doc["frontier"]["points"]:
            gain = pt["gain"] or {"mean": None, "std": None}
            rows.append({"arm": pt["arm"], "width": pt["width"], "seeds": pt["distance"]["n"],
                         "distance": pt["distance"]["mean"], "distance_std": pt["distance"]["std"],
                         "above": pt["above"], "distance_flops": pt["distance_flops"]["mean"],
                         "distance_flops_std": pt["distance_flops"]["std"],
                         "gain": gain["mean"], "gain_std": gain["std"],
                         "params": pt["params"]["mean"], "dendrites": pt["dendrites"]["mean"],
                         "test_score": pt["test_score"]["mean"]})
            if "distance_best" in pt:
                rows[-1].update(distance_best=pt["distance_best"]["mean"],
                                distance_best_std=pt["distance_best"]["std"],
                                best_plain=pt["best_plain"])
        columns = ["arm", "width", "seeds", "distance", "distance_std", "above", "distance_flops",
                   "distance_flops_std", "gain", "gain_std", "params", "dendrites", "test_score"]
        if "controls" in self.doc["frontier"]:
            columns += ["distance_best", "distance_best_std", "best_plain"]
        return pd.DataFrame(rows, columns=columns)

    def __str__(self) -> str:
        return f"{self.verdict}\nreport: {self.report}"


def frontier_result(out: str | Path, complete: bool = True) -> FrontierResult:
    """Draw the report and graphs of ``out`` and wrap its results (also for a finished run)."""
    from perforate.experiments.frontier.runs import load_frontier
    from perforate.experiments.frontier.report import render_frontier

    out = Path(out)
    report = render_frontier(out)
    plots = {"params": out / "frontier-params.png", "flops": out / "frontier-flops.png"}
    return FrontierResult(load_frontier(out), out, report,
                          {k: v for k, v in plots.items() if v.exists()}, complete)


def dendrites_vs_width(
    make_model: Callable[..., Any], data: Any, *, widths: Sequence[float],
    grow_widths: Sequence[float] | None = None, arms: Sequence[str] = ("gd", "pb"),
    seeds: int | Sequence[int] = 3, epochs: int = 50, stopping: str = "budget",
    patience: int = 10, train_epoch: Callable | None = None,
    evaluate: Callable[[Any, Iterable], float] | None = None, loss: Callable | None = None,
    optimizer: Callable | None = None, lr: float = 1e-3, metric: str | Callable | None = None,
    direction: str | None = None, kind: str = "classification",
    example_input: Callable[[Any], Any] | None = None,
    variants: Mapping[str, Mapping[str, Any]] | None = None,
    config: Mapping[str, Any] | None = None, custom_arms: Mapping[str, ArmFn] | None = None,
    controls: Sequence[str] = (), control_inputs: int = 8,
    control_widths: Sequence[int] | None = None, max_minutes: float | None = None, out: str | Path = "perforate-frontier",
    progress: bool = True, name: str = "",
) -> FrontierResult:
    """Plain ``make_model(width)`` at every width against dendrites grown from ``grow_widths``.

    Args:
        make_model: ``make_model(width)`` -> a fresh ``nn.Module`` (a ``seed`` parameter gets the seed).
        data: ``(train, val, test)`` loaders or a function returning them (``seed=`` if it has one).
        widths: the plain ladder (ints, or float scales).
        grow_widths: where the dendritic arms start (default: the narrowest two widths).
        arms: dendritic arms: ``gd``, ``pb``, names in ``variants`` or ``custom_arms``.
        seeds: how many seeds (0..N-1), or which.
        epochs: the budget of every run; ``stopping="budget"`` trains it all and keeps the best
            validation epoch, ``"patience"`` stops at a plateau (``patience`` epochs).
        train_epoch: ``train_epoch(model, loader, optimizer)`` trains one epoch your way (it may
            return the mean loss); default: ``(x, y)`` batches, ``loss``.
        evaluate: ``evaluate(model, loader) -> float``: your metric; needs ``direction``.
        loss: default loop's loss (default: cross-entropy, or MSE for ``kind="regression"``).
        optimizer: ``optimizer(params) -> torch.optim.Optimizer`` (default: Adam at ``lr``);
            it is called again whenever growth restructures the model.
        metric, direction: ``accuracy``/``mse``/``mae``/``r2`` or ``metric(outputs, targets)``,
            and ``"max"``/``"min"`` (default: accuracy ``max``, or MSE ``min`` for regression).
        example_input: batch -> the model's input, to count FLOPs when batches are not
            ``(x, y)`` (e.g. ``lambda b: b["input_ids"]``); without it FLOPs are left out.
        variants: more dendritic arms, ``{name: {"mode": "pb", <Config field>: value}}``.
        config: :class:`perforate.Config` overrides for every dendritic arm.
        custom_arms: ``{name: fn}`` arms trained by ``fn(run: ArmRun) -> TrainResult``.
        controls: plain sparse ladders, ``"local"`` or ``"random"`` (arms ``plain-local``...):
            your model with its first layer reading more than ``control_inputs`` inputs
            restricted to ``control_inputs`` per unit (:func:`perforate.restrict_inputs`), at
            ``control_widths`` (default: ``widths``); a model without such a Linear or
            convolution is refused before any training.
        max_minutes: a time cap: widths and seeds are dropped in a stated order to fit
            (:mod:`perforate.experiments.frontier.budget`), and no run starts once it is spent.
        out: the results folder (``results.json``, ``report.md``, PNGs, ``runs/``).
        progress: show the plan and progress bars on stderr.
        name: the model's name in the report (default: ``make_model``'s qualified name).

    Returns:
        a :class:`FrontierResult`. Raises :class:`perforate.errors.ExperimentError` (before any
        training) when the factory ignores its width, a loader is empty, or a setting is bad.
    """
    a = dict(locals())  # every argument above, by name
    task = Task(a["make_model"], a["data"], train_epoch=a["train_epoch"], evaluate=a["evaluate"],
                loss=a["loss"], optimizer=a["optimizer"], metric=a["metric"],
                direction=a["direction"], kind=a["kind"], model_name=a["name"],
                example_input=a["example_input"])
    return _run_study(task, _study_protocol(task, a), a)


def _study_protocol(task: Task, a: dict[str, Any]) -> FrontierProtocol:
    """The :class:`FrontierProtocol` of :func:`dendrites_vs_width`'s arguments ``a``."""
    widths = sorted(a["widths"])
    seeds, grow_widths, control_widths = a["seeds"], a["grow_widths"], a["control_widths"]
    all_variants = {**DEFAULT_VARIANTS, **{k: dict(v) for k, v in (a["variants"] or {}).items()}}
    return FrontierProtocol(
        dataset=task.data_name, model=task.model_name, widths=list(widths),
        grow_widths=list(grow_widths) if grow_widths is not None else widths[:2],
        arms=list(a["arms"]), variants=all_variants,
        seeds=list(range(seeds)) if isinstance(seeds, int) else list(seeds),
        max_epochs=a["epochs"], patience=a["patience"], stopping=a["stopping"], lr=a["lr"],
        config=dict(a["config"] or {}), metric=task.metric_name, direction=task.direction,
        custom_arms=list(a["custom_arms"] or {}), controls=list(a["controls"]),
        control_inputs=a["control_inputs"],
        control_widths=list(control_widths) if control_widths is not None else None)


def _run_study(task: Task, protocol: FrontierProtocol, a: dict[str, Any]) -> FrontierResult:
    """Plan the runs still to do in ``a["out"]`` (within ``max_minutes``), run them, read the
    result back."""
    command = f"dendrites_vs_width({task.model_name}, {task.data_name}, ...)"
    plan = prepare_frontier(protocol, a["out"], command, task=task, arms=a["custom_arms"],
                            max_minutes=a["max_minutes"])
    _execute(plan, a["progress"])
    done = {r["run_id"] for r in plan.doc["runs"]}
    return frontier_result(plan.out, complete=all(r.run_id in done for r in plan.todo))


def _execute(plan, progress: bool) -> None:
    """Run the plan's runs, under progress bars on stderr with ``progress`` (and runs to do)."""
    if not progress or not plan.todo:
        log.info("%s", plan.describe())
        execute_frontier(plan)
        return
    import sys

    from perforate.experiments.harness.progress import runs_progress

    print(plan.describe() + "; Ctrl-C keeps finished runs (call again to resume).",
          file=sys.stderr)
    with runs_progress(len(plan.todo), plan.protocol.max_epochs) as bars:
        execute_frontier(plan, on_run=bars.on_run, on_epoch=bars.on_epoch)
