"""What every training run of the harness is made of: the data, the model and how it trains.

:class:`RunSettings` holds these settings and their checks once. The bench protocol
(:class:`perforate.experiments.bench.arms.Protocol`) and a sweep's fixed experiment
(:class:`perforate.sweeps.Experiment`) extend it with what only they need.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from perforate.errors import ExperimentError
from perforate.experiments.data.datasets import dataset_names
from perforate.experiments.data.models import model_names

MONITORS = ("loss", "score")
STOPPING = ("budget", "patience")
"""Stopping rules of a bench: "budget" (no early stopping: a run trains its whole budget and
keeps its best validation epoch; the grower plans growth inside it) or "patience" (plain runs
stop at a plateau, dendritic runs at a plateau where growth cannot go on)."""


@dataclass(frozen=True)
class RunSettings:
    """The dataset, the standard model and its width, and ``train_model``'s training settings."""

    dataset: str = "mnist1d"
    model: str = "mlp"
    width: int = 100
    max_epochs: int = 150
    lr: float = 1e-2
    batch_size: int = 100
    """150 epochs, Adam lr 1e-2, batch 100: the published MNIST-1D protocol (6000 steps of
    batch 100 over 4000 samples; greydanus/mnist1d). The harness's width-100 MLP reaches 62.7 %
    at its best validation epoch (the published recipe, without the 15 % validation carve-out,
    65.2 %) against 59.4 % at lr 1e-3, batch 64 (``results/baseline-protocol.md``, 5 seeds)."""
    weight_decay: float = 0.0
    monitor: str = "score"
    """What stopping, growth and the kept checkpoint follow: validation "score" (accuracy or
    R²) or "loss". On MNIST-1D the validation loss rises from epoch ~20 while the accuracy still
    climbs; following it costs 5-7 points."""
    device: str = "cpu"

    def check(self, where: str = "") -> None:
        """Raise ExperimentError naming the first bad setting (``where`` prefixes its name)."""
        if self.dataset not in dataset_names():
            raise ExperimentError(f"unknown {where}dataset {self.dataset!r}; choose one of: "
                                  f"{', '.join(dataset_names())}")
        if self.model not in model_names():
            raise ExperimentError(f"unknown {where}model {self.model!r}; choose one of: "
                                  f"{', '.join(model_names())}")
        for name in ("width", "max_epochs", "batch_size"):
            positive_int(where + name, getattr(self, name))
        if self.monitor not in MONITORS:
            raise ExperimentError(f"{where}monitor must be 'loss' or 'score'; got {self.monitor!r}")
        finite_number(where + "lr", self.lr, minimum=0.0, strict=True)
        finite_number(where + "weight_decay", self.weight_decay, minimum=0.0)


def check_device(name: str, device: str) -> None:
    """Raise ExperimentError unless ``device`` names a device this torch build can use here
    (checked where training runs in this process: a sweep's trials may run elsewhere)."""
    import torch

    try:
        kind = torch.device(device).type
    except (RuntimeError, TypeError) as exc:
        raise ExperimentError(f"{name} {device!r} is not a torch device; use cpu, cuda or "
                              "cuda:N") from exc
    available = {"cuda": torch.cuda.is_available,
                 "mps": lambda: torch.backends.mps.is_available()}.get(kind, lambda: True)
    if not available():
        raise ExperimentError(f"{name} {device!r}: this torch ({torch.__version__}) has no {kind} "
                              "device (a CPU-only build, or no GPU visible); use cpu")


def check_stopping(value: Any) -> None:
    """Raise ExperimentError unless ``value`` is one of :data:`STOPPING`."""
    if value not in STOPPING:
        raise ExperimentError(f"stopping must be 'budget' or 'patience'; got {value!r}")


def positive_int(name: str, value: Any) -> None:
    """Raise ExperimentError unless ``value`` is an integer >= 1."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ExperimentError(f"{name} must be a positive integer; got {value!r}")


def finite_number(name: str, value: Any, minimum: float, strict: bool = False) -> None:
    """Raise ExperimentError unless ``value`` is a finite number above (or at) ``minimum``."""
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if not (ok and (value > minimum if strict else value >= minimum)):
        relation = ">" if strict else ">="
        raise ExperimentError(f"{name} must be a finite number {relation} {minimum:g}; got {value!r}")
