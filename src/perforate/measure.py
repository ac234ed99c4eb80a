"""Honest measurements, one function per quantity: parameters, FLOPs per sample, latency, peak
training memory per step and remaining error reduction."""
from __future__ import annotations

import statistics
import time
import weakref
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Iterator

import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten
from torch.utils.flop_counter import FlopCounterMode


def _inference_parameters(model: nn.Module):
    """Parameters inference needs: everything except pb candidate pools (training-only)."""
    from .growth.pb import CandidatePool

    skip = {id(p) for m in model.modules() if isinstance(m, CandidatePool) for p in m.parameters()}
    seen = set()
    for p in model.parameters():
        if id(p) not in seen and id(p) not in skip:
            seen.add(id(p))
            yield p


def _sizes(model: nn.Module, params) -> list[tuple[nn.Parameter, int]]:
    """``(parameter, entries that exist)``: a parameter with restricted inputs (see
    :mod:`perforate.connectivity`) counts only the connections its mask keeps."""
    from .connectivity import existing, masked_parameters

    masked = masked_parameters(model)
    return [(p, existing(p, masked[id(p)][2]) if id(p) in masked else p.numel()) for p in params]


def count_parameters(model: nn.Module) -> int:
    """Every parameter inference needs (tied weights counted once, training-only pools not at
    all, masked-out connections of restricted-input weights not at all)."""
    return sum(n for _, n in _sizes(model, _inference_parameters(model)))


def parameter_breakdown(model: nn.Module) -> dict[str, int]:
    """Counts of all, trainable, frozen and dendrite parameters (inference parameters only)."""
    from .convert import dendritic_layers

    sizes = _sizes(model, _inference_parameters(model))
    dendrite_ids = set()
    for layer in dendritic_layers(model).values():
        for p in (*layer.dendrite_parameters(), layer.output_weight):
            if p is not None:
                dendrite_ids.add(id(p))
    return {
        "total": sum(n for _, n in sizes),
        "trainable": sum(n for p, n in sizes if p.requires_grad),
        "frozen": sum(n for p, n in sizes if not p.requires_grad),
        "dendrite": sum(n for p, n in sizes if id(p) in dendrite_ids),
    }


def flops_per_sample(model: nn.Module, example: torch.Tensor) -> float:
    """Forward FLOPs per sample counted by ``torch.utils.flop_counter.FlopCounterMode``.

    ``example`` is a batch; its first dimension is the batch size. FlopCounterMode counts
    matmuls and convolutions (the dominant cost), not element-wise operations. Masked-out
    connections of restricted inputs (:mod:`perforate.connectivity`) are not counted: 2 FLOPs per missing connection and output position are taken off.
    """
    was_training = model.training
    model.eval()
    skipped = [0.0]
    handles = [m.register_forward_hook(_skip_counter(m, p, mask, skipped))
               for m, p, mask in _masked_ops(model)]
    try:
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            model(example)
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    return (counter.get_total_flops() - skipped[0]) / max(1, example.shape[0])


def _masked_ops(model: nn.Module):
    """``(module, weight, mask)`` for each masked weight an inference forward uses; the module
    is the one whose output shows the positions the weight runs at (an exported layer's
    stacked Linear is called as a function: its layer stands for it)."""
    from .connectivity import masked_parameters
    from .growth.pb import CandidatePool
    from .inference import ExportedDendriticLayer

    stacks = {id(m.stacked): m for m in model.modules()
              if isinstance(m, ExportedDendriticLayer) and m.stacked is not None}
    for module, p, mask in masked_parameters(model).values():
        if not isinstance(module, CandidatePool):  # training only
            yield stacks.get(id(module), module), p, mask


def _skip_counter(module: nn.Module, p: torch.Tensor, mask: torch.Tensor, skipped: list):
    """A forward hook adding the FLOPs of ``p``'s masked-out connections to ``skipped[0]``."""
    from .inference import ExportedDendriticLayer
    from .layers import DendriticLayer

    from .connectivity import existing

    zeros = p.numel() - existing(p, mask)
    # the output channels the module returns: a dendritic layer's neurons (its dendrites run at
    # the positions of its output), else the weight's rows
    layer = isinstance(module, (DendriticLayer, ExportedDendriticLayer))
    channels = module.channels if layer else p.shape[0]

    def count(_module, _inputs, out):
        if isinstance(out, torch.Tensor) and out.numel() and zeros:
            skipped[0] += 2.0 * zeros * (out.numel() / channels)
    return count


def remaining_error_reduction(base_accuracy: float, new_accuracy: float) -> float:
    """RER = (err_base - err_new) / err_base, errors in percent points (accuracies in [0, 100])."""
    err_base, err_new = 100.0 - base_accuracy, 100.0 - new_accuracy
    if err_base <= 0:
        return 0.0
    return (err_base - err_new) / err_base


def time_call(fn: Callable[[], Any], repeats: int = 20, warmup: int = 3) -> dict[str, float]:
    """Median, min and max wall seconds of ``fn()`` over ``repeats`` runs after ``warmup``."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return {"median": statistics.median(times), "min": min(times), "max": max(times)}


def latency(model: nn.Module, example: torch.Tensor, repeats: int = 20) -> dict[str, float]:
    """Inference latency of ``model(example)`` (no grad, eval mode): median/min/max seconds."""
    model.eval()

    def run():
        with torch.no_grad():
            model(example)
        if example.is_cuda:
            torch.cuda.synchronize()

    return time_call(run, repeats=repeats)


# ---------------------------------------------------------------------- memory
@dataclass
class MemoryPeak:
    """What :func:`peak_training_memory` measured (filled in when its block ends)."""

    bytes: int = 0
    """Peak bytes of tensor storage held during the block, the resident state included."""
    resident: int = 0
    """Bytes held when the block started: parameters, buffers, gradients, optimizer state."""


class _LiveStorages(TorchDispatchMode):
    """Counts the bytes of the tensor storages every op allocates until they are freed."""

    def __init__(self) -> None:
        super().__init__()
        self.live = self.peak = 0
        self._counted: set[int] = set()

    def _free(self, ptr: int, nbytes: int) -> None:
        self._counted.discard(ptr)
        self.live -= nbytes

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        # views and in-place results share an input's storage: nothing new was allocated
        inputs = {t.untyped_storage().data_ptr() for t in tree_flatten((args, kwargs))[0]
                  if isinstance(t, torch.Tensor)}
        for t in tree_flatten(out)[0]:
            if not isinstance(t, torch.Tensor):
                continue
            storage = t.untyped_storage()
            ptr, nbytes = storage.data_ptr(), storage.nbytes()
            if nbytes and ptr not in inputs and ptr not in self._counted:
                self._counted.add(ptr)
                self.live += nbytes
                weakref.finalize(storage, self._free, ptr, nbytes)
        self.peak = max(self.peak, self.live)
        return out


def _storage_bytes(tensors: Iterable[Any]) -> int:
    seen: set[int] = set()
    total = 0
    for t in tensors:
        if isinstance(t, torch.Tensor) and t.untyped_storage().data_ptr() not in seen:
            seen.add(t.untyped_storage().data_ptr())
            total += t.untyped_storage().nbytes()
    return total


@contextmanager
def peak_training_memory(model: nn.Module,
                         optimizer: torch.optim.Optimizer | None = None) -> Iterator[MemoryPeak]:
    """Measure the peak tensor memory of the training step run inside the block, in bytes.

    ``peak.bytes`` is what the model holds when the block starts (parameters, buffers, existing
    gradients and ``optimizer`` state) plus the peak of the storages the block allocates on top
    of it and has not freed yet: the batch, activations saved for backward, gradients, new
    optimizer state and temporaries. Counted per tensor storage by a dispatch mode, so it is
    the same quantity on every device (no allocator rounding, no process overhead) and it
    needs no profiler. The step runs a little slower while measured: measure one step.

    Example::

        with pf.peak_training_memory(model, optimizer) as peak:
            loss_fn(model(x), y).backward()
            optimizer.step()
        peak.bytes
    """
    result = MemoryPeak()
    params = list(model.parameters())
    state = [v for s in optimizer.state.values() for v in s.values()] if optimizer is not None else []
    result.resident = _storage_bytes([*params, *model.buffers(), *(p.grad for p in params), *state])
    tracker = _LiveStorages()
    with tracker:
        yield result
    result.bytes = result.resident + tracker.peak
