"""The ``perforate sweep`` command (registered by the experiments CLI).

Module-level imports stay light: Optuna and Ray are imported only when a sweep runs.
"""
from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer


def sweep_command(
    config: Annotated[Path, typer.Argument(help="Sweep config (.yaml/.yml/.toml/.json).")],
    backend: Annotated[str, typer.Option(help="'optuna' (one machine) or 'ray' (Ray Tune).")] = "optuna",
    trials: Annotated[int, typer.Option(help="Total number of trials the sweep should hold.")] = 20,
    out: Annotated[Path, typer.Option(help="Output folder (storage, trials.jsonl, report).")] = Path("results/sweep"),
    address: Annotated[Optional[str], typer.Option(help="Ray cluster address to join (ray backend); default: local Ray.")] = None,
    cpus_per_trial: Annotated[float, typer.Option(help="CPUs reserved per trial (ray backend).")] = 1.0,
    gpus_per_trial: Annotated[float, typer.Option(help="GPUs reserved per trial (ray backend).")] = 0.0,
    num_cpus: Annotated[Optional[int], typer.Option(help="CPUs of the local Ray instance (ray backend, no --address).")] = None,
    wandb: Annotated[bool, typer.Option("--wandb/--no-wandb", help="Also log the trials to W&B (offline unless WANDB_MODE says otherwise).")] = False,
    report: Annotated[bool, typer.Option("--report/--no-report", help="Write report.md and the plots at the end.")] = True,
) -> None:
    """Tune dendrite and model hyperparameters; each trial is paired with its baseline."""
    from .run import run_sweep

    summary = run_sweep(config, backend=backend, trials=trials, out=out, address=address,
                        cpus_per_trial=cpus_per_trial, gpus_per_trial=gpus_per_trial,
                        num_cpus=num_cpus, wandb=wandb, report=report)
    typer.echo(f"{summary['finished']} finished trial(s) of {summary['requested']} in {out}"
               + (f"; report: {out / 'report.md'}" if report else ""))
