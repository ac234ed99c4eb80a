"""The harness's commands: ``demo``, ``bench`` (+ ``bench cost``, ``bench frontier``) and ``report``.

:mod:`perforate.cli` joins them with ``sweep`` into the ``perforate`` command. Each command
lives in its own subpackage (``bench/``, ``frontier/``, ``cost/``); this module only joins them.

Errors a user can fix (unknown dataset, model or arm; an unwritable folder; a results folder
from another protocol) print one line and exit with code 2.
"""
from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from perforate.errors import ExperimentError
from perforate.experiments.bench.cli import bench_app, print_table, stdout_console
from perforate.experiments.cost.bench import cost_command
from perforate.experiments.frontier.cli import demo_command, frontier_command
from perforate.experiments.harness.cli_options import cli_errors

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  rich_markup_mode=None)
"""The harness's commands, without a name of their own: :mod:`perforate.cli` merges them."""
app.add_typer(bench_app, name="bench")
app.command("demo")(demo_command)


# ---------------------------------------------------------------------------- report
@app.command()
def report(
    folder: Annotated[Path, typer.Argument(help="A folder written by `perforate bench`, `perforate "
                                           "bench frontier` or `perforate demo` (it holds "
                                           "results.json).")],
    markdown: Annotated[Optional[Path], typer.Option(help="Write the markdown here instead of "
                                                     "FOLDER/report.md (image links are made "
                                                     "relative to it).")] = None,
) -> None:
    """Re-render report.md and the graphs from FOLDER/results.json, and print the table.

    The statistics derived from the runs (summary, comparisons, data efficiency) are recomputed
    and written back to results.json; the runs themselves are not touched.
    """
    from perforate.experiments.frontier.runs import is_frontier
    from perforate.experiments.bench.render import render_report
    from perforate.experiments.harness.results import load_results, prepare_out_dir, save_results

    with cli_errors():
        if not folder.is_dir():
            raise ExperimentError(f"{folder} is not a folder; pass the --out folder of a bench or demo")
        if is_frontier(folder):  # `perforate bench frontier` and `perforate demo`
            from perforate.experiments.frontier.report import render_frontier

            typer.echo(f"report: {render_frontier(folder)}")
            return
        doc = load_results(folder)
        prepare_out_dir(folder)
        save_results(folder, doc)  # refresh the derived statistics in the file too
        path = render_report(folder, markdown)
        print_table(stdout_console(), doc)
        typer.echo(f"report: {path}")


bench_app.command("cost")(cost_command)
bench_app.command("frontier")(frontier_command)
