"""Kinds whose dendrites are copies of one weight-and-bias op, stored stacked and run in one call.

The K dendrites of a layer with C neurons are the rows of one wide weight ``[K*C, ...]`` (and
bias ``[K*C]``): a Linear with ``K*C`` outputs, or a convolution with ``K*C`` output channels.
Dendrite ``k``'s channel ``c`` is row ``k*C + c``. One call computes every dendrite, so a layer
with K dendrites costs about what a layer K+1 times as wide costs. The wide weight has the main
weight's rank, so ``Module.to(memory_format=...)`` treats both alike.
"""
from __future__ import annotations

import math

import torch
from torch import nn

from .. import connectivity
from ..errors import WrapError
from .base import Kind


class StackedKind(Kind):
    """Shared by Linear-like and convolution kinds; subclasses give the op and the layout."""

    stacked = True

    # ------------------------------------------------------------------ the op
    def wide(self, main: nn.Module, x: torch.Tensor, weight: torch.Tensor,
             bias: torch.Tensor | None) -> torch.Tensor:
        """``main``'s op with another weight and bias (any number of output channels)."""
        raise NotImplementedError

    def foldable(self, main: nn.Module) -> bool:
        """True when ``main`` computes exactly :meth:`wide` with its own weights (so export may
        fold it into the dendrites' call). A subclass with its own forward is not."""
        return False

    def widened(self, main: nn.Module, weight: torch.Tensor, bias: torch.Tensor | None) -> nn.Module:
        """A plain module like ``main`` whose output channels are ``weight``'s rows (export)."""
        raise NotImplementedError

    def units_per_call(self, main: nn.Module) -> bool:
        """False when one wide call cannot compute several units (e.g. grouped convolutions)."""
        return True

    def run(self, main: nn.Module, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
            units: int, channels: int, axis_of) -> list[torch.Tensor]:
        """Every unit's output: one wide call split along the neuron axis, or one call per unit."""
        if not self.units_per_call(main):
            return [self.wide(main, x, weight[k * channels:(k + 1) * channels],
                              None if bias is None else bias[k * channels:(k + 1) * channels])
                    for k in range(units)]
        z = self.wide(main, x, weight, bias)
        if units == 1:
            return [z]
        axis = axis_of(z.ndim)
        return list(z.unflatten(axis, (units, channels)).unbind(axis))

    # ------------------------------------------------------------------ units on the layer
    def new_units(self, layer, n, generator):
        weight = layer.main.weight
        bound = layer.init_scale / math.sqrt(weight[0].numel())
        c = layer.channels
        w = (torch.rand((n * c, *weight.shape[1:]), generator=generator, dtype=torch.float32) * 2 - 1) * bound
        w = _like(w, weight)
        b = None
        if layer.has_bias:
            b = (torch.rand(n * c, generator=generator, dtype=torch.float32) * 2 - 1) * bound
            b = b.to(device=weight.device, dtype=layer.main.bias.dtype)
        if layer.inputs:  # restricted inputs: the rows' masks, drawn after the weights
            mask = connectivity.input_mask(n * c, weight.shape[1], layer.inputs, layer.input_choice,
                                           generator).to(weight.device)
            return w * connectivity.shaped(mask, w.ndim), b, mask
        return w, b

    def placeholder_units(self, layer, n):
        weight = layer.main.weight
        c = layer.channels
        w = _like(torch.zeros((n * c, *weight.shape[1:]), dtype=weight.dtype), weight)
        b = torch.zeros(n * c, device=weight.device, dtype=weight.dtype) if layer.has_bias else None
        if layer.inputs:
            return w, b, torch.zeros(n * c, weight.shape[1], dtype=torch.bool, device=weight.device)
        return w, b

    def append_units(self, layer, units):
        w, b, mask = _unpack(units)
        if (mask is not None) != bool(layer.inputs):
            raise WrapError(f"layer {layer.path!r}: restricted-input layers take units with a "
                            "connectivity mask, others without one")
        if mask is not None:
            old_m = layer.dendrite_weight_mask
            layer.dendrite_weight_mask = mask if old_m is None else torch.cat([old_m, mask])
        old_w = layer.dendrite_weight
        layer.dendrite_weight = nn.Parameter(w if old_w is None else torch.cat([old_w.detach(), w]))
        if layer.has_bias:
            old_b = layer.dendrite_bias
            layer.dendrite_bias = nn.Parameter(b if old_b is None else torch.cat([old_b.detach(), b]))

    def clear_units(self, layer):
        layer.dendrite_weight = layer.dendrite_bias = None
        layer.dendrite_weight_mask = None

    def unit_parameters(self, layer):
        return [p for p in (layer.dendrite_weight, layer.dendrite_bias) if p is not None]

    def unit_numel(self, main):
        bias = getattr(main, "bias", None)
        return main.weight.numel() + (bias.numel() if isinstance(bias, torch.Tensor) else 0)

    def preactivations(self, layer, x, args, kwargs):
        return self.run(layer.main, x, layer.dendrite_weight_used(), layer.dendrite_bias,
                        layer.num_dendrites, layer.channels, lambda ndim: self.axis(layer, ndim))

    def reference_preactivations(self, layer, x, args, kwargs):
        c = layer.channels
        weight = layer.dendrite_weight_used()
        return [self.wide(layer.main, x, weight[k * c:(k + 1) * c],
                          layer.dendrite_bias[k * c:(k + 1) * c] if layer.has_bias else None)
                for k in range(layer.num_dendrites)]

    # ------------------------------------------------------------------ pb candidates
    def init_pool(self, pool, layer, units):
        w, b, mask = _unpack(units)
        pool.register_buffer("weight_mask", mask)  # restricted inputs: [P*C, inputs]
        pool.weight = nn.Parameter(w)
        pool.bias = nn.Parameter(b) if b is not None else None
        pool.register_buffer("best_weight", w.detach().clone())
        pool.register_buffer("best_bias", b.detach().clone() if b is not None else None)

    def pool_preactivations(self, pool, layer, x, args, kwargs):
        p, c = pool.num_candidates, layer.channels
        weight = pool.weight
        if pool.weight_mask is not None:
            weight = weight * connectivity.shaped(pool.weight_mask, weight.ndim)
        if self.units_per_call(layer.main):
            z = self.wide(layer.main, x, weight, pool.bias)
            axis = self.axis(layer, z.ndim)
            return z.unflatten(axis, (p, c)), axis
        zs = self.run(layer.main, x, weight, pool.bias, p, c, lambda ndim: self.axis(layer, ndim))
        axis = self.axis(layer, zs[0].ndim)
        return torch.stack(zs, axis), axis

    def remember(self, pool, improved):
        rows = improved.reshape(-1, *([1] * (pool.weight.ndim - 1)))
        pool.best_weight.copy_(torch.where(rows, pool.weight, pool.best_weight))
        if pool.bias is not None:
            pool.best_bias.copy_(torch.where(improved.reshape(-1), pool.bias, pool.best_bias))
        return improved

    def winners(self, pool):
        """Per neuron, the candidate with the best remembered score: ``[C]``."""
        return pool.best_score.argmax(0)

    def select(self, pool, winners):
        c = winners.shape[0]
        rows = winners * c + torch.arange(c, device=winners.device)
        w = pool.best_weight[rows].clone()
        b = pool.best_bias[rows].clone() if pool.bias is not None else None
        if pool.weight_mask is not None:
            return w, b, pool.weight_mask[rows].clone()
        return w, b


def _like(t: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    """``t`` on ``reference``'s device and dtype, in its memory format (e.g. channels_last)."""
    t = t.to(device=reference.device, dtype=reference.dtype)
    if reference.dim() == 4 and not reference.is_contiguous() and \
            reference.is_contiguous(memory_format=torch.channels_last):
        t = t.contiguous(memory_format=torch.channels_last)
    return t


def _unpack(units) -> tuple:
    """``(weight, bias, mask)`` from stacked units ``(weight, bias)`` or ``(weight, bias, mask)``
    (restricted inputs: the rows' ``[rows, inputs]`` connectivity)."""
    return (*units, None) if len(units) == 2 else tuple(units)
