"""``nn.Conv1d/2d/3d`` (and subclasses): neurons on the channel axis, dendrites stacked as one
convolution with ``K*C`` output channels (one call per dendrite for grouped convolutions).

The neuron axis counts from the end (``-(N+1)`` for an N-d convolution), so unbatched inputs
``(C, L)`` / ``(C, H, W)`` / ``(C, D, H, W)`` work as they do on the plain convolution. A
user's ``1`` (the channel axis of a batched input) means the same axis.
"""
from __future__ import annotations

import torch
from torch import nn

from ..errors import WrapError
from . import fused
from .stacked import StackedKind

_CONVS = (nn.Conv1d, nn.Conv2d, nn.Conv3d)


def _spatial(module: nn.Module) -> int:
    return module.weight.dim() - 2


class ConvKind(StackedKind):
    name = "conv"

    def matches(self, module: nn.Module) -> bool:
        return isinstance(module, _CONVS)

    def natural_axis(self, module: nn.Module) -> int:
        return -(_spatial(module) + 1)

    def resolve_axis(self, module: nn.Module, requested: int | None) -> int:
        natural = self.natural_axis(module)
        if requested in (None, 1, natural):
            return natural
        raise WrapError(
            f"a {type(module).__name__} always puts its neurons on the channel axis ({natural}, "
            "or 1 for batched input); a different neuron_axis needs the layer wrapped inside a "
            "block (pf.perforate(..., blocks=...))")

    def channels(self, module: nn.Module) -> int:
        return module.out_channels

    def wide(self, main, x, weight, bias):
        return main._conv_forward(x, weight, bias)

    def units_per_call(self, main: nn.Module) -> bool:
        return main.groups == 1

    def fused_forward(self, layer, x, args, kwargs):
        if args or kwargs or not self.units_per_call(layer.main):
            return None
        return fused.join_forward(layer, x)

    def cat_samples(self, layer, xs):
        batched = _spatial(layer.main) + 2  # unbatched inputs have no sample axis to join on
        if not all(isinstance(x, torch.Tensor) and x.ndim == batched and x.shape[1:] == xs[0].shape[1:]
                   for x in xs):
            return None
        return torch.cat(xs)

    def foldable(self, main: nn.Module) -> bool:
        return type(main) in _CONVS and main.groups == 1

    def widened(self, main, weight, bias):
        conv_type = next(t for t in _CONVS if isinstance(main, t))
        layer = conv_type(main.in_channels, weight.shape[0], main.kernel_size, stride=main.stride,
                          padding=main.padding, dilation=main.dilation, groups=1,
                          bias=bias is not None, padding_mode=main.padding_mode,
                          device=weight.device, dtype=weight.dtype)
        with torch.no_grad():
            layer.weight.copy_(weight)
            if bias is not None:
                layer.bias.copy_(bias)
        return layer.to(memory_format=_format(weight))


def _format(weight: torch.Tensor) -> torch.memory_format:
    if weight.dim() == 4 and not weight.is_contiguous() and weight.is_contiguous(memory_format=torch.channels_last):
        return torch.channels_last
    return torch.contiguous_format


KIND = ConvKind()
