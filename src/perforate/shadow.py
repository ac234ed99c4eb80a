"""The shadow run of a growth trial (``Config.trial = "shadow"``).

When the grower grows, it copies the un-grown model with its optimizer (and scheduler) state:
the *shadow*. The training loop trains the shadow on the same batches as the grown model
(:meth:`perforate.Grower.shadow_step`) and scores it on validation like the grown model
(``grower.step(val, shadow_score=...)``). At the trial's end the grown model is kept only if its
smoothed score beat the shadow's over the same epochs (and the best model so far); otherwise
training continues from the shadow, weights and optimizer state, as if growth had never been
tried. A failed growth then costs compute (about a second model's training step per batch),
never accuracy. ``trial = "rollback"`` (the default) trains no shadow: a failed growth goes back
to the model as it was when the growth began, losing the epochs the plain model would have
trained meanwhile.

Why an explicit call rather than a hook on ``optimizer.step()``: a hook cannot know the batch
or the loss (nor the user's AMP scaler, gradient clipping or accumulation), and a silent second
forward/backward in every step would be a surprise. The loop says what one step is; the grower
only owns the shadow's model, optimizer and scheduler.
"""
from __future__ import annotations

import copy
import math
from typing import Any, Callable

import torch
from torch import nn

from . import checkpoint as ckpt
from . import trainable
from .config import Config
from .errors import GrowthError
from .plateau import Plateau

LossFn = Callable[[nn.Module], torch.Tensor]


class ShadowRun:
    """The un-grown model training beside a grown one during a growth trial.

    Built by the grower (:meth:`start`); ``model``, ``optimizer`` and ``scheduler`` are the
    shadow's own. ``best_smoothed`` / ``best_score`` are its best smoothed and single-epoch
    validation scores during the trial (``plateau`` counts the smoothed ones, as the grower's
    own :class:`~perforate.plateau.Plateau` does); ``steps`` counts :meth:`train_step` calls.
    """

    def __init__(self, model: nn.Module, optimizer: torch.optim.Optimizer, scheduler: Any,
                 epoch: int) -> None:
        self.model = model
        self.optimizer = optimizer
        self.scheduler = scheduler
        self.started = epoch
        self.plateau = Plateau()
        self.best_score: float | None = None
        self.steps = 0

    @classmethod
    def start(cls, model: nn.Module, optimizer: torch.optim.Optimizer, scheduler: Any,
              optimizer_factory: Callable, scheduler_factory: Callable | None, epoch: int,
              keep: Any = None) -> "ShadowRun":
        """Copy ``model`` and the state of its ``optimizer`` (and ``scheduler``) into a shadow.

        The optimizer and scheduler are rebuilt from the factories on the copy and given copies
        of the live ones' states (parameters matched by name). ``keep``: an object that forward
        hooks of the model may refer to and that must not be copied with it (the grower).
        """
        memo = {id(keep): keep} if keep is not None else {}
        twin = copy.deepcopy(model, memo)
        names = ckpt.optimizer_param_names(optimizer, model)
        by_name = dict(twin.named_parameters())
        params = [by_name[n] for group in names for n in group]
        shadow_opt = optimizer_factory(params)
        shadow_sched = scheduler_factory(shadow_opt) if scheduler_factory is not None else None
        saved = copy.deepcopy(optimizer.state_dict())  # the shadow's moments are its own
        shadow_opt.load_state_dict(ckpt.match_optimizer_state(saved, names, shadow_opt, twin))
        if shadow_sched is not None and scheduler is not None:
            shadow_sched.load_state_dict(copy.deepcopy(scheduler.state_dict()))
        return cls(twin, shadow_opt, shadow_sched, epoch)

    def train_step(self, loss_fn: LossFn) -> torch.Tensor:
        """One optimizer step of the shadow: ``loss_fn(shadow_model)`` is the batch's loss."""
        self.model.train()
        self.optimizer.zero_grad(set_to_none=True)
        loss = loss_fn(self.model)
        if not isinstance(loss, torch.Tensor) or loss.numel() != 1:
            raise GrowthError("shadow_step(loss_fn) needs loss_fn(model) to return the batch's "
                              f"scalar loss tensor; got {type(loss).__name__}")
        loss.backward()
        self.optimizer.step()
        self.steps += 1
        return loss.detach()

    def record(self, score: float, config: Config, step_scheduler: bool) -> bool:
        """Take the shadow's validation score of this epoch; True when it is the trial's best
        single score so far. Steps the shadow's scheduler as the grower steps its own."""
        if math.isnan(score):
            raise GrowthError("shadow_score is NaN; check the shadow's training (diverged loss?)")
        self.plateau.update(score, config.smoothing, config.better)
        best = config.better(score, self.best_score)
        if best:
            self.best_score = score
        if step_scheduler and self.scheduler is not None:
            trainable.step_scheduler(self.scheduler, score)
        return best

    @property
    def window(self) -> list[float]:
        """The shadow's last ``smoothing`` scores."""
        return self.plateau.window

    @property
    def best_smoothed(self) -> float | None:
        """The shadow's best smoothed score of the trial (None before its first score)."""
        return self.plateau.best

    @property
    def smoothed(self) -> float | None:
        """Mean of the shadow's last ``smoothing`` scores (None before its first)."""
        return self.plateau.smoothed

    def hand_over(self, model: nn.Module, optimizer: torch.optim.Optimizer, scheduler: Any) -> None:
        """Give the live ``optimizer`` and ``scheduler`` (built for ``model``, which already holds
        the shadow's weights) copies of the shadow's optimizer and scheduler states, so that
        training continues exactly as the shadow would have."""
        saved = copy.deepcopy(self.optimizer.state_dict())
        names = ckpt.optimizer_param_names(self.optimizer, self.model)
        optimizer.load_state_dict(ckpt.match_optimizer_state(saved, names, optimizer, model))
        if scheduler is not None and self.scheduler is not None:
            scheduler.load_state_dict(copy.deepcopy(self.scheduler.state_dict()))
