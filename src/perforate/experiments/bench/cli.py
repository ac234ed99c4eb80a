"""``perforate bench``: the quality protocol of BENCHMARKS.md over several seeds, with a live
progress display, the report and the results table."""
from __future__ import annotations

import logging
import shlex
import shutil
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Iterator, Optional

import typer
from rich import box
from rich.console import Console
from rich.progress import Progress
from rich.table import Table

from perforate.errors import ExperimentError
from perforate.experiments.harness.cli_options import BatchSize, Lr, Stopping, WeightDecay, cli_errors
from perforate.experiments.harness.progress import progress_bars

bench_app = typer.Typer(
    help="Run the full quality protocol (baseline, gd, pb, compressed, control, pruned) over "
         "several seeds; `perforate bench cost` measures run-time costs.",
    invoke_without_command=True, pretty_exceptions_enable=False, rich_markup_mode=None,
)

_OUR_OUTPUTS = ("results.json", "report.md", "comparison.png", "data-efficiency.png",
                "growth-gd.png", "growth-pb.png", "growth-compressed.png")


def _split(text: str, what: str) -> list[str]:
    items = [x.strip() for x in text.split(",") if x.strip()]
    if not items:
        raise ExperimentError(f"{what} is empty; give a comma-separated list")
    return items


def _fractions(text: str) -> list[float]:
    out = []
    for item in _split(text, "--fractions"):
        try:
            value = float(item.rstrip("%")) / (100.0 if item.endswith("%") else 1.0)
        except ValueError:
            raise ExperimentError(f"--fractions takes numbers like 0.1,0.25,0.5,1; got {item!r}") from None
        out.append(value)
    return out


def _clear(out: Path) -> None:
    """Remove what a previous bench wrote in ``out`` (only its own files)."""
    shutil.rmtree(out / "runs", ignore_errors=True)
    for name in _OUR_OUTPUTS:
        (out / name).unlink(missing_ok=True)


def stdout_console() -> Console:
    console = Console()
    # a pipe or file gets the table unwrapped rather than squeezed into 80 columns
    return console if console.is_terminal else Console(width=160)


def print_table(console: Console, doc: dict) -> None:
    """The results table; a terminal narrower than the full table gets means without ± std."""
    from perforate.experiments.bench.render import results_table

    rows = results_table(doc, compact=True)
    seeds = max((len(arm["seeds"]) for arm in doc["summary"].get("1", {}).values()), default=1)
    narrow = console.width < 120 and seeds > 1
    table = Table(title=f"{doc['protocol']['dataset']} / {doc['protocol']['model']}",
                  box=box.SIMPLE_HEAD, padding=(0, 0, 0, 1), caption=f"means over {seeds} seeds; report.md gives ± std"
                  if narrow else None)
    cells = [[cell.split(" ± ")[0] if narrow else cell for cell in row] for row in rows[1:]]
    for i, name in enumerate(rows[0]):  # never cut a word (cells wrap between words instead)
        longest = max(len(word) for row in [rows[0], *cells] for word in row[i].split())
        table.add_column(name, justify="left" if i == 0 else "right", min_width=longest)
    for row in cells:
        table.add_row(*row)
    console.print(table)


def _run(protocol, out: Path, command: str, fresh: bool, threads: int) -> dict:
    """Run a protocol with a live progress display, render the report, print the table."""
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        with _no_empty_folder_left(out):
            return _run_protocol(protocol, out, command, fresh)
    finally:
        torch.set_num_threads(previous)


@contextmanager
def _no_empty_folder_left(out: Path) -> Iterator[None]:
    """A run that fails (or is interrupted) before writing any file removes the --out folder it
    created."""
    existed = out.exists()
    try:
        yield
    except BaseException:
        if not existed and out.is_dir() and not any(p.is_file() for p in out.rglob("*")):
            shutil.rmtree(out, ignore_errors=True)
        raise


@contextmanager
def _decisions_shown_on(console: Console) -> Iterator[None]:
    """Print the growers' INFO lines (each growth decision and why) above the progress bars."""
    from rich.logging import RichHandler

    logger = logging.getLogger("perforate")
    handler = RichHandler(console=console, show_time=False, show_level=False, show_path=False,
                          markup=False, level=logging.INFO)
    level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        yield
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)


def _announce(console: Console, protocol, out: Path, title: str) -> None:
    """What will run and about how long it takes here (from a short calibration)."""
    import torch

    from perforate.experiments.bench.arms import plan_runs
    from perforate.experiments.bench.estimate import estimate

    p, plan = protocol, plan_runs(protocol)
    fractions = sorted({spec.fraction for spec in plan}, reverse=True)
    per_seed = (f"{len(p.seeds)} seeds" if len(p.seeds) > 1 else f"seed {p.seeds[0]}") + (
        f", data fractions {', '.join(f'{f:.0%}' for f in fractions)}" if len(fractions) > 1 else "")
    console.print(f"[bold]{title}[/]: {p.dataset} / {p.model}; {len(plan)} training runs "
                  f"({per_seed}), each at most {p.max_epochs} epochs ({_STOPPING_TEXT[p.stopping]}):",
                  soft_wrap=True)
    for arm in dict.fromkeys(spec.arm for spec in plan):
        console.print(f"  {arm:<11} {_ARM_TEXT.get(arm, '').format(p=p)}", highlight=False)
    with console.status("timing a few epochs of each model on this machine..."):
        guess = estimate(p)
    low, high = min(guess.epoch_seconds.values()), max(guess.epoch_seconds.values())
    console.print(f"Estimated time here: at most about {_duration(guess.total_seconds)} if every "
                  f"run used its whole budget (an epoch takes {low:.2f}-{high:.2f} s, "
                  f"{torch.get_num_threads()} torch thread(s)); runs that stop early take less. "
                  f"Results go to {out}/report.md; Ctrl-C keeps finished runs.", highlight=False,
                  soft_wrap=True)


_STOPPING_TEXT = {"budget": "no early stopping: each keeps its best validation epoch",
                  "patience": "plain runs stop at a plateau, dendritic ones where growth stops"}
_ARM_TEXT = {
    "baseline": "plain model, width {p.width}",
    "gd": "width {p.width} + gradient dendrites (gd)",
    "pb": "width {p.width} + perforated-backpropagation dendrites (pb)",
    "compressed": "width {p.narrow_width} + {p.compressed_mode} dendrites",
    "control": "plain model with the compressed model's parameter count and epochs",
    "pruned": "the baseline magnitude-pruned to the compressed model's parameter count, "
              "fine-tuned with early stopping",
}


def _duration(seconds: float) -> str:
    minutes, rest = divmod(round(seconds), 60)
    return f"{minutes} min {rest} s" if minutes else f"{rest} s"


def _run_protocol(protocol, out: Path, command: str, fresh: bool) -> dict:
    from perforate.experiments.bench.arms import ProtocolHooks, check_protocol, run_protocol
    from perforate.experiments.bench.render import narrative, render_report
    from perforate.experiments.harness.results import prepare_out_dir

    start = time.perf_counter()
    prepare_out_dir(out)
    if fresh:
        _clear(out)
    check_protocol(protocol, out, command)  # fail before the progress display starts
    console = Console(stderr=True)
    _announce(console, protocol, out, command.split(" --")[0])
    with progress_bars(console, "epochs") as progress, _decisions_shown_on(console):
        hooks = _ProgressHooks(progress, protocol, out).hooks()
        try:
            doc = run_protocol(protocol, out, hooks, command=command)
        except KeyboardInterrupt:
            progress.stop()
            typer.echo(f"interrupted; finished runs are kept in {out}. Run the same command "
                       "again to resume.", err=True)
            raise typer.Exit(130) from None
    report = render_report(out)
    stdout = stdout_console()
    print_table(stdout, doc)
    for line in narrative(doc):
        stdout.print(f"- {line}", markup=False)
    stdout.print(f"report: {report}  (took {_duration(time.perf_counter() - start)})")
    return doc


class _ProgressHooks:
    """Two bars: every run's epochs together (its total shrinks when a run stops before its
    budget, so the time left converges), and the current run's."""

    def __init__(self, progress: Progress, protocol, out: Path) -> None:
        from perforate.experiments.bench.arms import plan_runs
        from perforate.experiments.bench.estimate import run_budget

        self.progress, self.out = progress, out
        plan = plan_runs(protocol)
        self.budget = {spec.run_id: run_budget(protocol, spec) for spec in plan}
        self.overall = progress.add_task(f"all {len(plan)} runs", total=sum(self.budget.values()),
                                         info="")
        self.current = progress.add_task("starting", total=1, info="")

    def hooks(self):
        from perforate.experiments.bench.arms import ProtocolHooks

        return ProtocolHooks(on_run_start=self.start, on_epoch=self.epoch, on_run_end=self.end,
                             on_skip=self.skip, on_discard=self.discard)

    def _shrink(self, run_id: str, used: int) -> None:
        task = self.progress.tasks[self.overall]
        self.progress.update(self.overall, total=task.total - (self.budget[run_id] - used))
        self.budget[run_id] = used

    def start(self, spec, budget: int) -> None:
        self._shrink(spec.run_id, budget)  # the control's budget is the compressed run's epochs
        self.progress.reset(self.current, total=budget, description=spec.label, info="")

    def epoch(self, spec, e: int, score: float) -> None:
        self.progress.update(self.current, completed=e + 1, info=f"val {score:.4g}")
        self.progress.advance(self.overall)

    def end(self, spec, record: dict) -> None:
        self._shrink(spec.run_id, record["epochs"])
        self.progress.update(self.current, completed=record["epochs"], total=record["epochs"],
                             info=f"test {record['test_score']:.4g}")

    def skip(self, spec, record: dict) -> None:
        self._shrink(spec.run_id, 0)
        self.progress.console.print(f"skipping {spec.label}: already finished in {self.out}")

    def discard(self, spec) -> None:
        self.progress.console.print(f"{spec.label} was interrupted last time: starting it again")


# ---------------------------------------------------------------------------- bench
@bench_app.callback()
def bench(
    ctx: typer.Context,
    dataset: Annotated[str, typer.Option(help="Dataset: mnist1d, digits, mnist5k, spirals, "
                                         "breast_cancer, wine, diabetes (all offline).")] = "mnist1d",
    model: Annotated[str, typer.Option(help="Standard model: mlp, cnn1d, cnn2d, gru, lstm, transformer.")] = "mlp",
    width: Annotated[int, typer.Option(min=1, help="Width of the baseline, gd and pb arms.")] = 100,
    arms: Annotated[str, typer.Option(help="Comma-separated arms: baseline, gd, pb, compressed, "
                                      "control, pruned (control and pruned also run what they "
                                      "need), reference (perforatedai 3.2.9, when installed)."
                                      )] = "baseline,gd,pb,compressed,control,pruned",
    seeds: Annotated[int, typer.Option(min=1, help="Number of seeds (0 .. N-1); results are "
                                       "mean ± std.")] = 5,
    out: Annotated[Path, typer.Option(help="Results folder; a restarted bench skips the runs "
                                      "already finished there.")] = Path("perforate-bench"),
    epochs: Annotated[int, typer.Option(min=1, help="Epoch budget of every arm.")] = 150,
    patience: Annotated[int, typer.Option(min=1, help="Epochs without improvement of the smoothed "
                                          "validation score that make a plateau: growth, or the "
                                          "end under --stopping patience.")] = 20,
    stopping: Stopping = "budget",
    fractions: Annotated[str, typer.Option(help="Training fractions of the data-efficiency "
                                           "experiment, e.g. 0.1,0.25,0.5,1 (1 = full data only).")] = "1",
    fraction_arms: Annotated[Optional[str], typer.Option(help="Arms to run at fractions below 1 "
                                                         "(default: the same as --arms).")] = None,
    compressed_width: Annotated[Optional[int], typer.Option(min=1, help="Width of the compressed arm "
                                                            "(default: width // 4).")] = None,
    compressed_mode: Annotated[str, typer.Option(help="Dendrite mode of the compressed arm: gd "
                                                 "or pb.")] = "gd",
    finetune_epochs: Annotated[Optional[int], typer.Option(min=1, help="Epoch budget of the pruned arm's "
                                                           "fine-tuning (default: --epochs).")] = None,
    monitor: Annotated[str, typer.Option(help="What early stopping, growth decisions and the "
                                         "kept checkpoint follow: loss (validation loss) or "
                                         "score (validation accuracy / R²).")] = "score",
    lr: Lr = 1e-2,
    batch_size: BatchSize = 100,
    weight_decay: WeightDecay = 0.0,
    config: Annotated[Optional[Path], typer.Option(help="A perforate Config file (.toml/.yaml/"
                                                   ".json) for the dendritic arms; --patience "
                                                   "overrides its patience.")] = None,
    threads: Annotated[int, typer.Option(min=1, help="torch CPU threads (1 keeps timings "
                                         "comparable).")] = 1,
    device: Annotated[str, typer.Option(help="Training device, e.g. cpu or cuda.")] = "cpu",
    fresh: Annotated[bool, typer.Option("--fresh", help="Discard results already in --out and "
                                        "run everything again.")] = False,
) -> None:
    """Run the quality protocol of BENCHMARKS.md and write report.md + results.json to --out.

    Every (arm, seed) result is saved as soon as it finishes; running the same command again
    skips finished runs. Use `perforate report DIR` to re-render the report.
    """
    if ctx.invoked_subcommand is not None:
        return
    options = dict(locals())  # every option above, by name
    with cli_errors():
        protocol = _protocol_of(options)
        _run(protocol, out, _bench_command(protocol, config, out), fresh, threads)


def _protocol_of(o: dict) -> "Protocol":
    """The bench :class:`Protocol` of ``perforate bench``'s options (the device checked here:
    training runs in this process)."""
    import perforate as pf
    from perforate.experiments.bench.arms import Protocol
    from perforate.experiments.harness.settings import check_device

    check_device("--device", o["device"])
    overrides = {}
    if o["config"] is not None:
        overrides = pf.Config.load(o["config"]).to_dict()
        for name in ("patience", "seed", "mode"):
            overrides.pop(name, None)
    return Protocol(
        dataset=o["dataset"], model=o["model"], width=o["width"], arms=_split(o["arms"], "--arms"),
        seeds=list(range(o["seeds"])), max_epochs=o["epochs"],
        patience=o["patience"], stopping=o["stopping"], fractions=_fractions(o["fractions"]),
        fraction_arms=_split(o["fraction_arms"], "--fraction-arms") if o["fraction_arms"] else None,
        finetune_epochs=o["finetune_epochs"], lr=o["lr"], batch_size=o["batch_size"],
        weight_decay=o["weight_decay"], compressed_width=o["compressed_width"],
        compressed_mode=o["compressed_mode"], monitor=o["monitor"], config=overrides,
        device=o["device"])


def _bench_command(protocol, config: Path | None, out: Path) -> str:
    """The ``perforate bench`` line that reproduces ``protocol`` (shown in the report)."""
    p = protocol
    argv = ["perforate", "bench", "--dataset", p.dataset, "--model", p.model, "--width", str(p.width),
            "--arms", ",".join(p.arms), "--seeds", str(len(p.seeds)), "--epochs", str(p.max_epochs),
            "--patience", str(p.patience), "--stopping", p.stopping,
            "--fractions", ",".join(f"{f:g}" for f in p.fractions)]
    if p.fraction_arms:
        argv += ["--fraction-arms", ",".join(p.fraction_arms)]
    for flag, value in (("--compressed-width", p.compressed_width),
                        ("--finetune-epochs", p.finetune_epochs), ("--config", config)):
        if value is not None:
            argv += [flag, str(value)]
    argv += ["--compressed-mode", p.compressed_mode, "--monitor", p.monitor, "--lr", f"{p.lr:g}",
             "--batch-size", str(p.batch_size)]
    if p.weight_decay:
        argv += ["--weight-decay", f"{p.weight_decay:g}"]
    return shlex.join(argv + ["--out", str(out)])
