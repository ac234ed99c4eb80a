"""What a growing run writes, and when: the grower decides, :class:`RunWriter` writes.

Files in ``out_dir``:

- ``history.csv``: one row per epoch, appended; rewritten only when a new column appears or a
  written row changed (the "done" event lands on the last row).
- ``summary.json`` and ``growth.png``: at growth events and at the end (the graph only when
  ``Config.plots``). A "hold" (a plateau where growth cannot help, training on to the budget)
  changes neither the model nor its structure: it is written as an ordinary epoch, so a long
  budgeted run's holds cost what its other epochs cost.
- ``best.pt``: the best model, readable with ``pf.load``: at events and at the end, and also
  whenever the best changed when ``Config.checkpoint_best == "every_best"``. Its history is empty (the
  history is ``history.csv``), so its size does not grow with the run.
- ``state/``: the grower's :meth:`~perforate.Grower.state_dict` (see :func:`save_grower_state`),
  every ``Config.checkpoint_every`` epochs, and at events and the end; ``Grower.resume`` reads it.

Writes of ordinary epochs (history rows, the resume state, ``best.pt`` with "every_best") run on a
background thread, from copies taken at the end of ``Grower.step``, at most once per
``WRITE_INTERVAL_S`` (a resume state that fell due meanwhile is taken then): the next epoch
trains while they are written. A file on disk is always a complete one (atomic writes); it may
trail the last ``step`` by about a second. When two writes wait, only the newer runs (it holds
everything the older one would write). Event outputs and the end of a run wait for pending
writes and then write on the calling thread, so after ``Grower.finish`` (or ``Grower.flush``)
every file is current. The thread exits when idle and is not a daemon: a
process that ends without ``finish`` still completes the write it started. An error in a
background write is raised on the training thread by the next ``step`` (or ``flush``).

Opening a folder (a new run or ``Grower.resume``) takes its lock file ``.perforate.lock``
(:mod:`perforate.runlock`: a second live process on the folder gets ``RunLockedError``; the
lock goes when the run's end is written, and a killed run's lock is replaced), and removes the
temporary files that a writer killed mid-write left beside these files (see
:func:`perforate.files.remove_stale_temps`).

A failed write (disk full) raises :class:`CheckpointError` naming ``out_dir`` and leaves every
file whole (a history row cut mid-way is taken off again); the next ``flush``, ``step`` or
``finish`` writes again.

The writer never reads the grower: at each moment the grower asks :meth:`RunWriter.needs`
what to bring and hands :meth:`RunWriter.write` a frozen record holding it
(:mod:`perforate.records`); the writer decides the cadence itself.
"""
from __future__ import annotations

import csv
import logging
import math
import os
import re
import threading
import time
import weakref
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator, Mapping, Sequence

import torch

from . import checkpoint as ckpt
from .errors import CheckpointError, GrowthError
from .files import atomic_path, remove_stale_temps, write_json
from .growth_plot import plot_run
from .records import BASE_COLUMNS, MOMENTS, BestModel, EpochRecord, Needs
from .runlock import RunLock
from .validation import show

if TYPE_CHECKING:  # pragma: no cover
    from .config import Config

log = logging.getLogger("perforate")

STATE_FORMAT = "perforate-grower/1"
"""``Grower.state_dict()["format"]``."""
RESUME_STEM = "resume"
WRITE_INTERVAL_S = 1.0
"""Between events, an ordinary epoch's files are handed to the writer at most once in this many
seconds (on fast epochs writing them every epoch would cost more than it is worth to a reader or
a resume); they then hold every epoch since. Events, ``Grower.finish`` and ``Grower.flush``
always write."""
_RUN_FILES = {".": ("summary.json", "growth.png", "best.pt"), "state": (f"{RESUME_STEM}*.safetensors",)}
"""The files written atomically into ``out_dir`` and its ``state`` folder (glob patterns)."""
_NOT_IN_META = ("format", "model", "optimizer", "scheduler", "best", "trial", "before")  # stored in their own form
_FILE_KEYS = ("format", "aliases", "state_format", "has_model", "best_file", "trial_file", "before_file",
              "optim")


class HistoryWriter:
    """Appends one CSV row per epoch; rewrites the file (atomically) only when a new column
    appears, a written row changed, or an append failed."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.columns: list[str] = []
        self.rows_written = 0
        self._damaged = False  # an append failed: the next write rewrites the whole file

    def write(self, rows: Sequence[Mapping[str, Any]], rewrite: bool = False) -> None:
        """Make the file hold ``rows``; appends only the rows not yet written unless a new
        column appeared or ``rewrite`` (an already written row changed)."""
        columns = list(self.columns or BASE_COLUMNS)
        for row in rows[self.rows_written:] if self.columns else rows:
            columns += [k for k in row if k not in columns]
        if rewrite or self._damaged or columns != self.columns or not self.path.exists():
            self._damaged = True  # until the rewrite is done: one that failed is tried again
            with atomic_path(self.path) as tmp, open(tmp, "w", newline="") as f:
                writer = csv.DictWriter(f, fieldnames=columns)
                writer.writeheader()
                writer.writerows(rows)
            self.columns, self._damaged = columns, False
        elif len(rows) > self.rows_written:
            size = self.path.stat().st_size
            try:
                with open(self.path, "a", newline="") as f:
                    csv.DictWriter(f, fieldnames=columns).writerows(rows[self.rows_written:])
            except BaseException:
                # a row cut mid-way (disk full) must not stay glued to the next one: cut it off
                # (truncating needs no space); the next write rewrites the file in any case
                self._damaged = True
                try:
                    os.truncate(self.path, size)
                except OSError:
                    pass
                raise
        self.rows_written = len(rows)


class RunWriter:
    """Writes one run to ``out_dir`` from the records the grower hands it (see
    :mod:`perforate.records`): at each moment the grower asks :meth:`needs`, then hands
    :meth:`write` the record. It never reads the grower."""

    def __init__(self, out_dir: str | Path) -> None:
        self.out_dir = Path(out_dir)
        try:
            (self.out_dir / "state").mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise GrowthError(f"cannot create out_dir {self.out_dir}: {exc}; "
                              "pass a writable folder or out_dir=None") from exc
        lock = RunLock(self.out_dir)  # one live writer per folder (RunLockedError otherwise)
        self._unlock = weakref.finalize(self, lock.release)
        for sub, patterns in _RUN_FILES.items():
            for tmp in remove_stale_temps(self.out_dir / sub, patterns):
                log.info("removed %s, left by a writer that was killed mid-write", tmp)
        self.history = HistoryWriter(self.out_dir / "history.csv")
        self._rows: list[Mapping[str, Any]] = []  # the run's history rows, as the records gave them
        self._best_pt_version = 0  # the best_version that best.pt holds
        self._state_best_version = 0  # the best_version this writer wrote into state/
        self._best_submitted = 0  # the best_version handed to a background write
        self._write_time = -math.inf  # when the last writes were handed over or made
        self._owed = False  # epochs whose files WRITE_INTERVAL_S held back
        self._state_owed = False  # ... among them, one whose resume state was due
        self._background = _Worker()
        self.ended = False
        """The end of the run (its "done" event) is written: every file says so."""

    def needs(self, moment: str, epoch: int, config: Config, event: str = "",
              done: bool = False) -> Needs:
        """What the record of ``moment`` (see :data:`perforate.records.MOMENTS`) must carry;
        ``epoch``: the epochs done; ``event`` and ``done``: an epoch's decision.

        An epoch with an event (other than "hold", which changes no model or structure) or
        that ends the run, a growth between epochs and the run's end rewrite every output;
        an ordinary epoch's files go to the background at most once per ``WRITE_INTERVAL_S``
        (the resume state every ``config.checkpoint_every`` epochs, ``best.pt`` with "every_best"
        when the best changed); a flush hands over what the interval held back."""
        if moment not in MOMENTS:
            raise GrowthError(f"unknown moment {moment!r}; use one of {', '.join(MOMENTS)}")
        every, known = config.checkpoint_every, len(self._rows)
        if moment == "epoch" and ((event and event != "hold") or done):
            moment = "outputs"
        if moment in ("outputs", "between", "end"):
            return Needs(moment, rows_from=known if moment == "outputs" else max(known - 1, 0),
                         state=bool(every), best=True, summary=True, graph=config.plots)
        if moment == "restart":
            return Needs(moment, rows_from=0)
        if moment == "epoch":
            submit = time.monotonic() - self._write_time >= WRITE_INTERVAL_S
            state_due = self._state_owed or (bool(every) and epoch % every == 0)
        else:  # flush
            submit, state_due = self._owed, self._state_owed
        return Needs(moment, rows_from=known, submit=submit, state=submit and state_due,
                     state_due=state_due, best=submit and config.checkpoint_best == "every_best",
                     best_held=self._best_submitted)

    def write(self, record: EpochRecord) -> None:
        """Write what ``record`` (built for :meth:`needs`) holds, at once or in the background."""
        needs = record.needs
        self._rows[needs.rows_from:] = record.rows
        if needs.action in ("outputs", "between"):
            if needs.action == "outputs":
                self.ended = False
            with self._writing():
                self.flush()
                self.history.write(self._rows, rewrite=needs.action == "between")
                self._outputs(record)
            if needs.action == "outputs" and record.done:
                self.ended = True
                self._unlock()
        elif needs.action == "end":
            self.ended = False
            with self._writing():
                self._background.close()
                self.history.write(self._rows, rewrite=True)
                self._outputs(record)
            self.ended = True
            self._unlock()
        elif needs.action == "restart":  # the loaded history replaces the file's
            with self._writing():
                self.flush()
                self.history.write(self._rows, rewrite=True)
        elif needs.action == "epoch":
            self._state_owed |= needs.state_due
            self._owed = True
            if needs.submit:
                self._submit(record)
        else:  # flush
            if needs.submit:
                self._submit(record)
            self.flush()

    @contextmanager
    def _writing(self) -> Iterator[None]:
        """Raise a failed write (disk full, permissions) as CheckpointError naming ``out_dir``;
        what failed is handed over again by the next flush or epoch."""
        try:
            yield
        except CheckpointError as exc:
            self._owed = True
            if str(self.out_dir) in str(exc):
                raise
            raise CheckpointError(f"cannot write the run's files in {self.out_dir}: {exc}") from exc
        except OSError as exc:
            self._owed = True
            raise CheckpointError(
                f"cannot write the run's files in {self.out_dir}: {exc}; make room (or fix the "
                "folder), then call Grower.finish() (or flush()) again: every file is rewritten "
                "whole, none is left half-written") from exc

    def flush(self) -> None:
        """Wait until the background writes are on disk; raise the error of a write that failed.
        (A "flush" record first hands over what ``WRITE_INTERVAL_S`` held back.)"""
        with self._writing():
            self._background.flush()

    def _submit(self, record: EpochRecord) -> None:
        """Hand the epochs' writes since the last ones, from copies, to the background thread
        (first raising the error of a failed earlier one)."""
        with self._writing():
            self._background.check()
        state = None
        if record.state is not None:  # fresh containers; the live tensors are copied
            state = {k: _copied(v) if k in ("model", "optimizer", "scheduler") else v
                     for k, v in record.state.items()}
        self._write_time, self._owed, self._state_owed = time.monotonic(), False, False
        if record.best is not None:
            self._best_submitted = record.best.version
        # the rows are read-only: a later decision that marks the last one hands over a new one
        self._background.submit(_EpochWrite(self, tuple(self._rows), state, record.best))

    def _outputs(self, record: EpochRecord) -> None:
        """An event's or the end's outputs, on the calling thread: every file is rewritten."""
        if record.best is not None:
            self._write_best(record.best.snapshot, record.best.version, record.best.score)
        if record.graph is not None:
            plot_run(self._rows, record.graph, self.out_dir / "growth.png")
        if record.state is not None:
            self._save_state(record.state)
        write_json(self.out_dir / "summary.json", record.summary)  # last: says "done" when all is
        self._write_time, self._owed, self._state_owed = time.monotonic(), False, False

    def _save_state(self, state_dict: Mapping[str, Any]) -> None:
        save_grower_state(self.out_dir / "state", state_dict,
                          best_written=state_dict["best_version"] == self._state_best_version)
        self._state_best_version = state_dict["best_version"]

    def _write_best(self, best: Mapping[str, Any] | None, version: int, score: float | None) -> None:
        """``best.pt``: the model without the run's history (that is history.csv; carried along,
        it made the model file and every write of it grow with the run)."""
        if best is None:
            return
        ckpt.write_tensors(self.out_dir / "best.pt", best["state"],
                           {"structure": best["structure"], "history": [],
                            "extra": {"best_score": score, "history_file": "history.csv"}})
        self._best_pt_version = version


class _EpochWrite:
    """An ordinary epoch's writes, from copies: history rows, the resume state (or None) and,
    with "every_best", the best snapshot with its version and score (or None)."""

    def __init__(self, writer: RunWriter, rows: tuple[Mapping[str, Any], ...],
                 state: dict[str, Any] | None, best: BestModel | None) -> None:
        self.writer, self.rows, self.state, self.best = writer, rows, state, best

    def covers(self, older: _EpochWrite) -> bool:
        """True when this write leaves the files as ``older`` would and newer (so ``older``
        need not run): it writes every row, and a resume state and best model if ``older`` does."""
        return (self.state is not None or older.state is None) and \
            (self.best is not None or older.best is None)

    def __call__(self) -> None:
        writer = self.writer
        writer.history.write(self.rows)
        if self.best is not None and self.best.version != writer._best_pt_version:
            writer._write_best(self.best.snapshot, self.best.version, self.best.score)
        if self.state is not None:
            writer._save_state(self.state)


class _Worker:
    """Runs submitted jobs in order on one thread; a job is dropped when the one submitted after
    it :meth:`~_EpochWrite.covers` it before it started. The thread starts on demand and exits
    after ``_IDLE_S`` without work (or at :meth:`close`); starting one costs about as much as a
    write, so it waits that long for the next epoch's."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._jobs: list[_EpochWrite] = []
        self._busy = False
        self._closing = False
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None

    def check(self) -> None:
        """Raise the error of a write that failed (once)."""
        self._raise()

    def submit(self, job: _EpochWrite) -> None:
        self._raise()
        with self._cond:
            if self._jobs and job.covers(self._jobs[-1]):
                self._jobs[-1] = job
            else:
                self._jobs.append(job)
            self._closing = False
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="perforate-writer")
                self._thread.start()
            self._cond.notify_all()

    def flush(self) -> None:
        with self._cond:
            self._cond.wait_for(lambda: not self._jobs and not self._busy)
        self._raise()

    def close(self) -> None:
        """Flush, then let the thread exit now."""
        self.flush()
        with self._cond:
            self._closing = True
            self._cond.notify_all()
            thread = self._thread
        if thread is not None:
            thread.join()

    def _run(self) -> None:
        while True:
            with self._cond:
                if not self._cond.wait_for(lambda: self._jobs or self._closing, timeout=_IDLE_S) \
                        or not self._jobs:
                    self._thread = None
                    return
                job, self._busy = self._jobs.pop(0), True
            try:
                job()
            except BaseException as exc:  # reported on the training thread
                with self._cond:
                    self._error, self._jobs = exc, []
            finally:
                with self._cond:
                    self._busy = False
                    self._cond.notify_all()

    def _raise(self) -> None:
        error, self._error = self._error, None
        if error is not None:
            raise error


_IDLE_S = 1.0


def _copied(value: Any) -> Any:
    """``value`` with every tensor replaced by a detached copy (containers rebuilt, other values
    shared): what a background write may read while training changes the originals in place."""
    if isinstance(value, torch.Tensor):
        return value.detach().clone()
    if isinstance(value, dict):
        return {k: _copied(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_copied(v) for v in value)
    return value


# ---------------------------------------------------------------------- grower state on disk
def save_grower_state(folder: str | Path, state_dict: dict[str, Any], stem: str = RESUME_STEM,
                      best_written: bool = False) -> None:
    """Write a :meth:`Grower.state_dict` to ``folder`` without pickle.

    ``<stem>.safetensors`` holds the model and optimizer tensors (when present) with everything
    else as JSON; the best snapshot goes to ``<stem>.best-<version>.safetensors``.
    ``best_written``: an earlier call already wrote this version of the best there (the best
    changes far less often than the weights). The main file is written last and names its best
    file, so a crash never pairs a state with another state's best model.
    """
    folder = Path(folder)
    best, version = state_dict.get("best"), state_dict["best_version"]
    best_name = f"{stem}.best-{version}.safetensors" if best is not None else None
    if best_name is not None and not (best_written and (folder / best_name).is_file()):
        ckpt.write_tensors(folder / best_name, best["state"], {"structure": best["structure"]})
    # a grown model on trial and the model from before its growth (perforate.snapshots): small, and
    # present only during a growth cycle
    names = {}
    for key in ("trial", "before"):
        snap, names[key] = state_dict.get(key), None
        if snap is not None:
            names[key] = f"{stem}.{key}.safetensors"
            ckpt.write_tensors(folder / names[key], snap["state"], {"structure": snap["structure"]})
    tensors = {f"model/{k}": v for k, v in state_dict.get("model", {}).items()}
    meta = {k: v for k, v in state_dict.items() if k not in _NOT_IN_META}
    meta.update(state_format=state_dict["format"], has_model="model" in state_dict, best_file=best_name,
                trial_file=names["trial"], before_file=names["before"])
    if "optimizer" in state_dict:
        optim_tensors, meta["optim"] = ckpt.optimizer_state_to_tensors(
            {"optimizer": state_dict["optimizer"], "scheduler": state_dict["scheduler"]})
        tensors.update({f"optim/{k}": v for k, v in optim_tensors.items()})
    ckpt.write_tensors(folder / f"{stem}.safetensors", tensors, meta)
    for old in folder.glob(f"{stem}.best-*.safetensors"):
        if old.name != best_name:
            old.unlink(missing_ok=True)


def load_grower_state(folder: str | Path, stem: str = RESUME_STEM) -> dict[str, Any]:
    """Read what :func:`save_grower_state` wrote: a dict for :meth:`Grower.load_state_dict`.

    Raises CheckpointError for a damaged or foreign file (its parts are checked further by
    ``load_state_dict``)."""
    folder = Path(folder)
    path = folder / f"{stem}.safetensors"
    tensors, meta = ckpt.read_tensors(path)
    if meta.get("state_format") != STATE_FORMAT:
        raise CheckpointError(f"{path} holds no grower state (format {show(meta.get('state_format'))})")
    files = {key: meta.get(f"{key}_file") for key in ("best", "trial", "before")}
    if not isinstance(meta.get("has_model"), bool) or not all(
            name is None or _sibling_name(name, stem) for name in files.values()):
        shown = ", ".join(f"{key}_file={show(name)}" for key, name in files.items())
        raise CheckpointError(f"{path} is damaged: has_model={show(meta.get('has_model'))}, "
                              f"{shown}; resume from another copy")
    state_dict = {k: v for k, v in meta.items() if k not in _FILE_KEYS}
    state_dict["format"] = meta["state_format"]
    if meta["has_model"]:
        state_dict["model"] = {k[6:]: v for k, v in tensors.items() if k.startswith("model/")}
    if "optim" in meta:
        optim = {k[6:]: v for k, v in tensors.items() if k.startswith("optim/")}
        parts = ckpt.optimizer_state_from_tensors(optim, meta["optim"])
        if not (isinstance(parts, dict) and set(parts) == {"optimizer", "scheduler"}):
            raise CheckpointError(f"{path} has a damaged optimizer state; resume from another copy")
        state_dict.update(parts)
    for key, name in files.items():
        state_dict[key] = None
        if name is not None:
            snap, snap_meta = ckpt.read_tensors(folder / name)
            state_dict[key] = {"structure": snap_meta.get("structure"), "state": snap}
    return state_dict


def _sibling_name(name: Any, stem: str) -> bool:
    """True for a plain file name in the state folder that belongs to ``stem`` (no path parts)."""
    return isinstance(name, str) and re.fullmatch(rf"{re.escape(stem)}\.[\w.-]+", name) is not None
