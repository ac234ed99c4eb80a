"""The harness's progress bars: the overall bar reaches its total even when runs stop early."""
import io
from types import SimpleNamespace

from rich.console import Console

from perforate.experiments.harness.progress import RunsProgress, clock, progress_bars


def test_a_run_that_stops_early_frees_the_rest_of_its_budget_on_the_overall_bar():
    with progress_bars(Console(file=io.StringIO()), "epochs") as progress:
        bars = RunsProgress(progress, runs_left=2, epochs_per_run=10)
        bars.on_run(SimpleNamespace(run_id="plain-w8-s0"), 0, 2)
        for epoch in range(3):  # stops after 3 of its 10 epochs
            bars.on_epoch(epoch, 50.0)
        assert progress.tasks[bars.overall].completed == 3
        bars.on_run(SimpleNamespace(run_id="pb-w8-s0"), 1, 2)
        assert progress.tasks[bars.overall].completed == 10
        assert progress.tasks[bars.current].description == "[2/2] pb-w8-s0"
        for epoch in range(10):
            bars.on_epoch(epoch, 51.0)
        bars.finish()
        overall = progress.tasks[bars.overall]
        assert overall.completed == overall.total == 20


def test_clock():
    assert (clock(None), clock(61), clock(3725)) == ("-:--", "1:01", "1:02:05")
