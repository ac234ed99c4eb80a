"""ExportedDendriticLayer: the inference form of a DendriticLayer (no pools, no hooks, no
trainable flags), built by ``pf.export``."""
from __future__ import annotations

import copy
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from . import activations, connectivity
from .errors import bypass_error


class ExportedDendriticLayer(nn.Module):
    """Inference form of a DendriticLayer.

    For stacked kinds (Linear, ConvNd, PyG Linear) ``stacked`` computes the main layer's output
    and every dendrite's pre-activation in one call (``(K+1)*C`` channels) when the main layer
    is a plain one whose weights nothing else shares; otherwise ``main`` runs on its own and
    ``stacked`` holds only the dendrites (grouped convolutions: ``units``, one per dendrite).
    Kinds whose dendrites are module copies keep them in ``units``. Cascade and output weights
    are parameters (inference needs them: ``pf.count_parameters`` counts them) that do not train.

    Args:
        layer: the DendriticLayer (with at least one dendrite).
        share: reuse the layer's modules instead of copying them (``pf.export`` works on a copy
            of the whole model already; sharing keeps weights tied across modules tied).
        fold_main: allow folding the main layer into the stacked call.

    As on a DendriticLayer, reading a tensor of the original module through the layer
    (``layer.weight``) raises :class:`pf.BypassError`, which says where the tensor is.
    """

    def __init__(self, layer: nn.Module, share: bool = False, fold_main: bool = True) -> None:
        super().__init__()
        own = (lambda m: m) if share else copy.deepcopy
        self.kind = layer.kind
        self.adapter = layer.adapter  # a stateless kind, shared by every layer of the kind
        self.channels = layer.channels
        self.num_dendrites = layer.num_dendrites
        self.activation = layer.activation
        self.neuron_axis = layer.neuron_axis
        self.path = layer.path
        main = layer.main
        self._main_type = type(main).__name__
        self._main_tensors = frozenset(n for d in (main._parameters, main._buffers, main._modules)
                                       for n, v in d.items() if v is not None)
        self.main_in_stack = False
        self.main = None
        self.stacked = None
        self.units = None
        with torch.no_grad():
            self._take_dendrites(layer, own, fold_main)
            if not self.main_in_stack:
                self.main = own(layer.main)
            self._take_output_weights(layer)

    def _take_dendrites(self, layer: nn.Module, own, fold_main: bool) -> None:
        """Sets ``stacked`` (the dendrites' weights, with the main layer's in front where it
        folds: ``main_in_stack``) or ``units`` (one module per dendrite) from ``layer``."""
        adapter, c, k = layer.adapter, self.channels, self.num_dendrites
        weight = None if layer.dendrite_weight is None else layer.dendrite_weight_used().detach()
        # restricted inputs: the masked weights are fused as zeros (stored dense); the
        # stacked module keeps the mask as a buffer so pf.count_parameters stays honest
        mask = layer._buffers.get("dendrite_weight_mask")
        bias = None if layer.dendrite_bias is None else layer.dendrite_bias.detach()
        if adapter.stacked and adapter.units_per_call(layer.main):
            self.main_in_stack = fold_main and adapter.foldable(layer.main)
            if self.main_in_stack:
                weight = torch.cat([layer.main.weight.detach(), weight])
                if bias is not None:
                    bias = torch.cat([layer.main.bias.detach(), bias])
            self.stacked = adapter.widened(layer.main, weight, bias)
            if mask is not None:
                if self.main_in_stack:
                    mask = torch.cat([mask.new_ones(c, mask.shape[1]), mask])
                self.stacked.register_buffer("weight_mask", connectivity.shaped(mask, weight.ndim))
        elif adapter.stacked:  # grouped convolution: one plain copy per dendrite
            self.units = nn.ModuleList()
            for i in range(k):
                unit = copy.deepcopy(layer.main)
                unit.weight.copy_(weight[i * c:(i + 1) * c])
                if bias is not None:
                    unit.bias.copy_(bias[i * c:(i + 1) * c])
                self.units.append(unit)
        else:
            self.units = own(layer.dendrite_blocks)

    def _take_output_weights(self, layer: nn.Module) -> None:
        """Sets ``cascade_weight``, ``output_weight`` and ``trailing`` from ``layer``."""
        c, k = self.channels, self.num_dendrites
        cascade = layer.cascade_weight.detach().clone() if layer.cascade_weight is not None \
            else layer.output_weight.detach().new_zeros(0, c)
        # Per-channel weights are stored already shaped to broadcast against the output
        # ([R, C, 1, ...]) where the output's rank is known: one op fewer per call.
        self.trailing = None
        ones: list[int] = []
        if layer.adapter.stacked:
            self.trailing = layer.main.weight.ndim - 2
            ones = [1] * self.trailing
            cascade = cascade.reshape(*cascade.shape, *ones)
        self.cascade_weight = nn.Parameter(cascade, requires_grad=False)
        self.output_weight = nn.Parameter(layer.output_weight.detach().clone().reshape(k, c, *ones),
                                          requires_grad=False)

    def __getattr__(self, name: str) -> Any:
        try:
            return super().__getattr__(name)
        except AttributeError:
            if name not in self.__dict__.get("_main_tensors", ()):
                raise
        # a folded main layer's tensors are the first rows of the stacked layer's
        direct = f"layer.stacked.{name}[:{self.channels}]" if self.main_in_stack else f"layer.main.{name}"
        raise bypass_error(name, self.path, f"{self._main_type} with dendrites, exported", direct)

    def _rows(self, t: torch.Tensor, ndim: int) -> tuple[torch.Tensor, ...]:
        """The rows of a per-channel weight, shaped to broadcast against an ``ndim``-dim output."""
        if self.trailing is None:  # stacked kinds' neuron axes count from the end: shaped once
            t = t.reshape(t.shape[0], self.channels, *([1] * (ndim - self._axis(ndim) - 1)))
        return t.unbind(0)

    def _axis(self, ndim: int) -> int:
        return self.neuron_axis + ndim if self.neuron_axis < 0 else self.neuron_axis

    def forward(self, x: Any, *args: Any, **kwargs: Any) -> Any:
        # Few ops on purpose: at small batch sizes their count, not their FLOPs, sets the latency.
        rebuild = None
        stacked = self.stacked
        if stacked is not None:
            if self.trailing == 0:  # a Linear: skip the module call, it costs as much as an op
                params = stacked._parameters
                z = F.linear(x, params["weight"], params["bias"])
            else:
                z = stacked(x)
            parts = z.split(self.channels, self._axis(z.ndim))  # views, one op
            if self.main_in_stack:
                y, parts = parts[0], parts[1:]
            else:
                y = self.main(x)
            # z is this call's own buffer: the dendrites' parts may be worked on in place
            # unless autograd records them (an input gradient through the exported model)
            owned = not (torch.is_grad_enabled() and z.requires_grad)
        else:
            adapter = self.adapter
            y, rebuild = adapter.neurons(self.main, self.main(x, *args, **kwargs))
            if adapter.stacked:
                parts = [unit(x) for unit in self.units]
            else:
                parts = [adapter.unit_neurons(unit, adapter.call_unit(unit, x, args, kwargs))
                         for unit in self.units]
            owned = False
        y = self._cascade_join(y, parts, owned)
        return y if rebuild is None else rebuild(y)

    def _cascade_join(self, y: torch.Tensor, parts, owned: bool) -> torch.Tensor:
        """``y + sum_k v_k a_k``, ``a_k = f(part_k + sum_{j<k} w_kj a_j)``; with ``owned`` the
        parts become the activations in place. The first join term makes a new tensor, so the
        result never aliases ``y`` (a view of the stacked output) and is contiguous."""
        act = activations.ACTIVATIONS[self.activation]
        inplace = owned and act.forward_ is not None
        params = self._parameters
        v = self._rows(params["output_weight"], y.ndim)
        w = self._rows(params["cascade_weight"], y.ndim) if self.num_dendrites > 1 else ()
        acts: list[torch.Tensor] = []
        row = 0
        for k, pre in enumerate(parts):
            for j in range(k):
                pre = pre.addcmul_(acts[j], w[row]) if inplace else torch.addcmul(pre, w[row], acts[j])
                row += 1
            a = act.forward_(pre) if inplace else act.forward(pre)
            acts.append(a)
            y = y.addcmul_(a, v[k]) if inplace and k else torch.addcmul(y, v[k], a)
        return y
