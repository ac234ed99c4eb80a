"""``perforate bench frontier``: plain widths against dendritic models grown from narrow ones."""
from __future__ import annotations

import shlex
import time
from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from perforate.errors import ExperimentError
from perforate.experiments.harness.cli_options import BatchSize, Lr, Stopping, WeightDecay, cli_errors


def parse_variant(text: str) -> tuple[str, dict[str, Any]]:
    """``NAME=MODE[,field=value...]`` -> (NAME, {"mode": MODE, field: value}); values are read
    as int, float, true/false or text (``include``/``exclude``: one module-name glob)."""
    name, sep, rest = text.partition("=")
    parts = [x.strip() for x in rest.split(",") if x.strip()]
    if not sep or not name.strip() or not parts:
        raise ExperimentError(f"--variant takes NAME=MODE[,field=value...], e.g. "
                              f"pb-online=pb,candidate_training=online; got {text!r}")
    variant: dict[str, Any] = {"mode": parts[0]}
    for part in parts[1:]:
        key, eq, value = part.partition("=")
        if not eq:
            raise ExperimentError(f"--variant {name}: {part!r} is not field=value")
        key = key.strip()
        variant[key] = value.strip() if key in ("include", "exclude") else _value(value.strip())
    return name.strip(), variant


def import_string(text: str, option: str) -> Any:
    """``package.module:attribute`` -> the attribute (the current folder is importable, as
    with ``python -m``); raise ExperimentError saying what is wrong."""
    import importlib
    import os
    import sys

    module_name, sep, attribute = text.partition(":")
    if not sep or not module_name or not attribute:
        raise ExperimentError(f"{option} takes an import string module:attribute, e.g. "
                              f"mypkg.models:make_model; got {text!r}")
    if os.getcwd() not in sys.path and "" not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        obj = importlib.import_module(module_name)
    except ImportError as exc:
        raise ExperimentError(f"{option} {text}: cannot import {module_name!r} ({exc}); run from "
                              "the folder holding it or install its package") from exc
    for part in attribute.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise ExperimentError(f"{option} {text}: {module_name!r} has no attribute "
                                  f"{attribute!r}") from None
    return obj


def user_task(model: str, data: str | None, *, train: str | None = None,
              evaluate: str | None = None, metric: str | None = None,
              direction: str | None = None, kind: str = "classification"):
    """The :class:`~perforate.experiments.task.Task` of ``--model mypkg:make_model --data
    mypkg:loaders [--train ...]``."""
    from perforate.experiments.frontier.task import Task

    if data is None:
        raise ExperimentError(f"--model {model} is your factory: give your data too, --data "
                              "mypkg.data:loaders (a function returning train, val, test loaders)")
    named = metric in (None, "accuracy", "mse", "mae", "r2")
    return Task(import_string(model, "--model"), import_string(data, "--data"),
                train_epoch=import_string(train, "--train") if train else None,
                evaluate=import_string(evaluate, "--evaluate") if evaluate else None,
                metric=metric if named else import_string(metric, "--metric"),
                direction=direction, kind=kind, model_name=model, data_name=data)


def _value(text: str) -> Any:
    if text.lower() in ("true", "false"):
        return text.lower() == "true"
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def _ints(text: str, what: str) -> list[int]:
    try:
        values = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise ExperimentError(f"{what} takes comma-separated integers, e.g. 4,8,16; got {text!r}") from None
    if not values:
        raise ExperimentError(f"{what} is empty; give comma-separated integers")
    return values


def frontier_command(
    dataset: Annotated[str, typer.Option(help="Dataset (offline): mnist1d, digits, mnist5k, spirals, "
                                         "breast_cancer, wine, diabetes.")] = "mnist1d",
    model: Annotated[str, typer.Option(help="Standard model: mlp, cnn1d, cnn2d, gru, lstm, "
                                       "transformer; or your factory as an import string, "
                                       "mypkg.models:make_model (make_model(width) -> nn.Module; "
                                       "needs --data).")] = "mlp",
    data: Annotated[Optional[str], typer.Option(help="Your data with your --model: an import "
                                                "string to a function returning (train, val, "
                                                "test) loaders, e.g. mypkg.data:loaders (it may "
                                                "take the seed).")] = None,
    train: Annotated[Optional[str], typer.Option(help="Your training loop, an import string to "
                                                 "train_epoch(model, loader, optimizer) (default: "
                                                 "(x, y) batches, cross-entropy or MSE).")] = None,
    evaluate: Annotated[Optional[str], typer.Option(help="Your metric, an import string to "
                                                    "evaluate(model, loader) -> float (needs "
                                                    "--direction).")] = None,
    metric: Annotated[Optional[str], typer.Option(help="With your --model: accuracy, mse, mae, r2, "
                                                  "or an import string to metric(outputs, "
                                                  "targets) -> float.")] = None,
    direction: Annotated[Optional[str], typer.Option(help="Which way your metric improves: max or "
                                                     "min.")] = None,
    kind: Annotated[str, typer.Option(help="With your --model: classification (cross-entropy, "
                                      "accuracy) or regression (MSE, MSE).")] = "classification",
    max_minutes: Annotated[Optional[float], typer.Option(
        help="A time cap in minutes, counted from the start: drops seeds beyond 2, then middle "
             "ladder widths, then seeds beyond 1, then starting widths, until the estimate (timed "
             "epochs) fits; no run starts once it is spent.")] = None,
    widths: Annotated[str, typer.Option(help="The plain ladder of widths.")] = "4,8,16,32,64,128,256",
    grow_widths: Annotated[str, typer.Option(help="Widths the dendritic arms grow from.")] = "4,8,16",
    arms: Annotated[str, typer.Option(help="Dendritic arms: gd, pb, reference (perforatedai, when "
                                      "installed) and names given by --variant.")] = "gd,pb",
    variant: Annotated[Optional[list[str]], typer.Option(
        help="Another dendritic arm, NAME=MODE[,field=value...] with Config fields, e.g. "
             "pb-online=pb,candidate_training=online (repeatable; add NAME to --arms).")] = None,
    reference_widths: Annotated[Optional[str], typer.Option(
        help="Widths the reference arm grows from (default: --grow-widths); it is slow.")] = None,
    seeds: Annotated[int, typer.Option(min=1, help="Seeds 0..N-1; results are mean ± std, paired "
                                       "by seed.")] = 5,
    epochs: Annotated[int, typer.Option(min=1, help="Epoch budget of every run.")] = 150,
    patience: Annotated[int, typer.Option(min=1, help="Plateau patience (smoothed validation "
                                          "score).")] = 20,
    stopping: Stopping = "budget",
    lr: Lr = 1e-2,
    batch_size: BatchSize = 100,
    weight_decay: WeightDecay = 0.0,
    config: Annotated[Optional[Path], typer.Option(help="A perforate Config file for every "
                                                   "dendritic arm (variants override it).")] = None,
    run_outputs: Annotated[bool, typer.Option("--run-outputs", help="Keep each dendritic run's "
                                              "history.csv, summary.json and growth.png.")] = False,
    controls: Annotated[Optional[str], typer.Option(
        help="Plain sparse ladders beside the dense one: local, random, or either with -xN (a first "
             "layer N times as wide, harness MLP only), e.g. local,random,local-x6 (arms "
             "plain-NAME; not the width-matched control-ARM).")] = None,
    control_inputs: Annotated[int, typer.Option(min=1, help="Inputs each unit of a sparse "
                                                "control's first layer reads.")] = 8,
    control_widths: Annotated[Optional[str], typer.Option(
        help="The sparse controls' widths (default: --widths).")] = None,
    threads: Annotated[int, typer.Option(min=1, help="torch CPU threads.")] = 1,
    out: Annotated[Path, typer.Option(help="Results folder; a restarted bench skips finished runs.")]
    = Path("perforate-frontier"),
) -> None:
    """Plain models at a ladder of widths against dendritic models grown from the narrow ones:
    score against parameters and FLOPs, each dendritic point's distance to the plain frontier
    (paired by seed) and its gain over the width it grew from. Writes results.json, report.md,
    frontier-params.png and frontier-flops.png to --out."""
    options = dict(locals())  # every option above, by name
    from perforate.experiments.frontier.report import verdict

    with cli_errors():
        task = _task_of(options)
        protocol = _protocol_of(options, task)
        argv = _frontier_command_line(options, task)
        start = time.perf_counter()
        doc, report = _run_and_render(protocol, out, argv, threads, task, max_minutes)
    for line in verdict(doc):
        typer.echo(f"- {line}")
    typer.echo(f"report: {report}  ({time.perf_counter() - start:.0f} s)")


def _task_of(o: dict[str, Any]):
    """The user's :class:`Task` when ``--model`` is an import string, else None (a harness
    dataset and model); the user-task options without one are an error."""
    if ":" in o["model"]:
        return user_task(o["model"], o["data"], train=o["train"], evaluate=o["evaluate"],
                         metric=o["metric"], direction=o["direction"], kind=o["kind"])
    if any(o[name] is not None for name in ("data", "train", "evaluate", "metric", "direction")):
        raise ExperimentError("--data, --train, --evaluate, --metric and --direction go with "
                              "your own --model given as an import string "
                              "(mypkg.models:make_model)")
    return None


def _protocol_of(o: dict[str, Any], task):
    """The :class:`FrontierProtocol` of ``perforate bench frontier``'s options."""
    import perforate as pf
    from perforate.experiments.frontier.protocol import DEFAULT_VARIANTS, FrontierProtocol

    variants = dict(DEFAULT_VARIANTS)
    variants.update(parse_variant(v) for v in o["variant"] or [])
    return FrontierProtocol(
        dataset=o["data"] if task else o["dataset"], model=o["model"],
        widths=_ints(o["widths"], "--widths"), grow_widths=_ints(o["grow_widths"], "--grow-widths"),
        arms=[a.strip() for a in o["arms"].split(",") if a.strip()], variants=variants,
        reference_widths=(_ints(o["reference_widths"], "--reference-widths")
                          if o["reference_widths"] else None),
        seeds=list(range(o["seeds"])), max_epochs=o["epochs"], patience=o["patience"],
        stopping=o["stopping"], lr=o["lr"], batch_size=o["batch_size"],
        weight_decay=o["weight_decay"],
        config=pf.Config.load(o["config"]).to_dict() if o["config"] else {},
        run_outputs=o["run_outputs"], metric=task.metric_name if task else "",
        direction=task.direction if task else "max",
        controls=[c.strip() for c in (o["controls"] or "").split(",") if c.strip()],
        control_inputs=o["control_inputs"],
        control_widths=_ints(o["control_widths"], "--control-widths") if o["control_widths"] else None)


def _frontier_command_line(o: dict[str, Any], task) -> str:
    """The ``perforate bench frontier`` line that reproduces these options (in the report)."""
    user = dict(data=o["data"], train=o["train"], evaluate=o["evaluate"], metric=o["metric"],
                direction=o["direction"],
                kind=o["kind"] if task and o["kind"] != "classification" else None)
    return _command_line(dataset=None if task else o["dataset"], model=o["model"], **user,
                         widths=o["widths"], grow_widths=o["grow_widths"], arms=o["arms"],
                         variant=o["variant"] or [], reference_widths=o["reference_widths"],
                         seeds=o["seeds"], epochs=o["epochs"], patience=o["patience"],
                         stopping=o["stopping"], lr=f"{o['lr']:g}", batch_size=o["batch_size"],
                         weight_decay=f"{o['weight_decay']:g}" if o["weight_decay"] else None,
                         config=o["config"], controls=o["controls"],
                         control_inputs=o["control_inputs"] if o["controls"] else None,
                         control_widths=o["control_widths"],
                         max_minutes=f"{o['max_minutes']:g}" if o["max_minutes"] else None,
                         out=o["out"])


DEMO = {"dataset": "mnist1d", "model": "mlp", "widths": [8, 16, 32], "grow_widths": [8],
        "arms": ["pb"], "variants": {"pb": {"mode": "pb"}}}
"""The demo's setting: where grown dendrites helped most consistently in the 5-seed suite
(``results/frontier.md``): pb dendrites grown from a width-8 MNIST-1D MLP, +0.3 points over that
width (3 of 5 seeds better, none worse), still 2.3 points below the plain frontier at equal
parameters. (gd from width 4 gained more on average, +2.0, but 2 of its 4 better seeds kept no
dendrite.)"""
_DEMO_OUTPUTS = ("results.json", "report.md", "frontier-params.png", "frontier-flops.png")


def demo_command(
    out: Annotated[Path, typer.Option(help="Report folder to write (created if missing).")]
    = Path("perforate-demo"),
    seed: Annotated[int, typer.Option(min=0, help="Seed of the split, initialisation and data "
                                      "order.")] = 0,
    epochs: Annotated[int, typer.Option(min=1, help="Epoch budget of every run.")] = 150,
    threads: Annotated[int, typer.Option(min=1, help="torch CPU threads.")] = 1,
    fresh: Annotated[bool, typer.Option("--fresh", help="Discard results already in --out and "
                                        "run everything again.")] = False,
) -> None:
    """Dendrites against width where they came closest, on one seed (about 20 seconds).

    MNIST-1D MLP: plain models at widths 8, 16 and 32, and a width-8 model growing pb dendrites
    (where they helped most consistently in the 5-seed suite), the same budget and stopping
    rule for all. Prints whether the grown model beat the plain frontier at equal parameters
    and writes report.md with score-vs-parameters graphs to --out. The 5-seed, 4-task
    evidence: results/frontier.md.
    """
    import shutil

    from perforate.experiments.frontier.protocol import FrontierProtocol

    with cli_errors():
        protocol = FrontierProtocol(**DEMO, seeds=[seed], max_epochs=epochs)
        if fresh:
            shutil.rmtree(out / "runs", ignore_errors=True)
            for name in _DEMO_OUTPUTS:
                (out / name).unlink(missing_ok=True)
        start = time.perf_counter()
        doc, report = _run_and_render(protocol, out, f"perforate demo --seed {seed} --epochs {epochs}",
                                      threads)
    runs = sorted(doc["runs"], key=lambda r: (r["params"], r["arm"]))
    typer.echo("MNIST-1D MLP, seed {}: test accuracy at each run's best validation epoch".format(seed))
    for r in runs:
        label = "plain" if r["arm"] == "plain" else f"{r['arm']} (grown from width {r['width']})"
        typer.echo(f"  {label:34s} width {r['width']:3d}  {r['params']:6d} params  "
                   f"{r['test_score']:5.1f} %  dendrites {r['dendrites']}")
    typer.echo(demo_headline(doc))
    typer.echo(f"report: {report}  ({time.perf_counter() - start:.0f} s); 5 seeds and 4 tasks: "
               "results/frontier.md")


def _command_line(**options: Any) -> str:
    """The command that reproduces a frontier run, for the top of its report: every option
    given, a list option repeated, None left out."""
    argv = ["perforate", "bench", "frontier"]
    for name, value in options.items():
        for item in value if isinstance(value, list) else [value]:
            if item is not None:
                argv += [f"--{name.replace('_', '-')}", str(item)]
    return shlex.join(argv)


def _run_and_render(protocol, out: Path, command: str, threads: int, task=None,
                    max_minutes: float | None = None, arms=None) -> tuple[dict[str, Any], Path]:
    """The runs still to do on ``threads`` torch threads (restored after), then the report;
    returns the results document and the report's path."""
    import torch

    from perforate.experiments.frontier.report import render_frontier

    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        return (_run_with_progress(protocol, out, command, task, max_minutes, arms),
                render_frontier(out))
    finally:
        torch.set_num_threads(previous)


def _run_with_progress(protocol, out: Path, command: str, task=None,
                       max_minutes: float | None = None, arms=None) -> dict[str, Any]:
    """Say how many runs and about how long (a timed first epoch), then run them under two
    progress bars (all runs, the current one) with the time left; Ctrl-C keeps the finished
    runs and says how to resume."""
    from perforate.experiments.frontier.runs import execute_frontier, prepare_frontier
    from perforate.experiments.harness.progress import runs_progress

    plan = prepare_frontier(protocol, out, command, task=task, arms=arms, max_minutes=max_minutes)
    if not plan.todo:
        typer.echo(f"every run is already in {out}: its report is drawn again", err=True)
        return execute_frontier(plan)
    typer.echo(plan.describe() + "; Ctrl-C keeps finished runs.", err=True)
    try:
        with runs_progress(len(plan.todo), plan.protocol.max_epochs) as bars:
            return execute_frontier(plan, on_run=bars.on_run, on_epoch=bars.on_epoch)
    except KeyboardInterrupt:
        typer.echo(f"interrupted; finished runs are kept in {out}. Run the same command again "
                   "to resume.", err=True)
        raise typer.Exit(130) from None


def demo_headline(doc: dict[str, Any]) -> str:
    """One plain sentence: what growth did to the starting width, and where the plain frontier
    lies at the grown model's parameter count."""
    point = doc["frontier"]["points"][0]
    grown = next(r for r in doc["runs"] if r["arm"] == point["arm"])
    start = next(r for r in doc["runs"] if r["arm"] == "plain" and r["width"] == point["width"])
    distance = point["distance"]["mean"]
    what = (f"grew {grown['dendrites']} dendrite(s) per layer" if grown["dendrites"]
            else "kept no dendrite (no growth paid)")
    if round(distance, 1) == 0:  # e.g. no dendrite kept: the start width is on the frontier
        where = "level with the plain frontier at that size: no better than a wider plain model"
    elif distance > 0:
        where = f"{distance:.1f} points above the plain frontier at that size: dendrites beat width here"
    else:
        where = (f"{-distance:.1f} points below the plain frontier at that size: here a wider plain "
                 "model beat the dendrites")
    return (f"Headline: from width {start['width']}, {point['arm']} {what}: {start['test_score']:.1f} "
            f"-> {grown['test_score']:.1f} % ({grown['test_score'] - start['test_score']:+.1f}), "
            f"{grown['params']} parameters, {where}. "
            "Over 5 seeds and 4 tasks no dendritic setting beat the plain "
            "frontier; against its own width growth cost at most 0.5 points (mean of 5 seeds). "
            "A plain layer reading local 8-input windows beat every dendritic shape on MNIST-1D "
            "(results/restricted.md): sparsity, not dendrites.")
