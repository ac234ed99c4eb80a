"""Export a dendritic model to plain inference modules: dendrites fused, no hooks, no pools."""
from __future__ import annotations

import copy

import torch
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
                self.main_in_stack = layer._fusable_main
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
            self.register_buffer("cascade_weight", cascade)
            self.register_buffer("output_weight", layer.output_weight.detach().clone())

    def _view(self, t: torch.Tensor, ndim: int) -> torch.Tensor:
        axis = self.neuron_axis + ndim if self.neuron_axis < 0 else self.neuron_axis
        return t.reshape(t.shape[0], *([1] * (ndim - axis - 1)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.stacked is not None:
            z = self.stacked(x)
            units = self.num_dendrites + int(self.main_in_stack)
            axis = self.neuron_axis + z.ndim if self.neuron_axis < 0 else self.neuron_axis
            parts = list(z.unflatten(axis, (units, self.channels)).unbind(axis))
            y = parts.pop(0) if self.main_in_stack else self.main(x)
        else:
            y = self.main(x)
            parts = [unit(x) for unit in self.units]
        act = _ACTIVATIONS[self.activation]
        acts: list[torch.Tensor] = []
        row = 0
        for k, zk in enumerate(parts):
            pre = zk
            for j in range(k):
                pre = pre + self._view(self.cascade_weight[row], zk.ndim) * acts[j]
                row += 1
            a = act(pre)
            acts.append(a)
            y = y + self._view(self.output_weight[k], y.ndim) * a
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
