"""Export a dendritic model to plain inference modules: dendrites fused, no hooks, no pools."""
from __future__ import annotations

import copy
import tempfile
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .convert import dendritic_layers
from .inference import ExportedDendriticLayer
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


def export(model: nn.Module, compile_for: Any = None, package_path: str | Path | None = None) -> Any:
    """A copy of ``model`` for inference: plain modules, dendrites fused, no hooks or pools.

    Layers without dendrites become their original module; the others become
    :class:`ExportedDendriticLayer`. Weights tied across modules stay tied (the parameter
    count equals the live model's). Modules perforate opened (attention, multi-layer RNNs)
    close back into the stock torch module where no dendrites remain. The result works with
    ``torch.jit.trace``, ``torch.export`` and ``torch.compile``. Call ``.eval()`` on it.

    Args:
        model: a perforated model.
        compile_for: example inputs (a tensor or a tuple of them). When given, the exported
            model (in eval mode) is compiled ahead of time with AOTInductor for inputs like
            these, their first dimension free (the batch), and torch's compiled runner is
            returned instead of a module: call it like the model. Small batches run at about
            the latency of a plain model of equal parameter count (``perforate bench cost``),
            where the eager module's per-op overhead costs 2-3 times that. Compiling takes
            tens of seconds and a C++ compiler (a CUDA toolchain for CUDA inputs).
        package_path: where the compiled package (``.pt2``) is kept, to be loaded again with
            ``torch._inductor.aoti_load_package`` without compiling; a temporary one when None.
    """
    from .kinds import openers

    model = copy.deepcopy(model)
    for name, layer in dendritic_layers(model).items():
        if layer.num_dendrites == 0:
            replacement = layer.main
        else:
            replacement = layer.adapter.export_layer(layer, fold_main=not _shared_elsewhere(model, layer))
        if not name:
            model = replacement
            break
        replace_module(model, layer, replacement)
    else:
        model = openers.close_all(model)
    for p in model.parameters():
        p.requires_grad_(False)
    if compile_for is None:
        return model
    return _compile_ahead_of_time(model.eval(), compile_for, package_path)


def _compile_ahead_of_time(model: nn.Module, example: Any, package_path: str | Path | None) -> Any:
    """``model`` compiled by AOTInductor for inputs like ``example``, the batch dimension free."""
    inputs = example if isinstance(example, tuple) else (example,)
    # torch.export specialises a dimension of size 1, so a batch of one is traced as two
    traced = tuple(torch.cat([t, t]) if isinstance(t, torch.Tensor) and t.shape[:1] == (1,) else t
                   for t in inputs)
    batch = torch.export.Dim("batch", min=1)
    shapes = tuple({0: batch} if isinstance(t, torch.Tensor) and t.dim() else None for t in traced)
    with torch.no_grad():
        program = torch.export.export(model, traced, dynamic_shapes=shapes)
    with tempfile.TemporaryDirectory(prefix="perforate-aoti-") as tmp:
        path = str(package_path) if package_path is not None else str(Path(tmp) / "model.pt2")
        path = torch._inductor.aoti_compile_and_package(program, package_path=path)
        with warnings.catch_warnings():  # torch's own pytree deprecation notice, not the user's
            warnings.simplefilter("ignore", FutureWarning)
            return torch._inductor.aoti_load_package(path)
