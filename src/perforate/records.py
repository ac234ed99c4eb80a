"""What the grower hands its writer: frozen records of a run's moments.

The writer (:class:`perforate.writer.RunWriter`) never reads the grower. At each moment — the
end of an epoch (``"epoch"``), a growth between epochs (``"between"``), the run's end
(``"end"``), a restart from a saved state (``"restart"``), a flush (``"flush"``) — the grower
asks the writer what it ``needs`` (:class:`Needs`: which history rows, and whether the resume
state, the best model, the summary and the graph's data) and hands it an :class:`EpochRecord`
holding just that (:func:`hand_over`). Only this module's builders read the grower.

History rows in a record are read-only copies: a row the grower marks later (a growth between
epochs, the "done" event at ``finish``) comes again in a later record.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Mapping

from .measure import count_parameters

if TYPE_CHECKING:  # pragma: no cover
    from .grower import Grower
    from .grower_state import Decision
    from .writer import RunWriter

BASE_COLUMNS = ["epoch", "phase", "score", "lr", "params", "dendrites", "seconds", "event", "reason"]
"""The columns of every history row, in order; extra scores given to ``Grower.step`` follow."""

MOMENTS = ("epoch", "between", "end", "restart", "flush")
"""The moments at which the grower hands its writer a record."""


@dataclass(frozen=True)
class Needs:
    """What the writer asks a record to carry (``RunWriter.needs``).

    ``action``: what the writer will do with it ("epoch": an ordinary epoch, "outputs": an
    event's files, "between", "end", "restart", "flush"); ``rows_from``: the index of the first
    history row to carry (every row after it comes too); ``submit``: an ordinary epoch's files
    are handed to the background now; ``state``: the grower's full ``state_dict()``
    (``state_due``: the resume state fell due, to be written with the next files handed over);
    ``best``: the best model, unless its version is ``best_held``; ``summary``: ``Grower.summary()``;
    ``graph``: the data growth.png needs beside the rows.
    """

    action: str
    rows_from: int
    submit: bool = False
    state: bool = False
    state_due: bool = False
    best: bool = False
    best_held: int | None = None
    summary: bool = False
    graph: bool = False


@dataclass(frozen=True)
class BestModel:
    """The best model so far: its snapshot (``{"structure", "state"}``, or None before there is
    one), the version the grower counts its changes by, and its score."""

    snapshot: Mapping[str, Any] | None
    version: int
    score: float | None


@dataclass(frozen=True)
class GrowthGraph:
    """What growth.png shows beside the history rows (:func:`perforate.growth_plot.plot_growth`)."""

    title: str
    score_label: str
    final_params: int | None  # the kept model's size, once growth is done
    best_epoch: int | None


@dataclass(frozen=True)
class EpochRecord:
    """One moment of a run, as the writer asked for it (see :class:`Needs`).

    ``epoch``: the epochs done so far; ``rows``: the history rows from ``needs.rows_from`` on
    (read-only); ``event`` and ``done``: the decision of an epoch's end. ``state`` is
    ``Grower.state_dict()`` (its tensors by reference: the writer copies what it writes later).
    """

    needs: Needs
    epoch: int
    rows: tuple[Mapping[str, Any], ...]
    event: str = ""
    done: bool = False
    state: Mapping[str, Any] | None = None
    best: BestModel | None = None
    summary: Mapping[str, Any] | None = None
    graph: GrowthGraph | None = None


def frozen_rows(rows: list[dict[str, Any]]) -> tuple[Mapping[str, Any], ...]:
    """Read-only copies of history rows."""
    return tuple(MappingProxyType(dict(row)) for row in rows)


def growth_graph(grower: Grower) -> GrowthGraph:
    """growth.png's title and labels for a grower's run: its name and mode, the score named and
    its direction given, the kept model's size once growth is done, the best epoch."""
    cfg = grower.config
    better = "higher" if cfg.score_mode == "max" else "lower"
    final = None
    if grower.done:
        final = count_parameters(grower.model)
    return GrowthGraph(title=f"{grower.name or 'perforate'} — dendrites trained by {cfg.mode}",
                       score_label=f"{cfg.score_name} ({better} is better)", final_params=final,
                       best_epoch=grower.state.best_epoch)


def epoch_record(grower: Grower, needs: Needs, event: str = "", done: bool = False) -> EpochRecord:
    """The record of ``grower`` now, carrying what ``needs`` asks for (``event`` and ``done``:
    the decision of an epoch's end)."""
    state = grower.state_dict() if needs.state else None
    best = None
    if needs.best and grower.best_version != needs.best_held:
        parts = state if state is not None else grower.state_dict(model=False, optimizer=False)
        best = BestModel(parts["best"], grower.best_version, grower.best_score)
    return EpochRecord(
        needs=needs, epoch=grower.state.epoch, rows=frozen_rows(grower.history[needs.rows_from:]),
        event=event, done=done, state=state, best=best,
        summary=copy.deepcopy(grower.summary()) if needs.summary else None,
        graph=growth_graph(grower) if needs.graph else None)


def hand_over(grower: Grower, writer: RunWriter, moment: str, decision: Decision | None = None) -> None:
    """Ask ``writer`` what it needs at ``moment`` (one of :data:`MOMENTS`) and hand it the
    record (``decision``: the one an epoch's end took)."""
    event, done = (decision.event, decision.done) if decision is not None else ("", False)
    needs = writer.needs(moment, grower.state.epoch, grower.config, event=event, done=done)
    writer.write(epoch_record(grower, needs, event, done))
