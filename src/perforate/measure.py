"""Honest measurements: parameters, FLOPs per sample, latency and remaining error reduction."""
from __future__ import annotations

import statistics
import time
from typing import Any, Callable

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode


def _inference_parameters(model: nn.Module):
    """Parameters inference needs: everything except pb candidate pools (training-only)."""
    from .training.pb import CandidatePool

    skip = {id(p) for m in model.modules() if isinstance(m, CandidatePool) for p in m.parameters()}
    seen = set()
    for p in model.parameters():
        if id(p) not in seen and id(p) not in skip:
            seen.add(id(p))
            yield p


def count_parameters(model: nn.Module) -> int:
    """Every parameter inference needs (tied weights counted once, training-only pools not at all)."""
    return sum(p.numel() for p in _inference_parameters(model))


def parameter_breakdown(model: nn.Module) -> dict[str, int]:
    """Counts of all, trainable, frozen and dendrite parameters (inference parameters only)."""
    from .convert import dendritic_layers

    params = list(_inference_parameters(model))
    dendrite_ids = set()
    for layer in dendritic_layers(model).values():
        for p in (*layer.dendrite_parameters(), layer.output_weight):
            if p is not None:
                dendrite_ids.add(id(p))
    return {
        "total": sum(p.numel() for p in params),
        "trainable": sum(p.numel() for p in params if p.requires_grad),
        "frozen": sum(p.numel() for p in params if not p.requires_grad),
        "dendrite": sum(p.numel() for p in params if id(p) in dendrite_ids),
    }


def flops_per_sample(model: nn.Module, example: torch.Tensor) -> float:
    """Forward FLOPs per sample counted by ``torch.utils.flop_counter.FlopCounterMode``.

    ``example`` is a batch; its first dimension is the batch size. FlopCounterMode counts
    matmuls and convolutions (the dominant cost), not element-wise operations.
    """
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            model(example)
    finally:
        model.train(was_training)
    return counter.get_total_flops() / max(1, example.shape[0])


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
