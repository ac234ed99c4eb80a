"""One sweep trial: the dendritic run and its baseline under the same model hyperparameters.

The baseline is the same model (same width, lr, batch size, weight decay, epoch budget, seed)
trained without dendrites for the full epoch budget, keeping its best-validation weights. It
does not depend on dendrite hyperparameters, so baselines are cached on disk keyed by their
hyperparameters and every trial with the same key reuses one run.

Both backends write their trials in one format (:class:`TrialRecord`, ``trials.jsonl`` and
``results.json`` via :func:`write_results`).
"""
from __future__ import annotations

import hashlib
import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

from ..config import Config
from ..errors import ExperimentError
from ..files import write_text
from .space import SweepSpace, split_hyperparameters

STATES = ("COMPLETE", "PRUNED", "FAIL")
RESULTS_FORMAT = 1


class TrialStopped(Exception):
    """Raised by a trial's epoch callback to stop the dendritic run (a pruned trial)."""


@dataclass
class TrialRecord:
    """Everything one trial produced. Scores are in percent (accuracy, or R² × 100).

    ``value`` is the sweep metric (None unless COMPLETE). ``improvement`` holds
    dendritic-minus-baseline differences on validation and test (percent points) and
    ``rer_test``, the remaining error reduction on test. ``intermediate`` is the best
    validation score so far after each epoch of the dendritic run.
    """

    number: int
    state: str
    hyperparameters: dict[str, Any]
    value: float | None = None
    dendritic: dict[str, Any] = field(default_factory=dict)
    baseline: dict[str, Any] = field(default_factory=dict)
    improvement: dict[str, Any] = field(default_factory=dict)
    intermediate: list[float] = field(default_factory=list)
    seconds: float = 0.0
    error: str | None = None
    backend: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrialRecord:
        return cls(**data)


# ---------------------------------------------------------------- baselines


def baseline_key(space: SweepSpace, hyper: dict[str, Any]) -> dict[str, Any]:
    """The settings a baseline depends on: everything but the dendrite (pf.Config) fields."""
    e = space.experiment
    _, model_hyper = split_hyperparameters(hyper)
    return {"dataset": e.dataset, "model": e.model, "seed": e.seed,
            "train_fraction": e.train_fraction, "max_epochs": e.max_epochs, "monitor": e.monitor,
            **dict(sorted(model_hyper.items()))}


class BaselineCache:
    """Baseline results on disk, one JSON file per key (atomic writes; safe for parallel trials).

    Two trials that need the same missing baseline at the same moment both train it (the runs
    are deterministic, so either file is right); afterwards every trial reuses it.
    """

    def __init__(self, folder: str | Path):
        self.folder = Path(folder)

    def _path(self, key: dict[str, Any]) -> Path:
        digest = hashlib.sha1(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
        return self.folder / f"{digest}.json"

    def get(self, key: dict[str, Any]) -> dict[str, Any] | None:
        path = self._path(key)
        try:
            stored = json.loads(path.read_text())
        except (OSError, ValueError):
            return None
        return stored["result"] if stored.get("key") == key else None

    def put(self, key: dict[str, Any], result: dict[str, Any]) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        write_text(self._path(key), json.dumps({"key": key, "result": result}))


# ---------------------------------------------------------------- running


def trial_data(space: SweepSpace) -> Any:
    """The dataset splits every trial of ``space`` trains on."""
    from ..experiments.data.datasets import load_dataset

    e = space.experiment
    return load_dataset(e.dataset, seed=e.seed, train_fraction=e.train_fraction)


def resolve_device(requested: str = "auto") -> str:
    import torch

    if requested == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return requested


def run_trial(space: SweepSpace, number: int, hyper: dict[str, Any], data: Any,
              cache: BaselineCache, *,
              report: Callable[[int, float, TrialRecord], None] | None = None,
              backend: str = "") -> TrialRecord:
    """Run (or reuse) the baseline, then the dendritic run, and return the record.

    ``report(epoch, objective, record)`` is called after every dendritic epoch with the sweep
    metric's running value (best validation score so far, minus the baseline's for the
    "improvement" metric) and the record so far; it may raise :class:`TrialStopped` to prune the
    trial (state "PRUNED"). Any other exception propagates.
    """
    from ..experiments.harness.train import train_model

    start = time.perf_counter()
    e = space.experiment
    dendrite_hyper, model_hyper = split_hyperparameters(hyper)
    width = int(model_hyper.pop("width", e.width))
    train_kw = dict(lr=float(model_hyper["lr"]), batch_size=int(model_hyper["batch_size"]),
                    weight_decay=float(model_hyper["weight_decay"]), max_epochs=e.max_epochs,
                    seed=e.seed, device=resolve_device(e.device), monitor=e.monitor)
    try:
        config = Config().replace(**dendrite_hyper)
    except Exception as exc:
        raise ExperimentError(f"trial {number}: hyperparameters {dendrite_hyper} do not make a "
                              f"valid perforate.Config: {exc}") from exc

    baseline = _baseline(space, hyper, data, cache, width, train_kw)
    best: list[float] = []

    def on_epoch(epoch: int, val: float) -> None:
        best.append(max(val, best[-1]) if best else val)
        if report is not None:
            objective = best[-1] - (baseline["val"] if space.metric == "improvement" else 0.0)
            report(epoch, objective, record)

    record = TrialRecord(number=number, state="COMPLETE", hyperparameters=dict(hyper),
                         baseline=baseline, intermediate=best, backend=backend)
    try:
        result = train_model(data, e.model, width, mode=config.mode, config=config,
                             epoch_callback=on_epoch, **train_kw)
    except TrialStopped:
        record.state = "PRUNED"
        record.dendritic = {"epochs": len(best), "val": best[-1] if best else None}
        record.seconds = time.perf_counter() - start
        return record
    record.dendritic = {**_scores(result), "dendrites": result.dendrites}
    record.improvement = improvement(record.dendritic, baseline)
    record.value = metric_value(space, record)
    record.seconds = time.perf_counter() - start
    return record


def _baseline(space: SweepSpace, hyper: dict[str, Any], data: Any, cache: BaselineCache,
              width: int, train_kw: dict[str, Any]) -> dict[str, Any]:
    """The trial's baseline from the cache, or trained (plain, the full budget) and cached."""
    from ..experiments.harness.train import train_model

    key = baseline_key(space, hyper)
    base = cache.get(key)
    reused = base is not None
    if base is None:
        result = train_model(data, space.experiment.model, width, mode=None, early_stopping=False,
                             **train_kw)
        base = _scores(result)
        cache.put(key, base)
    return {**base, "reused": reused}


def _scores(result: Any) -> dict[str, Any]:
    """What a record keeps of a ``TrainResult``."""
    return {"val": result.val_score, "test": result.test_score, "params": result.params,
            "flops_per_sample": result.flops_per_sample, "epochs": result.epochs,
            "best_epoch": result.best_epoch, "seconds": result.seconds}


def improvement(dendritic: dict[str, Any], baseline: dict[str, Any]) -> dict[str, Any]:
    """Dendritic minus baseline (percent points), remaining error reduction, parameter ratio."""
    from ..measure import remaining_error_reduction

    out = {"val": dendritic["val"] - baseline["val"], "test": dendritic["test"] - baseline["test"],
           "params_ratio": dendritic["params"] / baseline["params"],
           "rer_test": remaining_error_reduction(baseline["test"], dendritic["test"])}
    return out


def metric_value(space: SweepSpace, record: TrialRecord) -> float:
    return (record.improvement["val"] if space.metric == "improvement"
            else record.dendritic["val"])


# ---------------------------------------------------------------- results files


def best_record(space: SweepSpace, records: list[TrialRecord]) -> TrialRecord | None:
    done = [r for r in records if r.state == "COMPLETE" and r.value is not None]
    if not done:
        return None
    pick = max if space.maximize else min
    return pick(done, key=lambda r: r.value)


def write_results(out: str | Path, space: SweepSpace, backend: str,
                  records: list[TrialRecord]) -> None:
    """Write ``trials.jsonl`` (one record a line) and ``results.json`` (sweep + all records)."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    records = sorted(records, key=lambda r: r.number)
    lines = "".join(json.dumps(r.to_dict()) + "\n" for r in records)
    write_text(out / "trials.jsonl", lines)
    best = best_record(space, records)
    counts = {s: sum(r.state == s for r in records) for s in STATES}
    summary = {"format": RESULTS_FORMAT, "backend": backend, "versions": versions(),
               "sweep": space.to_dict(),
               "counts": counts, "best": best.to_dict() if best else None,
               "trials": [r.to_dict() for r in records]}
    write_text(out / "results.json", json.dumps(summary, indent=1))


def versions() -> dict[str, str]:
    """Versions of the packages that shape a sweep's numbers."""
    from importlib import metadata

    out = {}
    for name in ("perforate", "torch", "optuna", "ray"):
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    return out


def read_results(out: str | Path) -> list[TrialRecord]:
    """Records from ``trials.jsonl`` in ``out`` (empty when there is none)."""
    path = Path(out) / "trials.jsonl"
    if not path.exists():
        return []
    return [TrialRecord.from_dict(json.loads(line)) for line in path.read_text().splitlines()
            if line.strip()]
