"""How long a protocol takes on this machine, from a short timed run of each arm's model.

:func:`estimate` trains the standard model at each width an arm trains, plain and with one gd
dendrite per layer, for a few epochs through :func:`train_model` (so evaluation and the grower's
bookkeeping count too), and multiplies the median epoch time by each run's epoch budget. Runs
that stop before their budget take less, and pb dendrite phases and growth events cost a
little more, so the total is a guide; the CLI's progress display refines it as runs finish.
"""
from __future__ import annotations

import statistics
from dataclasses import dataclass

import torch

import perforate as pf
from perforate.experiments.bench.arms import DENDRITIC_ARMS, Protocol, RunSpec, plan_runs
from perforate.experiments.data.datasets import DatasetSplits, load_dataset
from perforate.experiments.data.models import build_model
from perforate.experiments.harness.train import train_model

_EPOCHS = 4  # timed epochs per model; the first (warm-up) is left out


@dataclass(frozen=True)
class Estimate:
    """Seconds per full-data epoch of each arm and the protocol's total at full budgets."""

    epoch_seconds: dict[str, float]
    total_seconds: float
    runs: int
    max_epochs: int


def epoch_seconds(protocol: Protocol, data: DatasetSplits, width: int, dendrites: int) -> float:
    """Median seconds of a training epoch (validation included) of the standard model at
    ``width`` with ``dendrites`` gd dendrites per layer."""
    model = build_model(protocol.model, data, width, seed=0)
    if dendrites:
        model = pf.perforate(model, pf.Config())
        generator = torch.Generator().manual_seed(0)
        for layer in pf.dendritic_layers(model).values():
            layer.add_dendrites(dendrites, generator)
    result = train_model(data, protocol.model, width, mode="gd" if dendrites else None,
                         model=model, max_epochs=_EPOCHS, early_stopping=False,
                         lr=protocol.lr, batch_size=protocol.batch_size, device=protocol.device,
                         monitor=protocol.monitor, config=pf.Config(plots=False))
    return statistics.median(row["seconds"] for row in result.history[1:])


def _shape(protocol: Protocol, arm: str) -> tuple[int, int]:
    """(width, dendrites per layer) an arm's model is timed at."""
    narrow = arm in ("compressed", "control")
    return (protocol.narrow_width if narrow else protocol.width), int(arm in DENDRITIC_ARMS)


def run_budget(protocol: Protocol, spec: RunSpec) -> int:
    """The most epochs ``spec`` can train (a control trains as many as its compressed run)."""
    if spec.arm == "pruned":
        return protocol.finetune_epochs or protocol.max_epochs
    return protocol.max_epochs


def estimate(protocol: Protocol) -> Estimate:
    """Time each arm's model briefly and add up the runs of :func:`plan_runs` at full budgets."""
    data = load_dataset(protocol.dataset, seed=protocol.seeds[0])
    plan = plan_runs(protocol)
    shapes = {spec.arm: _shape(protocol, spec.arm) for spec in plan}
    measured = {shape: epoch_seconds(protocol, data, *shape) for shape in set(shapes.values())}
    per_arm = {arm: measured[shape] for arm, shape in shapes.items()}
    total = sum(per_arm[s.arm] * s.fraction * run_budget(protocol, s) for s in plan)
    return Estimate(per_arm, total, len(plan), protocol.max_epochs)
