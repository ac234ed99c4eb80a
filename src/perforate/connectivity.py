"""Restricted inputs: fixed connectivity masks that say which inputs each output row reads.

A mask is a boolean tensor beside a weight; the weight used is ``weight * mask``, so the
connections that do not exist stay zero through training (their gradient is zero) and cost no
parameters or FLOPs in :mod:`perforate.measure`. Two forms: the mask of a parameter ``P`` is
the buffer ``P_mask`` on the same module (a DendriticLayer's ``dendrite_weight_mask``, an
exported layer's ``weight_mask``), or, on a plain layer, an :class:`InputMask` parametrization
of its weight (``torch.nn.utils.parametrize``), which :func:`restrict` registers. Weights pruned
with ``torch.nn.utils.prune`` are not restricted inputs and count as before (dense).

Each row (output channel) reads ``reads`` of ``inputs`` ordered inputs (the features of a
Linear's last axis, or the input channels of a convolution):

- ``"local"``: a window of ``reads`` neighbouring inputs at a start drawn uniformly;
- ``"random"``: ``reads`` inputs drawn without replacement.

Both draw from the ``generator`` given (never the global RNG), and the mask is saved with the
model (a buffer: safetensors), so a loaded model reads the inputs it was trained on.
"""
from __future__ import annotations

import torch
from torch import nn

from .config import INPUT_CHOICES as CHOICES
from .errors import WrapError


def input_size(module: nn.Module) -> int | None:
    """The ordered inputs a row of ``module``'s weight reads (in_features of a Linear, input
    channels of an ungrouped convolution); None where inputs cannot be restricted."""
    weight = getattr(module, "weight", None)
    if isinstance(module, nn.Linear) and isinstance(weight, torch.Tensor):
        return int(weight.shape[1])
    if isinstance(module, (nn.Conv1d, nn.Conv2d, nn.Conv3d)):
        return int(module.in_channels) if module.groups == 1 else None
    return None


def check_reads(reads: int, inputs: int | None, choice: str, where: str) -> None:
    """Raise WrapError unless ``reads`` of ``inputs`` by ``choice`` is a valid restriction."""
    if choice not in CHOICES:
        raise WrapError(f"{where}: input choice must be one of {list(CHOICES)}; got {choice!r}")
    if inputs is None:
        raise WrapError(f"{where}: restricted inputs need a Linear or an ungrouped Conv1d/2d/3d "
                        "(dendrites of recurrent, graph and block layers are whole module "
                        "copies); set dendrite_inputs for those layers to 0, e.g. with a "
                        "{glob: count} mapping that leaves them out")
    if isinstance(reads, bool) or not isinstance(reads, int) or not 1 <= reads <= inputs:
        raise WrapError(f"{where}: each row can read 1 to {inputs} inputs (the layer has "
                        f"{inputs}); got {reads!r}. Choose a smaller count (a window must fit "
                        "in the input)")


def input_mask(rows: int, inputs: int, reads: int, choice: str,
               generator: torch.Generator | None = None) -> torch.Tensor:
    """A ``[rows, inputs]`` boolean mask with ``reads`` True entries per row (see the module)."""
    check_reads(reads, inputs, choice, "input_mask")
    mask = torch.zeros(rows, inputs, dtype=torch.bool)
    if rows == 0:
        return mask
    if choice == "local":
        starts = torch.randint(0, inputs - reads + 1, (rows, 1), generator=generator)
        cols = starts + torch.arange(reads)
    else:
        cols = torch.rand(rows, inputs, generator=generator).argsort(1)[:, :reads]
    return mask.scatter_(1, cols, True)


def shaped(mask: torch.Tensor, weight_ndim: int) -> torch.Tensor:
    """``mask [rows, inputs]`` with trailing ones to broadcast against a weight of ``weight_ndim``
    dims (a convolution's kernel axes)."""
    return mask.reshape(*mask.shape, *([1] * (weight_ndim - 2)))


class InputMask(nn.Module):
    """A parametrization ``weight * mask`` (``torch.nn.utils.parametrize``): the restricted
    inputs of a plain layer. ``mask`` is a boolean buffer ``[rows, inputs, 1, ...]``."""

    def __init__(self, mask: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("mask", mask)

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        return weight * self.mask


def restrict(module: nn.Module, reads: int, choice: str = "local",
             generator: torch.Generator | None = None) -> nn.Module:
    """Make a plain Linear or ConvNd read only ``reads`` inputs per output row, in place.

    Registers an :class:`InputMask` parametrization on ``module.weight`` (the trained tensor is
    ``module.parametrizations.weight.original``; the mask is a buffer, saved in the state
    dict); the masked weights are zeroed now, so the layer's output changes. A sparse plain
    layer: the control for dendrites with the same restriction. Returns ``module``.
    """
    from torch.nn.utils import parametrize

    check_reads(reads, input_size(module), choice, type(module).__name__)
    weight = module.weight
    mask = input_mask(weight.shape[0], weight.shape[1], reads, choice, generator).to(weight.device)
    mask = shaped(mask, weight.ndim)
    with torch.no_grad():
        weight.mul_(mask)
    parametrize.register_parametrization(module, "weight", InputMask(mask))
    return module


def mask_for(module: nn.Module, name: str) -> torch.Tensor | None:
    """The connectivity mask of ``module``'s own parameter ``name`` (the buffer ``name_mask``), or None."""
    return module._buffers.get(name + "_mask")


def masked_parameters(model: nn.Module) -> dict[int, tuple[nn.Module, torch.Tensor, torch.Tensor]]:
    """``{id(parameter): (module, parameter, mask)}`` for every masked parameter of ``model``;
    the module is the layer whose forward uses it."""
    from torch.nn.utils import parametrize

    out = {}
    for module in model.modules():
        for name, p in module._parameters.items():
            mask = mask_for(module, name) if p is not None else None
            if mask is not None and mask.numel():
                out[id(p)] = (module, p, mask)
        if parametrize.is_parametrized(module):
            for plist in module.parametrizations.values():
                masks = [m.mask for m in plist if isinstance(m, InputMask)]
                if masks and hasattr(plist, "original"):
                    out[id(plist.original)] = (module, plist.original, masks[0])
    return out


def existing(p: torch.Tensor, mask: torch.Tensor) -> int:
    """Entries of ``p`` that ``mask`` keeps (a ``[rows, inputs]`` mask of a convolution's weight
    keeps whole kernels)."""
    if mask.shape == p.shape:
        return int(mask.count_nonzero())
    return int(mask.count_nonzero()) * (p.numel() // mask.numel())
