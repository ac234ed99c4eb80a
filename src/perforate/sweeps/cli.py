"""The ``perforate sweep`` command (registered by :mod:`perforate.cli`).

Module-level imports stay light: Optuna and Ray are imported only when a sweep runs.
"""
from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer


def sweep_command(
    config: Annotated[Path, typer.Argument(
        help="Sweep config (.yaml/.yml/.toml/.json).")],
    backend: Annotated[str, typer.Option(
        help="'optuna' (one machine) or 'ray' (Ray Tune).")] = "optuna",
    trials: Annotated[int, typer.Option(
        help="Total number of trials the sweep should hold.")] = 20,
    out: Annotated[Path, typer.Option(
        help="Output folder (storage, trials.jsonl, report).")] = Path("results/sweep"),
    address: Annotated[Optional[str], typer.Option(
        help="Ray cluster address to join (ray backend); default: local Ray.")] = None,
    cpus_per_trial: Annotated[float, typer.Option(
        help="CPUs reserved per trial (ray backend).")] = 1.0,
    gpus_per_trial: Annotated[float, typer.Option(
        help="GPUs reserved per trial (ray backend).")] = 0.0,
    num_cpus: Annotated[Optional[int], typer.Option(
        help="CPUs of the local Ray instance (ray backend, no --address; default 2).")] = None,
    wandb: Annotated[bool, typer.Option(
        "--wandb/--no-wandb",
        help="Also log the trials to W&B (offline unless WANDB_MODE says otherwise).")] = False,
    report: Annotated[bool, typer.Option(
        "--report/--no-report", help="Write report.md and the plots at the end.")] = True,
    threads: Annotated[Optional[int], typer.Option(
        help="torch threads of the in-process optuna backend (default: torch's own).")] = None,
) -> None:
    """Tune dendrite and model hyperparameters; each trial is paired with its baseline.

    Rerun the same command to resume; ask for more --trials to extend a sweep.
    """
    from ..errors import PerforateError
    from .run import run_sweep, sweep_command_line

    if threads is not None:
        import torch

        torch.set_num_threads(max(1, threads))

    command = sweep_command_line(config, backend, trials, out, address if backend == "ray" else None,
                                 cpus_per_trial, gpus_per_trial, threads)
    try:
        summary = run_sweep(config, backend=backend, trials=trials, out=out, address=address,
                            cpus_per_trial=cpus_per_trial, gpus_per_trial=gpus_per_trial,
                            num_cpus=num_cpus, wandb=wandb, report=report, command=command,
                            on_record=_print_trial)
    except KeyboardInterrupt:
        typer.echo(f"interrupted; finished trials are kept in {out}. Run the same command again "
                   "to resume.", err=True)
        raise typer.Exit(130)
    except PerforateError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2)
    typer.echo(f"{summary['finished']} finished trial(s) of {summary['requested']} in {out}"
               + (f"; report: {out / 'report.md'}" if report else ""))
    if summary["finished"] < summary["requested"]:
        typer.echo("the sweep stopped early; run the same command again to resume.")


def _print_trial(record) -> None:
    score = "" if record.value is None else f" {record.value:.2f}"
    gain = record.improvement.get("val")
    vs = "" if gain is None else f" (Δ val vs baseline {gain:+.2f})"
    typer.echo(f"trial {record.number}: {record.state}{score}{vs}")
