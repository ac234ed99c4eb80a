"""The ``perforate`` command: the harness's ``demo``, ``bench`` (+ ``bench cost``) and ``report``,
and the sweeps' ``sweep``.

The one module that imports both the harness (:mod:`perforate.experiments`) and the sweeps
(:mod:`perforate.sweeps`): the sweeps use the harness, the harness knows nothing of the sweeps.
"""
from __future__ import annotations

import sys

import typer

from perforate.errors import PerforateError
from perforate.experiments.cli import app as experiments_app
from perforate.sweeps.cli import sweep_command

app = typer.Typer(
    name="perforate",
    help="Dendritic optimization (Perforated Backpropagation) for PyTorch: experiments and reports.",
    add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
    rich_markup_mode=None,  # click's plain help: a flag shows no value
)
app.add_typer(experiments_app)
app.command("sweep")(sweep_command)


def main() -> None:
    """Console-script entry point."""
    try:
        app()
    except PerforateError as exc:  # a command that let one through
        typer.echo(f"error: {exc}", err=True)
        sys.exit(2)


if __name__ == "__main__":  # pragma: no cover
    main()
