"""Weights & Biases: log dendritic growth to a run.

Add to an existing loop (3 lines)::

    from perforate.integrations.wandb import GrowthLogger
    wb = GrowthLogger(run)                    # run = wandb.init(...); None: the active run
    ...
        d = grower.step(val_acc)
        wb.log_epoch(grower, d)               # once per epoch, after grower.step
    grower.finish(); wb.log_final(grower)

Each epoch logs ``perforate/score``, ``perforate/phase`` (text), ``perforate/dendrite_phase``
(0/1), ``perforate/dendrites``, ``perforate/params``, ``perforate/lr``, ``perforate/best_score``,
``perforate/event`` and every extra score given to ``grower.step``, against the step metric
``perforate/epoch`` (so it does not clash with the steps of your own ``run.log`` calls). The
growth graph is logged as ``perforate/growth`` (a ``wandb.Image``) at growth events and at the
end; ``log_final`` also fills the run summary (best score and epoch, dendrites per layer,
parameters, FLOPs, switch epochs).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from .. import Decision, Grower, GrowthError
from ..integration_api import HISTORY_BASE_COLUMNS, plot_grower, require_extra

wandb = require_extra("wandb", "wandb")


class GrowthLogger:
    """Logs a :class:`perforate.Grower`'s epochs, graph and summary to a wandb run.

    Args:
        run: a run from ``wandb.init``; None uses the active ``wandb.run``.
        prefix: prefix of every logged key.
        log_graph: log the growth graph at growth events and at the end.
    """

    def __init__(self, run: Any = None, prefix: str = "perforate/", log_graph: bool = True) -> None:
        run = run if run is not None else wandb.run
        if run is None:
            raise GrowthError("no wandb run: call wandb.init(...) first or pass GrowthLogger(run)")
        self.run = run
        self.prefix = prefix
        self.log_graph = log_graph
        self._defined = False

    def _define(self) -> None:
        if not self._defined:
            self.run.define_metric(self.prefix + "epoch")
            self.run.define_metric(self.prefix + "*", step_metric=self.prefix + "epoch")
            self._defined = True

    def log_epoch(self, grower: Grower, decision: Decision | None = None) -> dict[str, Any]:
        """Log the grower's latest epoch (call after ``grower.step``); returns what was logged."""
        if not grower.history:
            raise GrowthError("log_epoch needs at least one grower.step(...) first")
        self._define()
        p = self.prefix
        row = grower.history[-1]
        data: dict[str, Any] = {
            p + "epoch": row["epoch"], p + "score": row["score"], p + "phase": row["phase"],
            p + "dendrite_phase": int(row["phase"] == "dendrite"), p + "dendrites": row["dendrites"],
            p + "params": row["params"], p + "lr": row["lr"], p + "event": row["event"],
        }
        if grower.best_score is not None:
            data[p + "best_score"] = grower.best_score
        for key, value in row.items():
            if key not in HISTORY_BASE_COLUMNS and isinstance(value, (int, float)) and not isinstance(value, bool):
                data[p + key] = value
        if self.log_graph and (row["event"] or (decision is not None and decision.done)):
            data[p + "growth"] = self._graph(grower)
        self.run.log(data)
        return data

    def log_final(self, grower: Grower) -> dict[str, Any]:
        """Fill the run summary from ``grower.summary()`` and log the final growth graph."""
        self._define()
        p = self.prefix
        s = grower.summary()
        summary = {p + k: s[k] for k in ("best_score", "best_epoch", "best_dendrites", "epochs",
                                         "params", "flops_per_sample", "switch_epochs",
                                         "dendrites_by_layer") if s.get(k) is not None}
        for key, value in summary.items():
            self.run.summary[key] = value
        if self.log_graph and grower.history:
            self.run.log({p + "epoch": grower.history[-1]["epoch"], p + "growth": self._graph(grower)})
        return summary

    def _graph(self, grower: Grower):
        """The grower's growth.png when it writes one, else a fresh drawing in the run's folder."""
        path = grower.out_dir / "growth.png" if grower.out_dir is not None else None
        if path is None or not path.is_file():
            path = Path(self.run.dir) / "perforate_growth.png"
            plot_grower(grower, path)
        return wandb.Image(str(path))
