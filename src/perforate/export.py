"""Export a dendritic model to plain inference modules: dendrites fused, no hooks, no pools."""
from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn

from .convert import dendritic_layers, replace_module
from .layers import _ACTIVATIONS, _CONV_TYPES, DendriticLayer


def _widened(template: nn.Module, weight: torch.Tensor, bias: torch.Tensor | None) -> nn.Module:
    """A plain Linear/ConvNd like ``template`` whose output channels are ``weight``'s rows."""
    out = weight.shape[0]
    if isinstance(template, nn.Linear):
        layer = nn.Linear(template.in_features, out, bias=bias is not None,
                          device=weight.device, dtype=weight.dtype)
    else:
        conv_type = next(t for t in _CONV_TYPES if isinstance(template, t))
        layer = conv_type(template.in_channels, out, template.kernel_size, stride=template.stride,
                          padding=template.padding, dilation=template.dilation, groups=1,
                          bias=bias is not None, padding_mode=template.padding_mode,
                          device=weight.device, dtype=weight.dtype)
    with torch.no_grad():
        layer.weight.copy_(weight)
        if bias is not None:
            layer.bias.copy_(bias)
    return layer


class ExportedDendriticLayer(nn.Module):
    """Inference form of a DendriticLayer.

    ``stacked`` computes the main layer's output and every dendrite's pre-activation in one call
    (``(K+1)*C`` channels) when the layer is a plain Linear/Conv; otherwise ``main`` runs on its
    own and ``units`` holds the dendrites. Cascade and output weights are buffers.
    """

    def __init__(self, layer: DendriticLayer) -> None:
        super().__init__()
        self.channels = layer.channels
        self.num_dendrites = k = layer.num_dendrites
        self.activation = layer.activation
        self.neuron_axis = layer.neuron_axis
        self.main_in_stack = False
        self.main = None
        self.stacked = None
        self.units = None
        with torch.no_grad():
            if layer.kind != "block" and (layer.kind == "linear" or layer.main.groups == 1):
                # a subclass may have its own forward: it keeps running it
                self.main_in_stack = type(layer.main) in (nn.Linear, *_CONV_TYPES)
                weights = [layer.dendrite_weight]
                biases = [layer.dendrite_bias] if layer.has_bias else None
                if self.main_in_stack:
                    weights.insert(0, layer.main.weight.unsqueeze(0))
                    if biases is not None:
                        biases.insert(0, layer.main.bias.unsqueeze(0))
                w = torch.cat(weights).flatten(0, 1)
                b = torch.cat(biases).flatten(0, 1) if biases is not None else None
                self.stacked = _widened(layer.main, w, b)
            elif layer.kind == "block":
                self.units = copy.deepcopy(layer.dendrite_blocks)
            else:  # grouped convolution: one plain conv per dendrite
                self.units = nn.ModuleList()
                for i in range(k):
                    unit = copy.deepcopy(layer.main)
                    unit.weight.copy_(layer.dendrite_weight[i])
                    if layer.has_bias:
                        unit.bias.copy_(layer.dendrite_bias[i])
                    self.units.append(unit)
            if not self.main_in_stack:
                self.main = copy.deepcopy(layer.main)
            cascade = layer.cascade_weight.detach().clone() if layer.cascade_weight is not None \
                else torch.zeros(0, layer.channels)
            # Per-channel weights are stored already shaped to broadcast against the output
            # ([R, C, 1, ...]) where the output's rank is known: one op fewer per call.
            self.trailing = None
            if layer.kind != "block":
                self.trailing = 0 if layer.kind == "linear" else layer.main.weight.ndim - 2
                ones = [1] * self.trailing
                cascade = cascade.reshape(*cascade.shape, *ones)
            else:
                ones = []
            self.register_buffer("cascade_weight", cascade)
            self.register_buffer("output_weight",
                                 layer.output_weight.detach().clone().reshape(k, layer.channels, *ones))

    def _rows(self, t: torch.Tensor, ndim: int) -> tuple[torch.Tensor, ...]:
        """The rows of a per-channel buffer, shaped to broadcast against an ``ndim``-dim output."""
        if self.trailing is None:
            axis = self.neuron_axis + ndim if self.neuron_axis < 0 else self.neuron_axis
            t = t.reshape(t.shape[0], self.channels, *([1] * (ndim - axis - 1)))
        return t.unbind(0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # Few ops on purpose: at small batch sizes their count, not their FLOPs, sets the latency.
        stacked = self.stacked
        if stacked is not None:
            if self.trailing == 0:  # a Linear: skip the module call, it costs as much as an op
                z = F.linear(x, stacked.weight, stacked.bias)
            else:
                z = stacked(x)
            units = self.num_dendrites + int(self.main_in_stack)
            axis = self.neuron_axis + z.ndim if self.neuron_axis < 0 else self.neuron_axis
            parts = torch.unflatten(z, axis, (units, self.channels)).unbind(axis)
            if self.main_in_stack:
                y, parts = parts[0], parts[1:]
            else:
                y = self.main(x)
        else:
            y = self.main(x)
            parts = [unit(x) for unit in self.units]
        act = _ACTIVATIONS[self.activation]
        v = self._rows(self.output_weight, y.ndim)
        w = self._rows(self.cascade_weight, y.ndim) if self.num_dendrites > 1 else ()
        acts: list[torch.Tensor] = []
        row = 0
        for k, pre in enumerate(parts):
            for j in range(k):
                pre = torch.addcmul(pre, w[row], acts[j])
                row += 1
            a = act(pre)
            acts.append(a)
            y = torch.addcmul(y, v[k], a)
        return y


def export(model: nn.Module) -> nn.Module:
    """A copy of ``model`` for inference: plain modules, dendrites fused, no hooks or pools.

    Layers without dendrites become their original module; the others become
    :class:`ExportedDendriticLayer`. The result works with ``torch.jit.trace``,
    ``torch.export`` and ``torch.compile``. Call ``.eval()`` on it as on any model.
    """
    model = copy.deepcopy(model)
    for name, layer in dendritic_layers(model).items():
        replacement = layer.main if layer.num_dendrites == 0 else ExportedDendriticLayer(layer)
        if not name:
            return replacement
        replace_module(model, layer, replacement)
    for p in model.parameters():
        p.requires_grad_(False)
    return model
