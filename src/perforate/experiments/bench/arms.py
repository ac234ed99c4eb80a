"""The arms of a quality experiment and the protocol that runs them (see BENCHMARKS.md).

- ``baseline``: the plain model at ``width``, early stopping.
- ``gd`` / ``pb``: the same width with dendrites grown in that mode.
- ``compressed``: a narrower model (``compressed_width``, default ``width // 4``) with dendrites
  grown in ``compressed_mode``.
- ``control``: a plain model whose width gives the parameter count of the final compressed
  model (``width_for_params``), trained for exactly the epochs the compressed run used, with
  the optimizer restarted at the epochs where the compressed run restructured.
- ``pruned``: the trained baseline, globally L1-magnitude-pruned (``torch.nn.utils.prune``) over
  every Linear/Conv weight until its non-zero parameters (weights and biases) equal the
  compressed model's parameter count, then fine-tuned with early stopping.

:func:`run_protocol` runs every (fraction, seed, arm) and saves each result the moment it is
finished, so a restarted run skips what is done.
"""
from __future__ import annotations

import copy
import dataclasses
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn
from torch.nn.utils import prune

import perforate as pf
from perforate.errors import ExperimentError
from perforate.experiments.harness import results as res
from perforate.experiments.data.datasets import DatasetSplits, load_dataset
from perforate.experiments.data.models import build_model, width_for_params
from perforate.experiments.harness.protocol import ExperimentProtocol
from perforate.experiments.harness.settings import RunSettings, check_stopping, positive_int
from perforate.experiments.harness.train import TrainResult, count_nonzero, train_model
from perforate.files import write_json
from perforate.measure import latency

__all__ = ["ARMS", "DENDRITIC_ARMS", "Protocol", "ProtocolHooks", "RunSpec", "check_protocol",
           "plan_runs", "prune_to", "run_protocol"]

ARMS = ("baseline", "gd", "pb", "compressed", "control", "pruned", "reference")
DENDRITIC_ARMS = ("gd", "pb", "compressed")
_NEEDS = {"control": ("compressed",), "pruned": ("baseline", "compressed")}


@dataclass(frozen=True, kw_only=True)
class Protocol(ExperimentProtocol):
    """Everything that defines an experiment. ``key()`` holds the fields that change numbers.

    The data, model and training settings are checked as :class:`RunSettings` (the model's
    ``width``, ``monitor`` and ``device`` are the bench's own); the rest says which arms run, on
    which seeds and data fractions. ``stopping``: under either rule, the control trains as many
    epochs as its compressed run, and the pruned arm's fine-tuning stops early.
    """

    FILE_ORDER = ("dataset", "model", "width", "max_epochs", "lr", "batch_size", "weight_decay",
                  "monitor", "device", "arms", "seeds", "fractions", "fraction_arms", "patience",
                  "stopping", "finetune_epochs", "compressed_width", "compressed_mode", "config",
                  "latency_repeats", "run_outputs")
    KEY_OMITS = ("arms", "seeds", "fractions", "fraction_arms", "latency_repeats", "device",
                 "run_outputs")

    width: int = 100
    monitor: str = "score"
    """What stopping, growth and the kept checkpoint follow (see :class:`RunSettings`)."""
    device: str = "cpu"
    arms: list[str] = field(default_factory=lambda: [a for a in ARMS if a != "reference"])
    """The arms to run; ``"reference"`` (perforatedai, when installed) only when asked for."""
    fractions: list[float] = field(default_factory=lambda: [1.0])
    fraction_arms: list[str] | None = None
    """Arms run at fractions below 1 (default: all of ``arms``)."""
    finetune_epochs: int | None = None
    """Epoch budget of the pruned arm's fine-tuning (default ``max_epochs``), early stopped."""
    compressed_width: int | None = None
    compressed_mode: str = "gd"
    latency_repeats: int = 20
    run_outputs: bool = True

    def validate(self) -> None:
        """Raise ExperimentError naming the first bad setting."""
        self.run_settings().check()
        if not self.arms:
            raise ExperimentError(f"no arms given; choose from: {', '.join(ARMS)}")
        for arm in [*self.arms, *(self.fraction_arms or [])]:
            if arm not in ARMS:
                raise ExperimentError(f"unknown arm {arm!r}; choose from: {', '.join(ARMS)}")
        for name in ("patience", "latency_repeats"):
            positive_int(name, getattr(self, name))
        for name in ("compressed_width", "finetune_epochs"):
            if getattr(self, name) is not None:
                positive_int(name, getattr(self, name))
        if not self.seeds or any(isinstance(s, bool) or not isinstance(s, int) or s < 0
                                 for s in self.seeds):
            raise ExperimentError(f"seeds must be non-negative integers; got {self.seeds!r}")
        if not self.fractions or any(not 0 < f <= 1 for f in self.fractions):
            raise ExperimentError(f"fractions must lie in (0, 1], e.g. 0.1,0.25,0.5,1; "
                                  f"got {self.fractions!r}")
        check_stopping(self.stopping)
        if self.compressed_mode not in ("gd", "pb"):
            raise ExperimentError(f"compressed_mode must be 'gd' or 'pb'; got {self.compressed_mode!r}")
        self.dendritic_config(0)  # a bad override raises ConfigError here, before any training

    @property
    def narrow_width(self) -> int:
        return self.compressed_width or max(1, self.width // 4)

    def dendritic_config(self, seed: int) -> pf.Config:
        # checkpoint_every=0: a bench run restarts an unfinished arm from scratch, so the
        # per-epoch resume state would only cost time.
        base = {"checkpoint_every": 0, **self.config, "patience": self.patience, "seed": seed,
                "max_epochs": self.max_epochs if self.stopping == "budget" else 0}
        return pf.Config.from_dict(base)

    def arms_at(self, fraction: float) -> list[str]:
        """The arms to run at ``fraction``, with the arms they need added, in running order."""
        wanted = set(self.arms if fraction == 1.0 or self.fraction_arms is None else self.fraction_arms)
        for arm in list(wanted):
            wanted.update(_NEEDS.get(arm, ()))
        return [arm for arm in ARMS if arm in wanted]

    def run_settings(self) -> RunSettings:
        """The data, model and training settings every run of this protocol shares."""
        return RunSettings(**{f.name: getattr(self, f.name) for f in dataclasses.fields(RunSettings)})

    def key(self) -> dict[str, Any]:
        """The settings two runs must share for their results to be pooled."""
        d = super().key()
        d["compressed_width"] = self.narrow_width
        d["finetune_epochs"] = self.finetune_epochs or self.max_epochs
        return d


@dataclass(frozen=True)
class RunSpec:
    """One (arm, seed, fraction) of a protocol."""

    arm: str
    seed: int
    fraction: float

    @property
    def run_id(self) -> str:
        """Its folder and key in results.json."""
        return f"{self.arm}-f{self.fraction:g}-s{self.seed}"

    @property
    def label(self) -> str:
        """Its name for people: "gd, seed 0" or "gd, seed 0, 25% of the data"."""
        data = "" if self.fraction == 1.0 else f", {self.fraction:.0%} of the data"
        return f"{self.arm}, seed {self.seed}{data}"


def plan_runs(protocol: Protocol) -> list[RunSpec]:
    """Every run in execution order: full data first, then seed by seed, arms in dependency order."""
    # full data always runs: it is the reference of the data-efficiency experiment
    fractions = sorted(set(protocol.fractions) | {1.0}, reverse=True)
    return [RunSpec(arm, seed, fraction)
            for fraction in fractions for seed in protocol.seeds
            for arm in protocol.arms_at(fraction)]


# ---------------------------------------------------------------------------- pruning
def _prunable(model: nn.Module) -> list[tuple[nn.Module, str]]:
    return [(m, "weight") for m in model.modules()
            if isinstance(m, (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d))]


def prune_to(model: nn.Module, target_nonzero: int) -> dict[str, int]:
    """Globally L1-prune ``model``'s Linear/Conv weights (in place, masks kept) so that its
    non-zero parameters, biases included, equal ``target_nonzero`` (or as near as it can).

    Returns the dense count, the number of weights pruned and the target.
    """
    pairs = _prunable(model)
    if not pairs:
        raise ExperimentError("the pruned arm needs a model with Linear or Conv layers")
    weights = sum(m.weight.numel() for m, _ in pairs)
    dense = pf.count_parameters(model)
    amount = max(0, min(weights, dense - target_nonzero))
    if amount:
        prune.global_unstructured(pairs, pruning_method=prune.L1Unstructured, amount=amount)
    return {"dense_params": dense, "pruned_weights": amount, "target_nonzero": target_nonzero}


def _bake_pruning(model: nn.Module) -> None:
    for module, name in _prunable(model):
        if prune.is_pruned(module) and hasattr(module, name + "_orig"):
            prune.remove(module, name)


# ---------------------------------------------------------------------------- hooks
@dataclass
class ProtocolHooks:
    """Callbacks a front end (the CLI's progress display) receives while a protocol runs."""

    on_run_start: Callable[[RunSpec, int], None] | None = None
    """(run, epoch budget)"""
    on_epoch: Callable[[RunSpec, int, float], None] | None = None
    """(run, epoch, validation score)"""
    on_run_end: Callable[[RunSpec, dict], None] | None = None
    """(run, its record)"""
    on_skip: Callable[[RunSpec, dict], None] | None = None
    """(run, its saved record): already finished in the output folder"""
    on_discard: Callable[[RunSpec], None] | None = None
    """(run): an earlier, interrupted attempt left a folder; it is cleared and the run restarts"""


# ---------------------------------------------------------------------------- running
class _Runner:
    def __init__(self, protocol: Protocol, out: Path, hooks: ProtocolHooks) -> None:
        self.p = protocol
        self.out = out
        self.hooks = hooks
        self.baselines: dict[str, nn.Module] = {}  # run_id -> trained baseline, this process

    def data(self, spec: RunSpec) -> DatasetSplits:
        return load_dataset(self.p.dataset, seed=spec.seed, train_fraction=spec.fraction)

    def run(self, spec: RunSpec, done: dict[str, dict]) -> dict:
        data = self.data(spec)
        folder = self._fresh_folder(spec)
        dep = lambda arm: done[RunSpec(arm, spec.seed, spec.fraction).run_id]  # noqa: E731
        width, budget, extra = self._size(spec, data, dep)
        if self.hooks.on_run_start:
            self.hooks.on_run_start(spec, budget)
        result = self._train(spec, data, width, budget, folder, dep, extra)
        record = self.record(spec, width, result, data, extra)
        if result.model is not None:  # the reference arm's model stays in its own files
            pf.save(result.model, folder / "model.safetensors")
        write_json(folder / "record.json", {**record, "history": result.history})
        if spec.arm == "baseline":  # the pruned arm starts from it
            self.baselines[spec.run_id] = result.model
        return record

    def _fresh_folder(self, spec: RunSpec) -> Path:
        """The run's folder, emptied: an interrupted run starts again from scratch."""
        folder = self.out / "runs" / spec.run_id
        if folder.exists():
            if self.hooks.on_discard:
                self.hooks.on_discard(spec)
            shutil.rmtree(folder)
        folder.mkdir(parents=True)
        return folder

    def _size(self, spec: RunSpec, data: DatasetSplits,
              dep: Callable[[str], dict]) -> tuple[int, int, dict[str, Any]]:
        """(width, epoch budget, extra record fields) of a run: the control matches the
        compressed run's parameters and epochs, the pruned arm fine-tunes the baseline's width."""
        p = self.p
        if spec.arm == "control":
            comp = dep("compressed")
            return (width_for_params(p.model, data, comp["params"]), comp["epochs"],
                    {"target_params": comp["params"]})
        if spec.arm == "pruned":
            return p.width, p.finetune_epochs or p.max_epochs, {}
        return (p.narrow_width if spec.arm == "compressed" else p.width), p.max_epochs, {}

    def _train(self, spec: RunSpec, data: DatasetSplits, width: int, budget: int, folder: Path,
               dep: Callable[[str], dict], extra: dict[str, Any]) -> TrainResult:
        """Train one run of ``spec.arm``; arm-specific facts go into ``extra``."""
        p = self.p
        common = dict(lr=p.lr, batch_size=p.batch_size, weight_decay=p.weight_decay,
                      seed=spec.seed, device=p.device, monitor=p.monitor)
        callback = None
        if self.hooks.on_epoch:
            callback = lambda epoch, score: self.hooks.on_epoch(spec, epoch, score)  # noqa: E731
        if spec.arm == "baseline":
            return train_model(data, p.model, width, max_epochs=budget,
                               config=p.dendritic_config(spec.seed), epoch_callback=callback,
                               early_stopping=p.stopping == "patience", **common)
        if spec.arm == "reference":
            from perforate.experiments.harness.reference import train_reference

            return train_reference(p.dataset, p.model, width, seed=spec.seed, max_epochs=budget,
                                   lr=p.lr, batch_size=p.batch_size, weight_decay=p.weight_decay,
                                   train_fraction=spec.fraction, folder=folder)
        if spec.arm in DENDRITIC_ARMS:
            extra["mode"] = mode = p.compressed_mode if spec.arm == "compressed" else spec.arm
            return train_model(data, p.model, width, mode=mode, max_epochs=budget,
                               config=p.dendritic_config(spec.seed),
                               out_dir=folder if p.run_outputs else None,
                               epoch_callback=callback, name=f"{spec.label}, width {width}",
                               **common)
        if spec.arm == "control":
            return train_model(data, p.model, width, max_epochs=budget, early_stopping=False,
                               restart_epochs=dep("compressed")["restart_epochs"],
                               epoch_callback=callback, **common)
        return self._prune_and_finetune(spec, data, width, budget, dep, extra, callback, common)

    def _prune_and_finetune(self, spec: RunSpec, data: DatasetSplits, width: int, budget: int,
                            dep: Callable[[str], dict], extra: dict[str, Any],
                            callback: Callable[[int, float], None] | None,
                            common: dict[str, Any]) -> TrainResult:
        """The pruned arm: the baseline magnitude-pruned to the compressed run's parameter
        count, then fine-tuned (what ``prune_to`` reports goes into ``extra``)."""
        p = self.p
        base = self.baseline_model(spec, data)
        extra.update(prune_to(base, dep("compressed")["params"]))
        result = train_model(data, p.model, width, model=base, max_epochs=budget,
                             config=p.dendritic_config(spec.seed), epoch_callback=callback,
                             **common)
        _bake_pruning(result.model)
        result.nonzero_params = count_nonzero(result.model)
        return result

    def baseline_model(self, spec: RunSpec, data: DatasetSplits) -> nn.Module:
        run_id = RunSpec("baseline", spec.seed, spec.fraction).run_id
        model = self.baselines.get(run_id)
        if model is not None:
            return copy.deepcopy(model)
        path = self.out / "runs" / run_id / "model.safetensors"
        if not path.exists():
            raise ExperimentError(f"the pruned arm needs the trained baseline model {path}, which "
                                  "is missing; delete the baseline's entry from results.json "
                                  "or use a fresh --out folder")
        return pf.load(path, build_model(self.p.model, data, self.p.width, seed=spec.seed))

    def record(self, spec: RunSpec, width: int, result: TrainResult, data: DatasetSplits,
               extra: dict[str, Any]) -> dict[str, Any]:
        row = result.to_dict()
        row.pop("history")
        lat = self.latencies(result.model, data) if result.model is not None else {}
        return {"run_id": spec.run_id, "arm": spec.arm, "seed": spec.seed,
                "fraction": spec.fraction, "task": data.task, "width": width, **row, **lat,
                "extra": extra}

    def latencies(self, model: nn.Module, data: DatasetSplits) -> dict[str, float]:
        exported = pf.export(model).eval()
        x = data.x_test.to(self.p.device)
        out = {}
        for batch in (1, 256):
            example = x[torch.arange(batch) % len(x)]
            out[f"latency_b{batch}_ms"] = latency(exported, example,
                                                  repeats=self.p.latency_repeats)["median"] * 1e3
        return out


def check_protocol(protocol: Protocol, out: str | Path, command: str = "") -> tuple[Path, dict]:
    """Fail early (ExperimentError) on a model that cannot take the dataset, an unwritable
    folder, or a folder holding another protocol's results; returns the folder and the results
    document to extend."""
    data = load_dataset(protocol.dataset, seed=protocol.seeds[0])
    build_model(protocol.model, data, 1)
    out = res.prepare_out_dir(out)
    return out, res.open_results(out, protocol, command)


def run_protocol(protocol: Protocol, out: str | Path, hooks: ProtocolHooks | None = None,
                 command: str = "") -> dict[str, Any]:
    """Run every arm of ``protocol``, saving results in ``out``; returns the results document.

    ``out/results.json`` is rewritten after every finished run. Runs already recorded there are
    skipped; an unfinished run's folder is cleared and the run starts again. A folder holding
    results of a different protocol (other dataset, width, budget...) is refused.
    """
    hooks = hooks or ProtocolHooks()
    out, doc = check_protocol(protocol, out, command)
    done = {r["run_id"]: r for r in doc["runs"]}
    runner = _Runner(protocol, out, hooks)
    for spec in plan_runs(protocol):
        if spec.run_id in done:
            if hooks.on_skip:
                hooks.on_skip(spec, done[spec.run_id])
            continue
        record = runner.run(spec, done)
        done[spec.run_id] = record
        doc["runs"].append(record)
        res.save_results(out, doc)
        if hooks.on_run_end:
            hooks.on_run_end(spec, record)
    return res.save_results(out, doc)
