"""Restricted inputs: fixed connectivity masks that say which inputs each output row reads.

A mask is a boolean tensor beside a weight; the weight used is ``weight * mask``, so the
connections that do not exist stay zero through training (their gradient is zero) and cost no
parameters or FLOPs in :mod:`perforate.measure`. The convention is the one
``torch.nn.utils.prune`` uses: the mask of parameter ``P`` is the buffer ``P_mask`` on the same
module (``weight_orig`` is masked by ``weight_mask``), so pruned layers count alike.

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


def restrict(module: nn.Module, reads: int, choice: str = "local",
             generator: torch.Generator | None = None) -> nn.Module:
    """Make a plain Linear or ConvNd read only ``reads`` inputs per output row, in place.

    Uses ``torch.nn.utils.prune.custom_from_mask`` (``weight_orig`` trains, ``weight_mask`` is
    the saved buffer); the masked weights are zeroed now, so the layer's output changes. A
    sparse plain layer: the control for dendrites with the same restriction.
    """
    from torch.nn.utils import prune

    check_reads(reads, input_size(module), choice, type(module).__name__)
    weight = module.weight
    mask = input_mask(weight.shape[0], weight.shape[1], reads, choice, generator)
    mask = shaped(mask, weight.ndim).expand_as(weight).to(device=weight.device, dtype=weight.dtype)
    prune.custom_from_mask(module, "weight", mask.contiguous())
    with torch.no_grad():
        module.weight_orig.mul_(module.weight_mask)
    return module


def mask_for(module: nn.Module, name: str) -> torch.Tensor | None:
    """The connectivity mask of ``module``'s parameter ``name`` (``P_mask``, or for a pruned
    ``weight_orig`` its ``weight_mask``), or None."""
    buffers = module._buffers
    mask = buffers.get(name + "_mask")
    if mask is None and name.endswith("_orig"):
        mask = buffers.get(name[:-5] + "_mask")
    return mask


def masked_parameters(model: nn.Module) -> dict[int, tuple[nn.Module, torch.Tensor, torch.Tensor]]:
    """``{id(parameter): (module, parameter, mask)}`` for every masked parameter of ``model``."""
    out = {}
    for module in model.modules():
        for name, p in module._parameters.items():
            if p is None:
                continue
            mask = mask_for(module, name)
            if mask is not None and mask.numel():
                out[id(p)] = (module, p, mask)
    return out


def existing(p: torch.Tensor, mask: torch.Tensor) -> int:
    """Entries of ``p`` that ``mask`` keeps (a ``[rows, inputs]`` mask of a convolution's weight
    keeps whole kernels)."""
    if mask.shape == p.shape:
        return int(mask.count_nonzero())
    return int(mask.count_nonzero()) * (p.numel() // mask.numel())
