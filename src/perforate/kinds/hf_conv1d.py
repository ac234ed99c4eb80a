"""Hugging Face's ``Conv1D`` (``transformers.pytorch_utils.Conv1D``): GPT-2's projections.

Despite its name it is a Linear with the weight stored transposed, ``[in, out]``
(``y = x @ W + b``): GPT-2 / OpenAI GPT / ImageGPT build ``c_attn``, ``c_proj`` and ``c_fc``
from it. Its neurons are on the last axis, as a Linear's. The dendrites are stored the way
a Linear keeps its weight, ``[K*C, in]``, and run as one ``F.linear``; the main layer keeps
its own ``[in, out]`` weight and its own forward (so a checkpoint's main tensors keep GPT-2's
names and layout, and growth leaves the output bit-identical).

Transformers is only looked at when a model already imported it; nothing here imports it.
"""
from __future__ import annotations

import math
import sys

import torch
from torch import nn

from .linear import LinearKind
from .stacked import _like

_MODULE = "transformers.pytorch_utils"


def _conv1d_type() -> type | None:
    module = sys.modules.get(_MODULE)
    return getattr(module, "Conv1D", None) if module is not None else None


class HFConv1DKind(LinearKind):
    name = "hf_conv1d"

    def matches(self, module: nn.Module) -> bool:
        conv1d = _conv1d_type()
        return conv1d is not None and isinstance(module, conv1d)

    def channels(self, module: nn.Module) -> int:
        return module.weight.shape[1]

    def foldable(self, main: nn.Module) -> bool:
        return False  # its weight is [in, out]: export runs it beside the stacked dendrites

    def fused_forward(self, layer, x, args, kwargs):
        return None  # the main layer's own forward, so growth keeps its output bit-identical

    def _unit_shape(self, layer, n: int) -> tuple[int, int]:
        return n * layer.channels, layer.main.weight.shape[0]

    def new_units(self, layer, n, generator):
        weight = layer.main.weight
        bound = layer.init_scale / math.sqrt(weight.shape[0])  # nn.Linear's rule, fan-in = in
        w = (torch.rand(self._unit_shape(layer, n), generator=generator, dtype=torch.float32) * 2 - 1) * bound
        b = None
        if layer.has_bias:
            b = (torch.rand(n * layer.channels, generator=generator, dtype=torch.float32) * 2 - 1) * bound
            b = b.to(device=weight.device, dtype=layer.main.bias.dtype)
        return _like(w, weight), b

    def placeholder_units(self, layer, n):
        weight = layer.main.weight
        w = torch.zeros(self._unit_shape(layer, n), device=weight.device, dtype=weight.dtype)
        b = torch.zeros(n * layer.channels, device=weight.device, dtype=weight.dtype) if layer.has_bias else None
        return w, b


KIND = HFConv1DKind()
