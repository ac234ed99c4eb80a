"""What trains in the grower's current phase, and the optimizer (and scheduler) built for it.

In a pb dendrite phase only the candidate pools train. Otherwise every parameter takes the
flag it had when the grower was built (new dendrite weights train), and the dendrites of layers
whose ``dendrites_frozen`` is set (joined pb dendrites) do not. The phase's learning-rate
multiplier (:func:`lr_scale`) is applied to the optimizer's groups once, recorded under
:data:`LR_SCALE_KEY`.
"""
from __future__ import annotations

from typing import Any, Callable, Iterable, Mapping

import torch
from torch import nn

from .config import Config
from .errors import GrowthError
from .growth import pb
from .loop_warnings import OptimizerGuard

LR_SCALE_KEY = "perforate_lr_scale"
"""Parameter-group option recording the phase's learning-rate multiplier already in ``lr``."""

OptimizerFactory = Callable[[Iterable[nn.Parameter]], torch.optim.Optimizer]
SchedulerFactory = Callable[[torch.optim.Optimizer], Any]


def lr_scale(config: Config, phase: str, cycle: str) -> float:
    """``Config.candidate_lr_scale`` in a pb dendrite phase, ``Config.growth_lr_scale`` after a
    growth step, else 1."""
    if phase == "dendrite":
        return config.candidate_lr_scale
    return config.growth_lr_scale if cycle == "growth" else 1.0


def apply_trainable(model: nn.Module, layers: Mapping[str, nn.Module], phase: str,
                    flags: Mapping[str, bool]) -> list[nn.Parameter]:
    """Set ``requires_grad`` for ``phase`` (see the module docstring); return what trains."""
    dendrite_phase = phase == "dendrite"
    for name, p in model.named_parameters():
        p.requires_grad_(not dendrite_phase and flags.get(name, True))
    for layer in layers.values():
        if dendrite_phase and layer.candidate_pool is not None:
            for p in layer.candidate_pool.trainable_parameters():
                p.requires_grad_(True)
        elif not dendrite_phase:
            layer.freeze_dendrites(layer.dendrites_frozen)
    pb.hold_norm_statistics(model, hold=dendrite_phase)  # the phase keeps outputs
    return [p for p in model.parameters() if p.requires_grad]


def param_groups(model: nn.Module, groups: Iterable[Any] | None, scale: float) -> list[dict[str, Any]]:
    """Optimizer parameter groups for the current phase.

    ``groups`` is what an optimizer takes (parameters, or group dicts such as the
    ``param_groups`` of an optimizer a framework built the user's way); None means all of
    ``model``'s parameters. Returns new group dicts without the model's parameters that do not
    train now (other parameters are kept), with ``lr`` and ``initial_lr`` multiplied by
    ``scale``. The multiplier is recorded under ``LR_SCALE_KEY``, so groups passed through
    twice, or from another phase, get the current phase's rate exactly once.
    """
    groups = list(model.parameters() if groups is None else groups)
    if groups and not isinstance(groups[0], dict):
        groups = [{"params": groups}]
    idle = {id(p) for p in model.parameters() if not p.requires_grad}
    out = []
    for group in groups:
        new = {**group, "params": [p for p in group["params"] if id(p) not in idle], LR_SCALE_KEY: scale}
        for key in ("lr", "initial_lr"):
            if key in group:
                new[key] = group[key] * (scale / group.get(LR_SCALE_KEY, 1.0))
        out.append(new)
    if not any(group["params"] for group in out):
        raise GrowthError("no trainable parameters are left; unfreeze some before growing")
    return out


def build_optimizer(model: nn.Module, optimizer_factory: OptimizerFactory,
                    scheduler_factory: SchedulerFactory | None, scale: float, guard: OptimizerGuard,
                    epoch: int, watch_new: bool) -> tuple[torch.optim.Optimizer, Any]:
    """A fresh optimizer over what trains (at the phase's rate) and its scheduler; ``guard``
    adopts the optimizer (``watch_new``: warn when a stale one keeps stepping)."""
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise GrowthError("no trainable parameters are left; unfreeze some before growing")
    optimizer = optimizer_factory(params)
    # before a scheduler records its base lrs
    optimizer.param_groups[:] = param_groups(model, optimizer.param_groups, scale)
    scheduler = scheduler_factory(optimizer) if scheduler_factory else None
    guard.adopt(optimizer, epoch, watch_new=watch_new)
    return optimizer, scheduler


def step_scheduler(scheduler: Any, score: float | None) -> None:
    """One scheduler step (with the score for ``ReduceLROnPlateau``)."""
    if isinstance(scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
        scheduler.step(score)
    else:
        scheduler.step()
