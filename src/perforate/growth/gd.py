"""Gradient dendrites: new dendrites train jointly with everything else by ordinary backprop."""
from __future__ import annotations

import torch

from ..layers import DendriticLayer


def grow(layers: dict[str, DendriticLayer], generator: torch.Generator) -> None:
    """Add one fresh, trainable dendrite to every layer (function-preserving: v starts at 0)."""
    for layer in layers.values():
        layer.freeze_dendrites(False)
        layer.add_dendrites(1, generator)
