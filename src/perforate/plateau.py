"""The plateau counter: one rule shared by the grower (its neuron and dendrite phases), the shadow
run of a growth trial (:class:`perforate.shadow.ShadowRun`) and the plain arms' early stopper
(:class:`perforate.experiments.harness.stopper.EarlyStopper`).

A score goes into a window of the last ``smoothing`` scores; when the window's mean (the
*smoothed* score) beats the best smoothed score so far (``better(new, best)``, e.g.
``Config.better``) the count of stale epochs starts again, else it grows by one. The caller
calls a plateau when ``stale`` reaches its patience. Like ``ReduceLROnPlateau``, the state is a
few numbers (:meth:`state_dict`).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

Better = Callable[[float, "float | None"], bool]


@dataclass
class Plateau:
    """Smoothed window, best smoothed score and stale count of one stretch of training."""

    window: list[float] = field(default_factory=list)
    """The last ``smoothing`` scores."""
    best: float | None = None
    """Best smoothed score since :meth:`reset`."""
    stale: int = 0
    """Epochs since the smoothed score last beat ``best``."""

    @property
    def smoothed(self) -> float | None:
        """Mean of the window (None before the first score)."""
        return sum(self.window) / len(self.window) if self.window else None

    def update(self, score: float, smoothing: int, better: Better) -> bool:
        """Take one score; True when the smoothed score beat the best (which it then becomes)."""
        self.window = (self.window + [score])[-smoothing:]
        smoothed = sum(self.window) / len(self.window)
        if better(smoothed, self.best):
            self.best, self.stale = smoothed, 0
            return True
        self.stale += 1
        return False

    def reset(self, best: float | None = None) -> None:
        """Start a new stretch that must beat ``best``: empty window, no stale epochs."""
        self.window, self.best, self.stale = [], best, 0

    def state_dict(self) -> dict[str, Any]:
        """``window``, ``best`` and ``stale`` as plain values."""
        return {"window": list(self.window), "best": self.best, "stale": self.stale}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Take back what :meth:`state_dict` returned."""
        self.window, self.best, self.stale = list(state["window"]), state["best"], state["stale"]
