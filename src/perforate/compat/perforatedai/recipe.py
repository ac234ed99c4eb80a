"""How to build the script's optimizer and LR scheduler again after a restructure.

The reference's ``setup_optimizer`` takes an optimizer class with its arguments and a scheduler
class with its arguments; perforate's :class:`perforate.Grower` calls :meth:`build_optimizer` and
:meth:`build_scheduler` as its factories, so every rebuild holds exactly the parameters that
train in the new phase. A fresh scheduler is stepped through the epochs it should already have
seen (``replay``), so the learning rate follows the schedule the reference's
``param_vals_setting`` describes.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import Any, Iterable

import torch

from .errors import CompatUsageError


@dataclass
class OptimizerRecipe:
    optimizer_class: type | None = None
    optimizer_kwargs: dict[str, Any] = field(default_factory=dict)
    groups: list[dict[str, Any]] | None = None
    """The script's parameter groups, when it passed groups rather than plain parameters."""
    scheduler_class: type | None = None
    scheduler_kwargs: dict[str, Any] = field(default_factory=dict)
    instance: torch.optim.Optimizer | None = None
    """An optimizer the script built itself (``set_optimizer_instance``); handed over once."""
    manages_scheduler: bool = True
    registered: bool = False
    """The script set up an optimizer (arguments or an instance) at least once."""

    def use_arguments(self, opt_args: dict[str, Any], sched_args: dict[str, Any] | None,
                      parameters: Iterable | None) -> None:
        """Take ``setup_optimizer``'s arguments: optimizer keywords (``params`` included), scheduler keywords."""
        if self.optimizer_class is None:
            raise CompatUsageError("call GPA.pai_tracker.set_optimizer(torch.optim.Adam) (the class, "
                                   "not an instance) before setup_optimizer")
        if not isinstance(opt_args, dict):
            raise CompatUsageError("setup_optimizer's second argument is a dict of optimizer "
                                   "arguments, e.g. {'params': model.parameters(), 'lr': 1e-3}")
        kwargs = dict(opt_args)
        params = kwargs.pop("params", None) if parameters is None else parameters
        kwargs.pop("params", None)
        params = list(params) if params is not None else []
        self.groups = [dict(g, params=list(g["params"])) for g in params] \
            if params and all(isinstance(g, dict) for g in params) else None
        self.optimizer_kwargs = kwargs
        self.scheduler_kwargs = dict(sched_args or {})
        self.instance = None
        self.manages_scheduler = True
        self.registered = True

    def use_instance(self, optimizer: torch.optim.Optimizer) -> None:
        if not isinstance(optimizer, torch.optim.Optimizer):
            raise CompatUsageError(f"set_optimizer_instance needs a torch.optim.Optimizer; got "
                                   f"{type(optimizer).__name__}")
        self.instance = optimizer
        self.manages_scheduler = False
        self.registered = True

    # ------------------------------------------------------------------ factories
    def build_optimizer(self, params: Iterable[torch.nn.Parameter]) -> torch.optim.Optimizer:
        params = list(params)
        if self.instance is not None:
            optimizer, self.instance = self.instance, None
            return optimizer
        if self.optimizer_class is None:
            # nothing registered yet: a placeholder that keeps the grower going; the tracker warns
            return torch.optim.SGD(params, lr=0.0)
        if self.groups is None:
            return self.optimizer_class(params, **self.optimizer_kwargs)
        wanted = {id(p) for p in params}
        groups, used = [], set()
        for group in self.groups:
            mine = [p for p in group["params"] if id(p) in wanted and id(p) not in used]
            used.update(id(p) for p in mine)
            if mine:
                groups.append(dict(group, params=mine))
        rest = [p for p in params if id(p) not in used]  # e.g. dendrites added since the call
        if rest:
            groups.append({"params": rest})
        return self.optimizer_class(groups, **self.optimizer_kwargs)

    def build_scheduler(self, optimizer: torch.optim.Optimizer, replay: list[float]) -> Any:
        """A fresh scheduler stepped once per score in ``replay`` (ReduceLROnPlateau sees the scores)."""
        if self.scheduler_class is None or not self.manages_scheduler:
            return None
        scheduler = self.scheduler_class(optimizer, **self.scheduler_kwargs)
        plateau = isinstance(scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # "step() before optimizer.step()"
            for score in replay:
                scheduler.step(score) if plateau else scheduler.step()
        return scheduler
