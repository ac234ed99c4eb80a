"""Export a dendritic model to plain inference modules: dendrites fused, no hooks, no pools."""
from __future__ import annotations

import copy

from torch import nn

from .convert import dendritic_layers
from .exported import ExportedDendriticLayer
from .layers import DendriticLayer
from .modules import replace_module

__all__ = ["ExportedDendriticLayer", "export"]


def _shared_elsewhere(model: nn.Module, layer: DendriticLayer) -> bool:
    """True when a tensor of ``layer.main`` is also used by a module outside ``layer`` (tied
    weights, e.g. an embedding and an output head): folding would copy it and untie it."""
    own = {id(p) for p in layer.main.parameters()}
    inside = {id(m) for m in layer.modules()}
    for module in model.modules():
        if id(module) in inside:
            continue
        if any(id(p) in own for p in module.parameters(recurse=False)):
            return True
    return False


def export(model: nn.Module) -> nn.Module:
    """A copy of ``model`` for inference: plain modules, dendrites fused, no hooks or pools.

    Layers without dendrites become their original module; the others become
    :class:`ExportedDendriticLayer`. Weights tied across modules stay tied (the parameter
    count equals the live model's). Modules perforate opened (attention, multi-layer RNNs)
    close back into the stock torch module where no dendrites remain. The result works with
    ``torch.jit.trace``, ``torch.export`` and ``torch.compile``. Call ``.eval()`` on it.
    """
    from .kinds import openers

    model = copy.deepcopy(model)
    for name, layer in dendritic_layers(model).items():
        if layer.num_dendrites == 0:
            replacement = layer.main
        else:
            replacement = layer.adapter.export_layer(layer, fold_main=not _shared_elsewhere(model, layer))
        if not name:
            return replacement
        replace_module(model, layer, replacement)
    model = openers.close_all(model)
    for p in model.parameters():
        p.requires_grad_(False)
    return model
