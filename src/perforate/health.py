"""Warnings for a run that diverged: non-finite training scores or weights (once per grower),
and a pb cached epoch holding non-finite values (whose candidates' correlations then mean
nothing)."""
from __future__ import annotations

import logging
import math
import warnings
from typing import Any, Iterable, Mapping

import torch
from torch import nn

from .loop_warnings import PerforateWarning

log = logging.getLogger("perforate")


class DivergenceWarning(PerforateWarning):
    """Training scores or weights became NaN or infinite: the run diverged."""


class DivergenceCheck:
    """Warns once per kind (scores, weights) when a grower's run first turns non-finite."""

    def __init__(self) -> None:
        self.warned: set[str] = set()

    def check(self, epoch: int, model: nn.Module, extra: Mapping[str, float], prefix: str = "") -> None:
        """At the end of epoch ``epoch``: ``extra`` are the scores given to ``step``."""
        if "scores" not in self.warned:
            bad = sorted(name for name, value in extra.items() if not math.isfinite(value))
            if bad:
                self.warned.add("scores")
                shown = ", ".join(f"{name}={extra[name]}" for name in bad)
                warnings.warn(f"{prefix}epoch {epoch}: {shown}: training diverged (check the learning "
                              "rate and the loss); the kept best model is not affected, but the "
                              "epochs from here train a broken model", DivergenceWarning, stacklevel=3)
        if "weights" not in self.warned:
            bad = nonfinite(model.named_parameters())
            if bad:
                self.warned.add("weights")
                more = f" and {len(bad) - 3} more" if len(bad) > 3 else ""
                warnings.warn(f"{prefix}epoch {epoch}: parameters {', '.join(bad[:3])}{more} hold NaN "
                              "or infinite values: training diverged (check the learning rate and "
                              "the loss); the kept best model is not affected, but the epochs from "
                              "here train a broken model", DivergenceWarning, stacklevel=3)


@torch.no_grad()
def nonfinite(named: Iterable[tuple[str, torch.Tensor]]) -> list[str]:
    """The names whose tensors hold a NaN or an infinity (one reduction per tensor)."""
    return [name for name, t in named if t.is_floating_point() and not bool(torch.isfinite(t).all())]


def _tensors(obj: Any) -> Iterable[torch.Tensor]:
    if isinstance(obj, torch.Tensor):
        yield obj
    elif isinstance(obj, (list, tuple)):
        for v in obj:
            yield from _tensors(v)
    elif isinstance(obj, dict):
        for v in obj.values():
            yield from _tensors(v)


def check_cached_epochs(pools: Mapping[str, Any]) -> list[str]:
    """Log a warning naming the layers whose cached epoch (``pool.cache``) holds non-finite
    inputs or errors; return them. Their candidates' correlations read 0 and say nothing."""
    bad = [name for name, pool in pools.items()
           if nonfinite((name, t) for entry in pool.cache or () for t in _tensors(entry))]
    if bad:
        log.warning("the cached epoch of %s holds NaN or infinite values (inputs, dendrite "
                    "activations or neuron errors): its candidates' correlations mean nothing "
                    "(they read 0) and a low |correlation| there is not a weak layer; check the "
                    "data and the loss of the dendrite phase's epoch", ", ".join(bad))
    return bad
