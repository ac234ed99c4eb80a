"""``run_sweep``: read the config, run the chosen backend, write results and the report."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

from ..errors import ExperimentError
from .space import SweepSpace, load_space
from .trial import TrialRecord, best_record

BACKENDS = ("optuna", "ray")


def run_sweep(config: str | Path | SweepSpace, *, backend: str = "optuna", trials: int = 20,
              out: str | Path = "results/sweep", address: str | None = None,
              cpus_per_trial: float = 1.0, gpus_per_trial: float = 0.0,
              num_cpus: int | None = None, wandb: bool = False, report: bool = True,
              command: str | None = None,
              on_record: Callable[[TrialRecord], None] | None = None) -> dict[str, Any]:
    """Run a sweep until ``trials`` trials are finished in ``out`` (resuming what is there).

    Returns ``{"finished", "requested", "best", "records"}``. ``command`` is the shell command
    shown at the top of the report (default: the ``perforate sweep`` line for these arguments).
    """
    space = config if isinstance(config, SweepSpace) else load_space(config)
    if backend not in BACKENDS:
        raise ExperimentError(f"backend must be one of {list(BACKENDS)}; got {backend!r}")
    if isinstance(trials, bool) or not isinstance(trials, int) or trials < 1:
        raise ExperimentError(f"trials must be a positive integer; got {trials!r}")
    out = Path(out)
    if backend == "optuna":
        from .optuna_backend import run_optuna

        records = run_optuna(space, trials, out, on_record=on_record)
    else:
        from .ray_backend import run_ray

        records = run_ray(space, trials, out, address=address, cpus_per_trial=cpus_per_trial,
                          gpus_per_trial=gpus_per_trial, num_cpus=num_cpus, on_record=on_record)
    finished = [r for r in records if r.state != "FAIL"]
    if records and not finished:
        raise ExperimentError(f"every trial failed; the first error was: {records[0].error}")
    if report:
        from .report import write_report

        if command is None:
            command = sweep_command_line(config, backend, trials, out, address)
        write_report(out, space, records, backend=backend, command=command, wandb=wandb)
    best = best_record(space, records)
    return {"finished": len(records), "requested": trials, "best": best, "records": records}


def sweep_command_line(config: Any, backend: str, trials: int, out: str | Path,
                       address: str | None = None, cpus_per_trial: float | None = None,
                       gpus_per_trial: float | None = None, threads: int | None = None) -> str:
    """The ``perforate sweep`` line that reruns (or resumes) a sweep with these options."""
    source = config if not isinstance(config, SweepSpace) else "CONFIG"
    line = f"perforate sweep {source} --backend {backend} --trials {trials} --out {out}"
    if backend == "ray" and cpus_per_trial is not None:
        line += f" --cpus-per-trial {cpus_per_trial:g} --gpus-per-trial {gpus_per_trial or 0:g}"
    line += f" --address {address}" if address else ""
    return line + (f" --threads {threads}" if threads is not None else "")
