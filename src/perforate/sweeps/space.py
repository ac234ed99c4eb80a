"""Sweep configuration: a search space in the shape of a W&B sweep config, read into dataclasses.

A sweep file (YAML, TOML or JSON) looks like::

    name: mnist1d-mlp
    method: bayes                 # bayes (TPE) | random | grid
    metric: {name: val_score, goal: maximize}   # or improvement (dendritic - baseline)
    experiment: {dataset: mnist1d, model: mlp, width: 32, max_epochs: 30, seed: 0}
    early_terminate: {type: auto, min_iter: 3, eta: 3, startup_trials: 5}
    parameters:
      mode: {values: [gd, pb]}
      patience: {min: 2, max: 8}                       # ints -> int_uniform
      lr: {min: 1.0e-4, max: 1.0e-2, distribution: log_uniform_values}
      batch_size: {value: 64}

Parameters are of two kinds. *Dendrite* hyperparameters are :class:`perforate.Config` fields
(``mode``, ``patience``, ``max_dendrites``...) plus ``width`` (alias ``compressed_width``), the
width of the model dendrites are grown on. *Model* hyperparameters (``lr``, ``batch_size``,
``weight_decay``) are shared by a trial's dendritic run and its baseline; the baseline also uses
the trial's width, so each trial compares "with dendrites" and "without" on the same model.
"""
from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from ..config import RENAMED_FIELDS, Config
from ..errors import ConfigError, ExperimentError
from ..experiments.harness.settings import RunSettings, finite_number
from ..files import read_settings

METHODS = {"bayes": "bayes", "tpe": "bayes", "random": "random", "grid": "grid"}
METRICS = ("val_score", "improvement")
GOALS = ("maximize", "minimize")
DISTRIBUTIONS = (
    "constant", "categorical", "int_uniform", "uniform", "log_uniform_values",
    "log_uniform", "q_uniform", "q_log_uniform_values",
)
MODEL_PARAMETERS = {"lr": float, "batch_size": int, "weight_decay": float}
WIDTH_ALIASES = {"compressed_width": "width"}
# Config fields that steer wrapping, outputs or seeding rather than growth: not tunable here.
_UNTUNABLE_CONFIG = {"include", "exclude", "neuron_axis", "seed", "maximize",
                     "checkpoint_best", "checkpoint_every", "plots"}
DENDRITE_PARAMETERS = tuple(
    [f.name for f in fields(Config) if f.name not in _UNTUNABLE_CONFIG] + ["width"]
)
_PARAM_KEYS = {"value", "values", "min", "max", "distribution", "q"}


@dataclass(frozen=True)
class Parameter:
    """One entry of ``parameters``: a name and a distribution over its values."""

    name: str
    distribution: str
    value: Any = None
    values: tuple[Any, ...] = ()
    min: float | None = None
    max: float | None = None
    q: float | None = None

    @property
    def kind(self) -> str:
        """"dendrite" or "model"."""
        return "model" if self.name in MODEL_PARAMETERS else "dendrite"

    @property
    def is_constant(self) -> bool:
        return self.distribution == "constant" or (
            self.distribution == "categorical" and len(self.values) == 1)

    @property
    def log(self) -> bool:
        return self.distribution in ("log_uniform_values", "log_uniform", "q_log_uniform_values")

    @property
    def is_int(self) -> bool:
        """True when the hyperparameter takes integer values (width, batch_size, patience...)."""
        return _value_type(self.name) is int

    def cast(self, value: Any) -> Any:
        """A sampled value in the hyperparameter's own type (q_* samples are rounded to q)."""
        if self.distribution.startswith("q_") and self.q is not None:
            lo, hi = self.bounds()
            value = round(lo + round((value - lo) / self.q) * self.q, 12)
            value = min(max(value, lo), hi)
        if self.is_int and isinstance(value, float):
            return int(round(value))
        is_int = isinstance(value, int) and not isinstance(value, bool)
        if _value_type(self.name) is float and is_int:
            return float(value)
        return value

    def bounds(self) -> tuple[float, float]:
        """Bounds in value space (``log_uniform`` stores exponents, as in W&B)."""
        assert self.min is not None and self.max is not None
        if self.distribution == "log_uniform":
            return math.exp(self.min), math.exp(self.max)
        return self.min, self.max

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"distribution": self.distribution}
        if self.distribution == "constant":
            out["value"] = self.value
        elif self.distribution == "categorical":
            out["values"] = list(self.values)
        else:
            out.update(min=self.min, max=self.max)
            if self.q is not None:
                out["q"] = self.q
        return out


@dataclass(frozen=True)
class Experiment(RunSettings):
    """Fixed settings of every trial. ``width``/``lr``/... are defaults a parameter overrides."""

    width: int = 32
    max_epochs: int = 30
    monitor: str = "score"
    """What growth, early stopping and the kept checkpoint follow: validation "score" or
    "loss" (finer on small validation splits). Scores are reported either way."""
    device: str = "auto"
    """"auto" (CUDA when available), "cpu" or "cuda[:N]"."""
    seed: int = 0
    train_fraction: float = 1.0

    def check(self, where: str = "experiment.") -> None:
        """Raise ExperimentError naming the first bad setting as ``experiment.<name>``."""
        super().check(where)
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0:
            raise ExperimentError(f"{where}seed must be an integer >= 0; got {self.seed!r}")
        finite_number(where + "train_fraction", self.train_fraction, minimum=0.0, strict=True)
        if self.train_fraction > 1.0:
            raise ExperimentError(f"{where}train_fraction must be in (0, 1]; "
                                  f"got {self.train_fraction!r}")
        device = self.device
        if not isinstance(device, str) or not (device in ("auto", "cpu") or device.startswith("cuda")):
            raise ExperimentError(f"{where}device must be 'auto', 'cpu' or 'cuda[:N]'; got {device!r}")


@dataclass(frozen=True)
class EarlyTerminate:
    """Pruning of hopeless trials: Optuna's MedianPruner or Ray Tune's ASHA.

    ``type``: "auto" (the backend's pruner) or "none". ``min_iter``: epochs every trial runs
    before it may be stopped. ``eta``: ASHA's reduction factor. ``startup_trials``: trials the
    median pruner lets finish before pruning anything.
    """

    type: str = "auto"
    min_iter: int = 3
    eta: int = 3
    startup_trials: int = 5

    @property
    def enabled(self) -> bool:
        return self.type != "none"


@dataclass(frozen=True)
class SweepSpace:
    """A whole sweep: search method, metric, fixed experiment and parameter distributions."""

    name: str
    method: str
    metric: str
    goal: str
    experiment: Experiment
    parameters: tuple[Parameter, ...]
    early_terminate: EarlyTerminate = field(default_factory=EarlyTerminate)
    description: str = ""

    @property
    def maximize(self) -> bool:
        return self.goal == "maximize"

    @property
    def searched(self) -> tuple[Parameter, ...]:
        """Parameters that vary between trials."""
        return tuple(p for p in self.parameters if not p.is_constant)

    def parameter(self, name: str) -> Parameter:
        for p in self.parameters:
            if p.name == name:
                return p
        raise KeyError(name)

    def constants(self) -> dict[str, Any]:
        return {p.name: (p.value if p.distribution == "constant" else p.values[0])
                for p in self.parameters if p.is_constant}

    def resolve(self, sampled: dict[str, Any]) -> dict[str, Any]:
        """Full hyperparameters of a trial: experiment defaults, then constants, then samples."""
        e = self.experiment
        hyper: dict[str, Any] = {"width": e.width, "lr": e.lr, "batch_size": e.batch_size,
                                 "weight_decay": e.weight_decay}
        hyper.update(self.constants())
        hyper.update(sampled)
        return hyper

    def identity(self) -> dict[str, Any]:
        """What a stored sweep must match to be resumed (everything but the description)."""
        data = json.loads(json.dumps(self.to_dict()))
        data.pop("description")
        return data

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name, "description": self.description, "method": self.method,
            "metric": {"name": self.metric, "goal": self.goal},
            "experiment": asdict(self.experiment),
            "early_terminate": asdict(self.early_terminate),
            "parameters": {p.name: p.to_dict() for p in self.parameters},
        }


# ---------------------------------------------------------------- reading


def load_space(path: str | Path) -> SweepSpace:
    """Read a sweep file (.yaml/.yml, .toml or .json). Bad entries raise ConfigError."""
    return space_from_dict(read_settings(path, "sweep config"), default_name=Path(path).stem)


def space_from_dict(data: Any, default_name: str = "sweep") -> SweepSpace:
    """Build a :class:`SweepSpace` from a mapping shaped like a W&B sweep config."""
    if not isinstance(data, dict):
        raise ConfigError("a sweep config must be a mapping with 'method', 'metric', "
                          f"'experiment' and 'parameters'; got {type(data).__name__}")
    known = {"name", "method", "metric", "experiment", "parameters", "early_terminate",
             "description", "program", "project"}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ConfigError(f"unknown sweep config key(s) {unknown}; known keys are {sorted(known)}")

    name = str(data.get("name", default_name))
    method_raw = data.get("method", "bayes")
    if method_raw not in METHODS:
        raise ConfigError(f"method must be one of {sorted(METHODS)}; got {method_raw!r}")
    method = METHODS[method_raw]

    metric = data.get("metric", {"name": "val_score", "goal": "maximize"})
    if not isinstance(metric, dict) or set(metric) - {"name", "goal"}:
        raise ConfigError("metric must be a mapping {name: val_score|improvement, "
                          f"goal: maximize|minimize}}; got {metric!r}")
    metric_name = metric.get("name", "val_score")
    goal = metric.get("goal", "maximize")
    if metric_name not in METRICS:
        raise ConfigError(f"metric.name must be one of {list(METRICS)} (val_score: the "
                          "dendritic run's best validation score; improvement: that minus the "
                          f"baseline's); got {metric_name!r}")
    if goal not in GOALS:
        raise ConfigError(f"metric.goal must be one of {list(GOALS)}; got {goal!r}")

    experiment = _experiment(data.get("experiment", {}))
    early = _early_terminate(data.get("early_terminate", {}))

    params = data.get("parameters")
    if not isinstance(params, dict) or not params:
        raise ConfigError("parameters must be a non-empty mapping of hyperparameter names to "
                          "{value|values|min/max[, distribution]} entries")
    parameters = tuple(_parameter(k, v) for k, v in params.items())
    names = [p.name for p in parameters]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ConfigError(f"parameters {duplicates} are given twice (compressed_width is an "
                          "alias of width)")
    if method == "grid":
        for p in parameters:
            if p.distribution not in ("constant", "categorical", "int_uniform"):
                raise ConfigError(f"parameters.{p.name}: method 'grid' needs value, values or "
                                  f"integer min/max; got distribution {p.distribution!r}")
    description = data.get("description", "")
    if not isinstance(description, str):
        raise ConfigError(f"description must be text; got {description!r}")
    return SweepSpace(name, method, metric_name, goal, experiment, parameters, early,
                      description.strip())


def _experiment(raw: Any) -> Experiment:
    if not isinstance(raw, dict):
        raise ConfigError(f"experiment must be a mapping of fixed settings; got {raw!r}")
    known = {f.name for f in fields(Experiment)}
    unknown = sorted(set(raw) - known)
    if unknown:
        raise ConfigError(f"unknown experiment setting(s) {unknown}; known settings are "
                          f"{sorted(known)}")
    values = dict(raw)
    for key in ("lr", "weight_decay", "train_fraction"):  # YAML writes 1 for 1.0
        if isinstance(values.get(key), int) and not isinstance(values[key], bool):
            values[key] = float(values[key])
    experiment = Experiment(**values)
    try:
        experiment.check()
    except ExperimentError as exc:  # a sweep's experiment is part of its config file
        raise ConfigError(str(exc)) from exc
    return experiment


def _early_terminate(raw: Any) -> EarlyTerminate:
    if raw is None:
        return EarlyTerminate(type="none")
    if not isinstance(raw, dict):
        raise ConfigError(f"early_terminate must be a mapping {{type, min_iter, eta, "
                          f"startup_trials}}; got {raw!r}")
    unknown = sorted(set(raw) - {"type", "min_iter", "eta", "startup_trials"})
    if unknown:
        raise ConfigError(f"unknown early_terminate key(s) {unknown}; known keys are "
                          "['eta', 'min_iter', 'startup_trials', 'type']")
    out = EarlyTerminate(**raw)
    if out.type not in ("auto", "none", "median", "asha", "hyperband"):
        raise ConfigError("early_terminate.type must be 'auto' (MedianPruner on Optuna, ASHA on "
                          f"Ray) or 'none'; got {out.type!r}")
    _check_int("early_terminate.min_iter", out.min_iter, 1)
    _check_int("early_terminate.eta", out.eta, 2)
    _check_int("early_terminate.startup_trials", out.startup_trials, 0)
    return out


def _parameter(raw_name: Any, raw: Any) -> Parameter:
    name = WIDTH_ALIASES.get(raw_name, raw_name)
    where = f"parameters.{raw_name}"
    if name not in DENDRITE_PARAMETERS and name not in MODEL_PARAMETERS and name not in RENAMED_FIELDS:
        raise ConfigError(
            f"{where}: unknown hyperparameter; dendrite hyperparameters are "
            f"{list(DENDRITE_PARAMETERS)} (+ alias compressed_width), model hyperparameters "
            f"are {list(MODEL_PARAMETERS)}")
    if not isinstance(raw, dict):
        raise ConfigError(f"{where} must be a mapping like {{values: [...]}} or "
                          f"{{min: ..., max: ...}}; got {raw!r}")
    unknown = sorted(set(raw) - _PARAM_KEYS)
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {unknown}; use value, values, min, max, "
                          "distribution (and q for q_* distributions)")
    dist = _distribution(raw, where)
    if dist == "constant":
        if "value" not in raw:
            raise ConfigError(f"{where}: distribution 'constant' needs 'value'")
        param = Parameter(name, dist, value=raw["value"])
        _check_value(param, raw["value"])
        return param
    if dist == "categorical":
        return _categorical(name, raw, where)
    return _ranged(name, dist, raw, where)


def _distribution(raw: dict[str, Any], where: str) -> str:
    """The entry's distribution: given, or inferred from value / values / integer min-max."""
    dist = raw.get("distribution")
    if dist is None:
        if "value" in raw:
            dist = "constant"
        elif "values" in raw:
            dist = "categorical"
        elif "min" in raw and "max" in raw:
            both_int = all(isinstance(raw[k], int) and not isinstance(raw[k], bool)
                           for k in ("min", "max"))
            dist = "int_uniform" if both_int else "uniform"
        else:
            raise ConfigError(f"{where}: give value, values, or min and max")
    if dist not in DISTRIBUTIONS:
        raise ConfigError(f"{where}: distribution must be one of {list(DISTRIBUTIONS)}; "
                          f"got {dist!r}")
    return dist


def _categorical(name: str, raw: dict[str, Any], where: str) -> Parameter:
    values = raw.get("values")
    if not isinstance(values, list) or not values:
        raise ConfigError(f"{where}: 'values' must be a non-empty list; got {values!r}")
    if any(isinstance(v, (list, dict)) for v in values):
        raise ConfigError(f"{where}: 'values' must hold scalars; got {values!r}")
    if len(set(map(repr, values))) != len(values):
        raise ConfigError(f"{where}: 'values' has duplicates: {values!r}")
    param = Parameter(name, "categorical", values=tuple(values))
    for v in values:
        _check_value(param, v)
    return param


def _ranged(name: str, dist: str, raw: dict[str, Any], where: str) -> Parameter:
    """A min/max distribution: bounds, step ``q`` and integer-ness checked against the name."""
    if "min" not in raw or "max" not in raw:
        raise ConfigError(f"{where}: distribution {dist!r} needs min and max")
    lo, hi = raw["min"], raw["max"]
    for key, v in (("min", lo), ("max", hi)):
        _check_number(f"{where}.{key}", v)
    if lo >= hi:
        raise ConfigError(f"{where}: min must be < max; got min={lo!r}, max={hi!r}")
    q = raw.get("q")
    if dist.startswith("q_"):
        if q is None:
            q = 1.0
        _check_number(f"{where}.q", q)
        if q <= 0:
            raise ConfigError(f"{where}.q must be > 0; got {q!r}")
    elif q is not None:
        raise ConfigError(f"{where}: 'q' only applies to q_uniform / q_log_uniform_values")
    both_int = all(isinstance(v, int) and not isinstance(v, bool) for v in (lo, hi))
    if dist == "int_uniform" and not both_int:
        raise ConfigError(f"{where}.min and max must be integers for int_uniform; got {lo!r}, {hi!r}")
    if dist in ("log_uniform_values", "q_log_uniform_values") and lo <= 0:
        raise ConfigError(f"{where}: {dist} needs min > 0 (values, not exponents); got {lo!r}")
    param = Parameter(name, dist, min=lo, max=hi, q=q)
    if _value_type(name) is int:
        if dist in ("uniform", "log_uniform"):
            raise ConfigError(f"{where}: {name} is an integer; use integer min/max (int_uniform "
                              f"or log_uniform_values) or values; got distribution {dist!r}")
        if dist == "log_uniform_values" and not both_int:
            raise ConfigError(f"{where}: {name} is an integer; min and max must be integers")
    for v in param.bounds():
        _check_value(param, int(round(v)) if _value_type(name) is int else float(v))
    return param


def _value_type(name: str) -> type | None:
    if name in MODEL_PARAMETERS:
        return MODEL_PARAMETERS[name]
    if name in ("width", "candidate_steps"):  # candidate_steps: an int, or "auto" (its default)
        return int
    default = Config().to_dict()[name]
    return type(default)


def _check_value(param: Parameter, value: Any) -> None:
    """Reject a value the trial could not use, naming the parameter."""
    where = f"parameters.{param.name}"
    name = param.name
    if name in ("width", "batch_size"):
        _check_int(where, value, 1)
    elif name in ("lr", "weight_decay"):
        _check_number(where, value)
        if value < 0 or (name == "lr" and value == 0):
            raise ConfigError(f"{where} must be {'> 0' if name == 'lr' else '>= 0'}; got {value!r}")
    else:
        expected = _value_type(name)
        if expected is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        try:
            Config().replace(**{name: value})
        except ConfigError as exc:
            raise ConfigError(f"{where}: {exc}") from exc


def _check_int(where: str, value: Any, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ConfigError(f"{where} must be an integer >= {minimum}; got {value!r}")


def _check_number(where: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ConfigError(f"{where} must be a finite number; got {value!r}")


def split_hyperparameters(hyper: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """Split resolved hyperparameters into (pf.Config fields, model/training settings)."""
    config_fields = {f.name for f in fields(Config)} | set(RENAMED_FIELDS)  # old names too
    dendrite = {k: v for k, v in hyper.items() if k in config_fields}
    rest = {k: v for k, v in hyper.items() if k not in config_fields}
    return dendrite, rest
