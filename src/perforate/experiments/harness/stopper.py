"""Early stopping for plain training, shaped like :class:`perforate.Grower`.

One training loop drives plain and dendritic runs: both controllers take ``step(score)`` once per
epoch and answer a :class:`perforate.Decision`, rebuild ``optimizer`` when they restructure and
return the best model from ``finish()``. Both count an epoch as an improvement by the same rule,
``Config.better`` (direction and thresholds).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterable

from torch import nn

import perforate as pf
from perforate.grower import OptimizerFactory
from perforate.plateau import Plateau
from perforate.policy import at_plateau


@dataclass
class StopperState:
    """What the stopper decides from (the names match :class:`perforate.GrowerState`)."""

    epoch: int = 0
    best_score: float | None = None
    best_epoch: int = -1
    plateau: Plateau = field(default_factory=Plateau)
    """The smoothed window, best smoothed score and stale count (the grower's plateau)."""


class EarlyStopper:
    """Stops plain training after ``config.patience`` epochs without improvement of the
    smoothed score (the mean of the last ``config.smoothing``), the rule the grower calls a
    plateau; the weights kept are the best single epoch's.

    Args:
        model: the model being trained.
        config: ``patience``, ``maximize`` and the improvement thresholds are used.
        optimizer_factory: builds the optimizer from the trainable parameters.
        stop_early: False trains the whole epoch budget (``step`` never answers done) and still
            returns the best epoch's weights.
        restart_epochs: epochs at whose start the optimizer is built afresh (``step`` reports a
            restructure), reproducing the optimizer restarts of a dendritic run.
    """

    phase = "neuron"

    def __init__(self, model: nn.Module, config: pf.Config, optimizer_factory: OptimizerFactory,
                 stop_early: bool = True, restart_epochs: Iterable[int] = ()) -> None:
        self.model = model
        self.config = config
        self.optimizer_factory = optimizer_factory
        self.stop_early = stop_early
        self.restart_epochs = {int(e) for e in restart_epochs}
        self.state = StopperState()
        self.optimizer = self._new_optimizer()
        self._best: dict[str, Any] | None = None

    @property
    def best_score(self) -> float | None:
        return self.state.best_score

    def _new_optimizer(self):
        return self.optimizer_factory([p for p in self.model.parameters() if p.requires_grad])

    def step(self, score: float, **extra_scores: float) -> pf.Decision:
        """Record one epoch's monitored score; extra scores are accepted and ignored."""
        s, cfg = self.state, self.config
        improved = cfg.better(score, s.best_score)
        if improved:
            s.best_score, s.best_epoch = score, s.epoch
            self._best = {k: v.detach().clone() for k, v in self.model.state_dict().items()}
        s.plateau.update(score, cfg.smoothing, cfg.better)
        epoch, s.epoch = s.epoch, s.epoch + 1
        done = self.stop_early and at_plateau(s.plateau, cfg)
        restart = not done and s.epoch in self.restart_epochs
        if restart:
            self.optimizer = self._new_optimizer()
        return pf.Decision(restructured=restart, done=done, phase="neuron", event="done" if done else "",
                           improved=improved, epoch=epoch)

    def finish(self) -> nn.Module:
        """Restore the best epoch's weights and return the model."""
        if self._best is not None:
            self.model.load_state_dict(self._best)
        return self.model
