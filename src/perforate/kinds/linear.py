"""``nn.Linear`` (and subclasses): neurons on the last axis, dendrites stacked as one wide Linear."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from . import fused
from .stacked import StackedKind


class LinearKind(StackedKind):
    name = "linear"

    def matches(self, module: nn.Module) -> bool:
        return isinstance(module, nn.Linear)

    def natural_axis(self, module: nn.Module) -> int:
        return -1

    def channels(self, module: nn.Module) -> int:
        return module.weight.shape[0]

    def wide(self, main, x, weight, bias):
        return F.linear(x, weight, bias)

    def foldable(self, main: nn.Module) -> bool:
        # MultiheadAttention's out_proj type computes F.linear like nn.Linear
        return type(main) in (nn.Linear, nn.modules.linear.NonDynamicallyQuantizableLinear)

    def fused_forward(self, layer, x, args, kwargs):
        if args or kwargs or not self.foldable(layer.main):
            return None
        return fused.linear_forward(layer, x)

    def cat_samples(self, layer, xs):
        if not all(isinstance(x, torch.Tensor) and x.ndim >= 1 for x in xs):
            return None
        return torch.cat([x.reshape(-1, x.shape[-1]) for x in xs])  # every leading axis is samples

    def widened(self, main, weight, bias):
        layer = nn.Linear(weight.shape[1], weight.shape[0], bias=bias is not None,
                          device=weight.device, dtype=weight.dtype)
        with torch.no_grad():
            layer.weight.copy_(weight)
            if bias is not None:
                layer.bias.copy_(bias)
        return layer


KIND = LinearKind()
