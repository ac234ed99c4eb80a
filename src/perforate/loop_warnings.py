"""Warnings about likely mistakes in a training loop that drives a :class:`perforate.Grower`.

- :class:`StaleOptimizerWarning`: after a restructure the loop keeps stepping an optimizer that
  does not hold the new parameters (``opt = grower.optimizer`` kept across a growth, or an
  optimizer built before the grower), so new dendrites never train.
- :class:`ScoreDirectionWarning`: the score moves steadily the way ``Config.score_mode`` calls
  worse (a falling loss fed with ``"max"``, a rising accuracy with ``"min"``).

Each warns once per grower, through :mod:`warnings` (filter them by category).
"""
from __future__ import annotations

import warnings
import weakref
from typing import Any, Sequence

import torch
from torch import nn

from .config import Config

DIRECTION_EPOCHS = 5
"""Scores looked at by :func:`direction_problem`: the first epoch's and the next four."""
_SAMPLE = 64  # values compared per new parameter tensor


class PerforateWarning(UserWarning):
    """Base class of perforate's warnings: the library is probably being used by mistake."""


class StaleOptimizerWarning(PerforateWarning):
    """The optimizer stepped after a restructure does not train the grower's new parameters."""


class ScoreDirectionWarning(PerforateWarning):
    """The validation score keeps moving the way ``Config.score_mode`` counts as worse."""


def direction_problem(scores: Sequence[float], config: Config) -> str:
    """Why ``scores`` (the first :data:`DIRECTION_EPOCHS` of a run) look fed the wrong way round,
    or "" when they do not: the first score beats every later one (by the improvement
    thresholds), so the grower's best model stays the untrained one."""
    if len(scores) < DIRECTION_EPOCHS:
        return ""
    first, later = scores[0], list(scores[1:DIRECTION_EPOCHS])
    if not all(config.better(first, s) for s in later):
        return ""
    moved = "fell" if config.maximize else "rose"
    wanted = "higher" if config.maximize else "lower"
    other = "min" if config.maximize else "max"
    kind = "a loss" if config.maximize else "an accuracy-like score"
    return (f"the validation score {moved} from {first:.4g} to {later[-1]:.4g} and every one of "
            f"the {len(later)} epochs after the first scored worse than it, but score_mode is "
            f"{config.score_mode!r} ({wanted} is better), so the best model stays the first "
            f"epoch's. If the score is {kind}, use Config(score_mode={other!r}).")


def _sample(p: torch.Tensor) -> torch.Tensor:
    flat = p.detach().reshape(-1)
    return flat[:: max(1, flat.numel() // _SAMPLE)][:_SAMPLE].clone()


class OptimizerGuard:
    """Watches the optimizers a grower builds and warns when training uses a stale one.

    :meth:`adopt` each new optimizer (a step hook counts its steps, and those of the optimizers
    it replaced); :meth:`check` once per epoch, before the grower decides. It warns when an
    optimizer the grower replaced was stepped, or when, in the epoch after a restructure, the
    grower's optimizer was never stepped and none of the new parameters (held by no earlier
    optimizer of the grower) changed while older ones did: the loop steps an optimizer of its
    own that lacks them. An optimizer a framework builds from ``Grower.param_groups`` trains
    the new parameters, so it passes; so does an epoch that trained nothing.
    """

    def __init__(self) -> None:
        self.current: torch.optim.Optimizer | None = None
        # id -> parameter of every parameter an optimizer of the grower held (weak: a freed
        # parameter's id may be reused by a new one)
        self.seen: weakref.WeakValueDictionary[int, torch.Tensor] = weakref.WeakValueDictionary()
        self.steps = {"current": 0, "replaced": 0}
        self.new: list[tuple[torch.Tensor, torch.Tensor]] = []
        self.old: list[tuple[torch.Tensor, torch.Tensor]] = []
        self.since = -1
        self.warned = False

    def adopt(self, optimizer: torch.optim.Optimizer, epoch: int, watch_new: bool = True) -> None:
        """``optimizer`` replaces the grower's previous one at ``epoch``; with ``watch_new`` the
        next :meth:`check` verifies that the parameters it newly holds were trained."""
        params = [p for g in optimizer.param_groups for p in g["params"]
                  if not isinstance(p, nn.parameter.UninitializedParameter)]
        watch = watch_new and self.current is not None
        self.new = [(p, _sample(p)) for p in params if watch and id(p) not in self.seen]
        self.old = [(p, _sample(p)) for p in params if watch and id(p) in self.seen]
        self.seen.update((id(p), p) for p in params)
        self.current = optimizer
        optimizer.register_step_post_hook(self._count)
        self.steps = {"current": 0, "replaced": 0}
        self.since = epoch

    def _count(self, optimizer: torch.optim.Optimizer, args: Any, kwargs: Any) -> None:
        self.steps["current" if optimizer is self.current else "replaced"] += 1

    def check(self) -> None:
        """Warn (once) about the epoch just trained; then start counting the next one."""
        steps, new, old = self.steps, self.new, self.old
        self.steps, self.new, self.old = {"current": 0, "replaced": 0}, [], []
        if self.warned:
            return
        message = ""
        if steps["replaced"]:
            message = (f"optimizer.step() was called {steps['replaced']} time(s) on an optimizer "
                       f"the grower replaced at epoch {self.since}, which lacks the parameters "
                       "that train now (new dendrites)")
        elif (new and not steps["current"] and all(_same(p, v) for p, v in new)
              and not all(_same(p, v) for p, v in old)):
            message = (f"none of the {len(new)} parameter tensors added at epoch {self.since} "
                       "(new dendrites) changed in the epoch since, while older ones did, and "
                       "grower.optimizer was never stepped: the optimizer you step lacks them")
        if message:
            self.warned = True
            warnings.warn(f"{message}. Take grower.optimizer again after every restructure "
                          "(decision.restructured), e.g. at the start of every epoch; or rebuild "
                          "your optimizer from grower.param_groups().", StaleOptimizerWarning,
                          stacklevel=3)


def _same(p: torch.Tensor, sample: torch.Tensor) -> bool:
    return torch.equal(_sample(p), sample)
