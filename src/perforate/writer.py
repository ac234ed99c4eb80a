"""What a growing run writes, and when: the grower decides, :class:`RunWriter` writes.

Files in ``out_dir``:

- ``history.csv``: one row per epoch, appended; rewritten only when a new column appears or a
  written row changed (the "done" event lands on the last row).
- ``summary.json`` and ``growth.png``: at growth events and at the end (the graph only when
  ``Config.plots``).
- ``best.pt``: the best model, readable with ``pf.load``: at events and at the end, and also
  whenever the best changed when ``Config.checkpoint_best == "disk"``.
- ``state/``: the grower's :meth:`~perforate.Grower.state_dict` (see :func:`save_grower_state`),
  every ``Config.checkpoint_every`` epochs and at events; ``Grower.resume`` reads it.

The writer reads only the grower's public face (``history``, ``config``, ``state``,
``best_version``, ``summary()``, ``state_dict()``) and decides the cadence itself, so moving writes
off the training thread would change this file alone.
"""
from __future__ import annotations

import csv
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

from . import checkpoint as ckpt
from .checks import show
from .errors import CheckpointError, GrowthError
from .files import write_json
from .report import BASE_COLUMNS, plot_grower

if TYPE_CHECKING:  # pragma: no cover
    from .grower import Decision, Grower

STATE_FORMAT = "perforate-grower/1"
"""``Grower.state_dict()["format"]``."""
RESUME_STEM = "resume"
_NOT_IN_META = ("format", "model", "optimizer", "scheduler", "best")  # stored in their own form
_FILE_KEYS = ("format", "aliases", "state_format", "has_model", "best_file", "optim")


class HistoryWriter:
    """Appends one CSV row per epoch; rewrites the file only when a new column appears."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.columns: list[str] = []
        self.rows_written = 0

    def write(self, rows: list[dict[str, Any]], rewrite: bool = False) -> None:
        """Make the file hold ``rows``; appends only the rows not yet written unless a new
        column appeared or ``rewrite`` (an already written row changed)."""
        columns = list(self.columns or BASE_COLUMNS)
        for row in rows[self.rows_written:] if self.columns else rows:
            columns += [k for k in row if k not in columns]
        if rewrite or columns != self.columns or not self.path.exists():
            self.columns = columns
            with open(self.path, "w", newline="") as f:
                writer = csv.DictWriter(f, fieldnames=columns)
                writer.writeheader()
                writer.writerows(rows)
        elif len(rows) > self.rows_written:
            with open(self.path, "a", newline="") as f:
                csv.DictWriter(f, fieldnames=columns).writerows(rows[self.rows_written:])
        self.rows_written = len(rows)


class RunWriter:
    """Writes one grower's run to ``out_dir``; call :meth:`epoch_end` after every ``step``."""

    def __init__(self, out_dir: str | Path) -> None:
        self.out_dir = Path(out_dir)
        try:
            (self.out_dir / "state").mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise GrowthError(f"cannot create out_dir {self.out_dir}: {exc}; "
                              "pass a writable folder or out_dir=None") from exc
        self.history = HistoryWriter(self.out_dir / "history.csv")
        self._best_pt_version = 0  # the best_version that best.pt holds
        self._state_best_version = 0  # the best_version this writer wrote into state/

    def epoch_end(self, grower: Grower, decision: Decision) -> None:
        """Write what this epoch changed: the history row, and more at events and at the end."""
        self.history.write(grower.history)
        self._outputs(grower, event=bool(decision.event) or decision.done)

    def run_end(self, grower: Grower) -> None:
        """After ``Grower.finish``: the "done" event marked a row already written; final outputs."""
        self.history.write(grower.history, rewrite=True)
        self._outputs(grower, event=True)

    def restart(self, grower: Grower) -> None:
        """After ``Grower.load_state_dict``: the history file holds the loaded rows only."""
        self.history.write(grower.history, rewrite=True)

    def _outputs(self, grower: Grower, event: bool) -> None:
        config = grower.config
        best_changed = grower.best_version != self._best_pt_version
        if event or (config.checkpoint_best == "disk" and best_changed):
            self._write_best(grower)
        if event:
            write_json(self.out_dir / "summary.json", grower.summary())
            if config.plots:
                plot_grower(grower, self.out_dir / "growth.png")
        every = config.checkpoint_every
        if every and (grower.state.epoch % every == 0 or event):
            state_dict = grower.state_dict()
            save_grower_state(self.out_dir / "state", state_dict,
                              best_written=state_dict["best_version"] == self._state_best_version)
            self._state_best_version = state_dict["best_version"]

    def _write_best(self, grower: Grower) -> None:
        best = grower.state_dict(model=False, optimizer=False)["best"]
        if best is None:
            return
        ckpt.write_tensors(self.out_dir / "best.pt", best["state"],
                           {"structure": best["structure"], "history": grower.history,
                            "extra": {"best_score": grower.best_score}})
        self._best_pt_version = grower.best_version


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
    tensors = {f"model/{k}": v for k, v in state_dict.get("model", {}).items()}
    meta = {k: v for k, v in state_dict.items() if k not in _NOT_IN_META}
    meta.update(state_format=state_dict["format"], has_model="model" in state_dict, best_file=best_name)
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
    best_file = meta.get("best_file")
    if not isinstance(meta.get("has_model"), bool) or not (
            best_file is None or _sibling_name(best_file, stem)):
        raise CheckpointError(f"{path} is damaged: has_model={show(meta.get('has_model'))}, "
                              f"best_file={show(best_file)}; resume from another copy")
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
    state_dict["best"] = None
    if best_file is not None:
        best, best_meta = ckpt.read_tensors(folder / best_file)
        state_dict["best"] = {"structure": best_meta.get("structure"), "state": best}
    return state_dict


def _sibling_name(name: Any, stem: str) -> bool:
    """True for a plain file name in the state folder that belongs to ``stem`` (no path parts)."""
    return isinstance(name, str) and re.fullmatch(rf"{re.escape(stem)}\.[\w.-]+", name) is not None
