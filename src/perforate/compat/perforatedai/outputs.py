"""The files a perforatedai run leaves in ``<save_name>/``, written with perforate's own tools.

``<save_name>.png`` is :func:`perforate.integration_api.plot_growth` (scores with growth points, phases,
parameters). It and the score CSVs (the reference's names and headers, one row per epoch) are
rewritten at growth events, at the end and every ``GRAPH_EVERY`` epochs, not every epoch.
Checkpoints (``latest.pt``, ``best_model.pt``) are :func:`perforate.save` files: safetensors
plus JSON, never pickle; ``latest.pt`` (and ``UPA.save_system``) also keep the tracker's state
beside them so ``UPA.load_system`` can continue the run.

The folder (``save_name``), ``test_saves`` and ``drawing_pai`` are read from ``GPA.pc`` at each
write, as perforatedai reads them, so a ``GPA.pc.set_save_name(...)`` after conversion moves
the run's later files (perforatedai moves only its checkpoints and keeps its graph and CSVs in
the first folder; perforate keeps a run's files together).
"""
from __future__ import annotations

import csv
from pathlib import Path
from typing import Any, Iterable

from torch import nn

from ... import save
from ...integration_api import load_grower_state, plot_growth, save_grower_state

GRAPH_EVERY = 50
SWITCH_EVENTS = ("grow", "retry", "dendrite_start", "join")


def is_switch(row: dict[str, Any]) -> bool:
    return any(e in SWITCH_EVENTS for e in str(row.get("event", "")).split("+"))


class RunFiles:
    """Writes one run's graph, tables and checkpoints under ``<save_name>/`` (named like the
    reference); ``settings`` is ``GPA.pc``, read at each write."""

    def __init__(self, settings: Any, generation: str, making_graphs: bool) -> None:
        self.settings = settings
        self.generation = generation
        self.making_graphs = making_graphs

    @property
    def folder(self) -> Path:
        return Path(self.settings.value("save_name") or "PAI")

    @property
    def prefix(self) -> str:
        return self.folder.name

    @property
    def graphs(self) -> bool:
        return bool(self.making_graphs and self.settings.value("drawing_pai"))

    @property
    def checkpoints(self) -> bool:
        return bool(self.settings.value("test_saves"))

    def checkpoint(self, model: nn.Module, name: str, history: list[dict] | None = None,
                   tracker_state: dict[str, Any] | None = None) -> None:
        write_system(model, self.folder, name, history, tracker_state)

    def graph(self, history: list[dict[str, Any]], title: str, suffix: str = "",
              final_params: int | None = None, best_epoch: int | None = None) -> None:
        """``<save_name><suffix>.png``; ``final_params``: the size of the model kept at the end
        (the best one restored), the parameter panel's last step."""
        if self.graphs and history:
            self.folder.mkdir(parents=True, exist_ok=True)
            plot_growth(history, self.folder / f"{self.prefix}{suffix}.png", title=title,
                        final_params=final_params, best_epoch=best_epoch)

    def tables(self, rows: list[dict[str, Any]], extra_names: Iterable[str], test_names: list[str],
               maximize: bool, suffix: str = "") -> None:
        """Scores, learning rates, epoch times, switch epochs, parameter counts, best per architecture."""
        if not rows:
            return
        self.folder.mkdir(parents=True, exist_ok=True)
        p = f"{self.prefix}{suffix}"
        names = list(extra_names)
        self._csv(f"{p}Scores.csv", ["Epochs", "Validation Scores", "Validation Running Scores", *names],
                  [[r["epoch"], r["score"], r["running"], *(r.get(n, "") for n in names)] for r in rows])
        self._csv(f"{p}learning_rate.csv", ["Epochs", "learning_rate"], [[r["epoch"], r["lr"]] for r in rows])
        self._csv(f"{p}Times.csv", ["Epochs", "Normal Epoch Times", "PAI Epoch Times"],
                  [[r["epoch"], *((r["seconds"], "") if r["phase"] == "neuron" else ("", r["seconds"]))]
                   for r in rows])
        switches = [r for r in rows if is_switch(r)]
        self._csv(f"{p}switch_epochs.csv", ["Switch Number", "Switch Epoch"],
                  [[i, r["epoch"]] for i, r in enumerate(switches)])
        self._csv(f"{p}param_counts.csv", ["Switch Number", "Param Count"],
                  list(enumerate(param_counts(rows))))
        best = best_by_architecture(rows, maximize)
        if self.generation == "3.2":
            self._csv(f"{p}_best_arch_scores.csv", ["Param Counts", "Max Valid Scores", *names],
                      [[r["params"], r["score"], *(r.get(n, "") for n in names)] for r in best])
        else:
            test = test_names[0] if test_names else None
            self._csv(f"{p}best_test_scores.csv", ["Param Counts", "Max Valid Scores", "Max Test Scores"],
                      [[r["params"], r["score"], r.get(test, "") if test else ""] for r in best])

    def _csv(self, name: str, header: list[str], rows: list[list[Any]]) -> None:
        with open(self.folder / name, "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(header)
            writer.writerows(rows)


def write_system(model: nn.Module, folder: str | Path, name: str, history: list[dict] | None = None,
                 tracker_state: dict[str, Any] | None = None) -> None:
    """``<folder>/<name>.pt`` (:func:`perforate.save`) and, given a tracker state, beside it
    ``<name>.tracker.safetensors`` (:func:`perforate.integration_api.save_grower_state`): no pickle."""
    save(model, Path(folder) / f"{name}.pt", history=history)
    if tracker_state is not None:
        save_grower_state(folder, tracker_state, stem=f"{name}.tracker")


def read_tracker_state(folder: str | Path, name: str) -> dict[str, Any] | None:
    """The tracker state :func:`write_system` stored beside ``<name>.pt``, or None."""
    if not (Path(folder) / f"{name}.tracker.safetensors").is_file():
        return None
    return load_grower_state(folder, stem=f"{name}.tracker")


def param_counts(rows: list[dict[str, Any]]) -> list[int]:
    """Parameters at the start and after each switch."""
    return [rows[0]["params"], *(r["params_after"] for r in rows if is_switch(r))] if rows else []


def best_by_architecture(rows: list[dict[str, Any]], maximize: bool) -> list[dict[str, Any]]:
    """Per dendrite count, the neuron-phase row with the best validation score."""
    best: dict[int, dict[str, Any]] = {}
    for row in rows:
        if row["phase"] != "neuron":
            continue
        held = best.get(row["dendrites"])
        if held is None or (row["score"] > held["score"] if maximize else row["score"] < held["score"]):
            best[row["dendrites"]] = row
    return [best[k] for k in sorted(best)]
