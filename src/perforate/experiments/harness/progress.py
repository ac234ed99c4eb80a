"""Progress displays of the harness commands (rich): bars with the time spent and the time left."""
from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

from rich.console import Console
from rich.progress import BarColumn, Progress, ProgressColumn, TextColumn
from rich.table import Column
from rich.text import Text


class TimeColumn(ProgressColumn):
    """"0:41 · 2:10 left": time spent and the time left at the recent pace."""

    def render(self, task) -> Text:
        left = task.time_remaining
        spent = clock(task.finished_time if task.finished else task.elapsed)
        return Text(spent if task.finished else f"{spent} · {clock(left)} left", style="dim")


def clock(seconds: float | None) -> str:
    """``m:ss`` (``h:mm:ss`` from an hour); ``-:--`` when unknown."""
    if seconds is None:
        return "-:--"
    minutes, rest = divmod(int(seconds), 60)
    return f"{minutes // 60}:{minutes % 60:02d}:{rest:02d}" if minutes >= 60 else f"{minutes}:{rest:02d}"


def progress_bars(console: Console, unit: str) -> Progress:
    """A description that gives way first, a bar, ``done/total <unit>``, time, and a free field
    ``info`` (e.g. the last validation score)."""
    fixed = lambda width: Column(min_width=width, no_wrap=True)  # noqa: E731
    return Progress(TextColumn("[bold]{task.description}", table_column=Column(
                        ratio=1, no_wrap=True, overflow="ellipsis")),
                    BarColumn(bar_width=12),
                    TextColumn("{task.completed}/{task.total} " + unit, table_column=fixed(15)),
                    TimeColumn(table_column=fixed(20)),
                    TextColumn("{task.fields[info]}", table_column=fixed(10)),
                    console=console, transient=False)


class RunsProgress:
    """Two bars for a list of training runs: all runs' epochs together, and the current run's.
    ``on_run``/``on_epoch`` fit :func:`perforate.experiments.frontier.run_frontier`'s hooks."""

    def __init__(self, progress: Progress, runs_left: int, epochs_per_run: int) -> None:
        self.progress, self.epochs_per_run = progress, epochs_per_run
        self.overall = progress.add_task(f"{runs_left} runs", total=runs_left * epochs_per_run, info="")
        self.current = progress.add_task("starting", total=epochs_per_run, info="")
        self._done_in_run = None  # epochs the current run has reported

    def _close_run(self) -> None:
        if self._done_in_run is not None:  # a run that stopped before its budget frees the rest
            self.progress.advance(self.overall, self.epochs_per_run - self._done_in_run)

    def on_run(self, run, index: int, total: int) -> None:
        self._close_run()
        self._done_in_run = 0
        self.progress.reset(self.current, total=self.epochs_per_run,
                            description=f"[{index + 1}/{total}] {run.run_id}", info="")

    def on_epoch(self, epoch: int, score: float) -> None:
        self._done_in_run += 1
        self.progress.update(self.current, completed=self._done_in_run, info=f"val {score:.4g}")
        self.progress.advance(self.overall)

    def finish(self) -> None:
        self._close_run()
        self._done_in_run = None


@contextmanager
def runs_progress(runs_left: int, epochs_per_run: int) -> Iterator[RunsProgress]:
    """The two bars on stderr while the runs train."""
    with progress_bars(Console(stderr=True), "epochs") as progress:
        bars = RunsProgress(progress, runs_left, epochs_per_run)
        yield bars
        bars.finish()
