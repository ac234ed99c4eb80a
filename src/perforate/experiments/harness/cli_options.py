"""What every harness command shares on its command line: one-line errors and the training
options `perforate bench` and `perforate bench frontier` both take."""
from __future__ import annotations

from contextlib import contextmanager
from typing import Annotated, Iterator

import typer

from perforate.errors import PerforateError


@contextmanager
def cli_errors() -> Iterator[None]:
    """Turn a PerforateError into one line on stderr and exit code 2 (every harness command)."""
    try:
        yield
    except PerforateError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None


# options `perforate bench` and `perforate bench frontier` share
Lr = Annotated[float, typer.Option(help="Adam learning rate.")]
BatchSize = Annotated[int, typer.Option(min=1, help="Minibatch size.")]
WeightDecay = Annotated[float, typer.Option(help="Adam weight decay.")]
Stopping = Annotated[str, typer.Option(help="budget: no early stopping, every run keeps its best "
                                       "validation epoch (`perforate bench`'s pruned arm still "
                                       "fine-tunes with early stopping); patience: plain runs stop "
                                       "at a plateau, dendritic runs at a plateau where growth "
                                       "cannot go on.")]
