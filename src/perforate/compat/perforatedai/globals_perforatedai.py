"""``GPA``: the reference's globals: ``pc`` (settings), ``pai_tracker``, ``PAISequential``.

The process holds one ``pc`` and one ``pai_tracker``, as the reference's API implies. Each
``UPA.initialize_pai`` / ``UPA.perforate_model`` call gives ``pai_tracker`` a new tracker for the
model it converts; the settings in ``pc`` carry over. :func:`reset` returns both to their
starting state, e.g. before a second, unrelated experiment in the same process.
Module attributes named like settings (``GPA.testing_dendrite_capacity = False``, the 1.2.x
style) read and write ``pc``.
"""
from __future__ import annotations

import sys

from torch import nn

from .attributes import SettingsModule
from .settings import PAIConfig
from .tracker import PAITracker


class PAISequential(nn.Sequential):
    """Modules that get dendrites as one unit, e.g. a layer and its norm: ``PAISequential([conv, bn])``."""

    def __init__(self, layers) -> None:
        super().__init__(*layers)


def _dendrite_count() -> int:
    return pai_tracker.num_dendrites_added


pc = PAIConfig(_dendrite_count)
pai_tracker = PAITracker(pc)
pai_scaler = None


def reset() -> None:
    """Settings back to their defaults and a tracker with no model (start of a new experiment)."""
    global pai_tracker
    pc.reset()
    pai_tracker = PAITracker(pc)


sys.modules[__name__].__class__ = SettingsModule
