"""The typed, validated configuration of dendritic optimization."""
from __future__ import annotations

import dataclasses
import json
import math
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from fnmatch import fnmatchcase
from functools import partial
from pathlib import Path
from typing import Any

from .activations import ACTIVATIONS
from .errors import ConfigError
from .files import read_settings, write_text
from .validation import check_fields, show

MODES = ("gd", "pb")
SCORE_MODES = ("max", "min")
CANDIDATE_TRAINING = ("cached", "online")
SNAPSHOT_PLACES = ("auto", "model", "cpu", "disk")
CHECKPOINT_POLICIES = ("events", "every_best")
TRIALS = ("rollback", "shadow")
INPUT_CHOICES = ("local", "random")
MAX_SEED = 2**32 - 1
MAX_CANDIDATES = 1024
CANDIDATE_FLAT_STEPS = 20
"""Cached pb fit, ``candidate_steps="auto"``: full-batch steps of flat layers..."""
CANDIDATE_FLAT_LR_SCALE = 5.0
"""... at this multiple of ``candidate_lr``."""
CANDIDATE_SLICED_STEPS = 100
"""Cached pb fit, ``candidate_steps="auto"``: steps of layers that step on slices of the epoch."""
MAX_INIT_SCALE = 1e3
"""New dendrite weights are ``init_scale`` times the layer's default bound: larger ones overflow
half-precision activations and saturate every dendrite activation."""
MAX_LR_SCALE = 1e6
RENAMED_FIELDS = {
    "min_correlation": "join_min_correlation",
    "correlation_floor": "warn_min_correlation",
    "correlation_improvement": "dendrite_improvement_threshold",
}
"""Old field name -> new. The old names still work: passed to ``Config(...)`` or ``replace``,
or set, with a DeprecationWarning; read, silently. Files keep the old keys
(:meth:`Config.to_dict` writes them, so a run saved by this version resumes on one that knows
only those) and :meth:`Config.from_dict` reads either, silently. ``maximize`` is the older
spelling of ``score_mode`` in the same way."""
RENAMED_VALUES = {
    "checkpoint_best": {"memory": "events", "disk": "every_best"},
}
"""Field -> {old value: new value}, handled as :data:`RENAMED_FIELDS`: an old value given to
``Config(...)`` or ``replace``, or set, warns and becomes the new one; files keep the old values
(:meth:`Config.to_dict` writes them) and :meth:`Config.from_dict` reads either, silently."""


@dataclass
class Config:
    """Everything that steers wrapping and growth. Bad values raise :class:`ConfigError`, when
    the config is built and when a field is set later (``cfg.mode = "pb"``); a
    :class:`~perforate.Grower` validates its config again when it starts.

    Scores are compared with ``improvement_threshold`` (relative to the best score) and
    ``improvement_threshold_abs`` (an absolute floor): a new score counts as an improvement
    only when it beats the best by more than both. Which way is better is ``score_mode``:
    ``"max"`` (accuracy, the default) or ``"min"`` (a loss), as in ``ReduceLROnPlateau`` and
    Lightning's ``EarlyStopping``; ``maximize`` is its older spelling as a bool (read it freely;
    passing or setting it warns).
    """

    mode: str = "gd"
    """"gd": dendrites train by backprop with everything else; "pb": Perforated
    Backpropagation, correlation-trained dendrites in their own phase."""
    patience: int = 20
    """Epochs without improvement of the smoothed validation score that make a plateau: the
    network grows there, or (no growth left, no ``max_epochs``) the run is done. Validation
    accuracy on a few hundred samples is noisy: at 10, MNIST-1D MLPs grew on false plateaus
    and ended ~1 point below the plain model given the same budget; at 20, level with it."""
    smoothing: int = 3
    """Plateaus, and whether a growth step paid, are judged on the mean of the last
    ``smoothing`` validation scores of the current architecture, not on one noisy epoch (1: the
    raw score). The model kept is still the best single epoch."""
    max_epochs: int = 0
    """The epoch budget, counting every ``step`` (pb dendrite phases too). Growth is planned
    inside it: no growth starts with fewer epochs left than a growth cycle needs to show it
    paid, a failed growth sends the best model back to training, and the run is done when the
    budget is spent (as a plain model trained for the budget). 0 (no budget): done at the first
    plateau where growth cannot go on (early stopping)."""
    overfit_gap: float = 0.3
    """Do not grow while the model over-fits: when the training score given to ``step``
    (``train_score=``, ``train_acc=`` or, for a loss, ``train_loss=``) beats the validation
    score by more than this share of the larger, ``|train - val| / max(|train|, |val|)``
    (smoothed). More capacity then fits the training set harder, and the training error that
    dendrites learn from is small. ``float("inf")``: never check."""
    train_rise: float = 0.02
    """Do not grow at a plateau while the model is still learning: when its smoothed training
    score (given to ``step`` as for ``overfit_gap``) improved by more than this share over the
    last ``patience`` epochs. Validation on a few hundred samples can stall for ``patience``
    epochs while a narrow model still climbs; growing there gave up that climb (digits CNN,
    width 2: -2.6 points on one seed). ``float("inf")``: never check."""
    growth_lr_scale: float = 0.3
    """Learning-rate multiplier of the neuron phase after a growth step (1: the user's rate).
    The grown model starts at the old model's optimum: a fresh optimizer at the full rate
    throws it out again. Measured on MNIST-1D MLPs (3 seeds, widths 8 and 16): 0.3 turned the
    paired gain over the plain model from -0.5..+0.1 into -0.1..+0.6 points for gd and pb
    (``results/ablation.md``); the plain model gets no such decay, so part of it is the decay.
    It applies to a growth forced with ``Grower.add_dendrites()`` too: a model grown while it
    is still learning loses from the cut (the char LSTM and GPT examples, grown mid-budget:
    0.2 bits per character worse at 0.3, level with the plain model at 1), so pass 1 there."""
    improvement_threshold: float = 1e-4
    improvement_threshold_abs: float = 0.0
    score_mode: str | None = None
    """"max" when a higher validation score is better (accuracy), "min" when lower is (a loss).
    Default "max"."""
    score_name: str = "validation score"
    """What the score is, e.g. "validation accuracy %" or "validation loss": the growth graph's
    axis and the log lines name it."""
    max_dendrites: int = 4
    """Most dendrites a layer grows. Kept at 4 for restricted-input dendrites
    (``dendrite_inputs``) too, although each costs only ``dendrite_inputs / fan_in`` of a dense
    one: growth adds one dendrite per layer per growth cycle (a plateau of ``patience`` epochs,
    then the trial), so the epoch budget, not this cap, is what binds; in the restricted
    frontier runs (``results/restricted.md``) no run reached it. Raise it with a budget that
    holds more cycles."""
    max_growth_retries: int = 0
    """Fresh re-tries of a growth step that did not pay, before training goes on from the model
    as it was when the growth began. Each try costs a growth cycle of the budget in which a
    plain model would keep training; with 1 retry, digits CNNs ended 0.3 points below the plain
    model (4 of 5 seeds)."""
    trial: str = "rollback"
    """What a growth trial is judged against (see :mod:`perforate.shadow`). "rollback": the best
    model from before the growth; a growth that did not pay goes back to the model as it was when
    it began, losing the epochs the plain model would have trained meanwhile (regret when that
    model was still learning). "shadow": the un-grown model trains on beside the grown one on the
    same batches (the loop calls ``grower.shadow_step`` after each step and passes
    ``shadow_score=`` to ``step``); the grown model is kept only if its smoothed score beats the
    shadow's over the same epochs, otherwise training continues from the shadow with its
    optimizer state: a failed growth costs a second model's compute during the trial, never
    accuracy."""
    dendrite_activation: str = "sigmoid"
    init_scale: float = 1.0
    """Scale of a new dendrite's weights relative to the layer's default initialisation."""
    include: list[str] = field(default_factory=lambda: ["*"])
    """Glob patterns of module names to wrap."""
    exclude: list[str] = field(default_factory=list)
    output_head: bool = False
    """Wrap the layer the model declares as its output head (``get_output_embeddings()`` of
    the model or of a model inside it: a Hugging Face language model's ``lm_head``, often
    tied to the input embeddings). False
    leaves it out wherever a model is wrapped (``pf.perforate``, the Trainer callback,
    ``load_checkpoint``): at a real vocabulary each dendrite there costs vocabulary x hidden
    parameters, and a wrapped tied head no longer saves with ``save_pretrained``."""
    neuron_axis: dict[str, int] = field(default_factory=dict)
    """Per-layer override of the output's neuron axis: {module-name glob: axis}."""
    dendrite_inputs: int | dict[str, int] = 0
    """Restricted-input dendrites: how many inputs each dendrite (each row of it: one per
    neuron) reads; 0 reads all (a dendrite is then a full copy of the layer's input weights).
    An int applies to every wrapped layer, a {module-name glob: count} mapping to the layers it
    matches (others read all). The inputs are the features of a Linear's last axis (a
    sequence's features, or positions of a flattened 1-D signal) or the input channels of an
    ungrouped convolution; attention projections are Linears and take it too. Recurrent, graph
    and block layers cannot (their dendrites are module copies): a count there raises
    :class:`pf.WrapError`. The masks are fixed at growth, saved with the model, and counted
    honestly by ``pf.count_parameters`` / ``pf.flops_per_sample``. See
    :mod:`perforate.connectivity`."""
    dendrite_input_choice: str = "local"
    """How a restricted dendrite's inputs are chosen: "local", a window of neighbouring inputs
    at a random start, or "random", a random subset; both drawn from ``seed``."""
    seed: int = 0
    """Seeds every new dendrite (a local generator; global RNG is untouched); 0 to 2**32 - 1."""
    snapshot_device: str = "auto"
    """Where the grower keeps its rollback snapshots (the best model, the model from before a
    growth, the grown model's best): "model" (its device), "cpu", "disk" (a temporary file
    each) or "auto": "cpu" for a model on an accelerator, "disk" for a CPU model whose state is
    64 MiB or more, "model" otherwise (:mod:`perforate.snapshots`)."""
    # --- pb only ---
    candidates: int = 1
    candidate_training: str = "cached"
    """"cached": one dendrite-phase epoch records each layer's detached input and neuron error;
    candidates then train on that cached epoch with full-batch steps and are scored by the
    covariance over the whole epoch at fixed weights (cascade-correlation). "online":
    candidates train by minibatch steps of the user's optimizer for up to
    ``dendrite_max_epochs`` epochs, scored by a running average of minibatch covariances."""
    candidate_steps: int | str = "auto"
    """Steps of cached candidate training (fewer when the objective stops rising). "auto": flat
    layers (one row per sample, e.g. stacked Linear layers; each step a pass over the cached
    epoch) take 20 full-batch steps at 5 x ``candidate_lr``, layers that step on slices of the
    epoch (``candidate_passes``) 100 steps at ``candidate_lr``. 20 steps at 0.05 reach about
    90 % of the correlation of 100 at 0.01 at a fifth of the cost, with the same accuracy after
    growth (docs/benchmarks.md). An int: that many steps at ``candidate_lr`` for every layer."""
    candidate_lr: float = 0.01
    """Adam learning rate of cached candidate training."""
    candidate_passes: float = 10.0
    """Cached training of layers whose step costs like the layer's own epoch (convolutions,
    Linear layers on sequences, declared blocks, kinds without a stacked input): each step
    takes the next slice of the cached epoch, so that the ``candidate_steps`` pass over it
    about this many times (0: every step on the whole epoch, ``candidate_steps`` passes). Flat
    Linear layers (one row per sample) always step on the whole epoch."""
    candidate_cache_mb: float = 512.0
    """Memory cap (MB) of a layer's cached epoch and its fit: what a cached batch costs at the
    fit's peak is counted (its inputs twice, its neuron error twice, and four error-sized
    tensors per candidate for the full-batch steps); batches past the cap are not cached (a
    random subset of the epoch, since batches come shuffled)."""
    join_min_correlation: float = 0.0
    """pb, the join gate: a layer whose chosen candidates' mean |correlation| with their
    neurons' error is below this gets no dendrite at the join (growth skips layers that cannot
    learn). Formerly ``min_correlation``."""
    dendrite_patience: int = 3
    dendrite_max_epochs: int = 20
    correlation_decay: float = 0.9
    """EMA decay of the per-batch correlation score during the dendrite phase."""
    candidate_lr_scale: float = 10.0
    """Learning-rate multiplier for candidates during a dendrite phase: their minibatch
    correlation gradients are noisy, and at the user's lr candidates reach about a third of
    the objective that full-batch training reaches (measured on two-spirals)."""
    dendrite_improvement_threshold: float = 0.01
    """pb dendrite phase: relative rise of the summed candidate score that resets
    ``dendrite_patience`` (the phase's ``improvement_threshold``). Formerly
    ``correlation_improvement``."""
    warn_min_correlation: float = 0.05
    """pb: layers whose best candidate correlation stays below this are reported as weak (a
    WARNING at the join; nothing else changes). Formerly ``correlation_floor``."""
    # --- outputs ---
    checkpoint_best: str = "events"
    """When best.pt is written (the best model is kept in memory either way): "events" at
    growth events and at the end; "every_best" also whenever the best score changes (a run
    killed between events leaves its latest best). Formerly "memory" and "disk"."""
    checkpoint_every: int = 1
    """Write the resume state every N epochs (0: never; the run then cannot be resumed); between
    growth events the writer takes it at most once a second (see :mod:`perforate.writer`)."""
    plots: bool = True
    """Draw growth.png in ``out_dir`` at growth events and at the end. False skips drawing (and
    importing matplotlib); history.csv holds the same numbers."""

    def __post_init__(self) -> None:
        self._set_direction(self.score_mode, self.__dict__.pop("_maximize_given", None))
        self.validate()
        object.__setattr__(self, "_built", True)

    def __setattr__(self, name: str, value: Any) -> None:
        """Set a field and validate the config; a rejected value leaves the config unchanged.

        ``maximize`` and the old field names (:data:`RENAMED_FIELDS`) set the setting they name.
        """
        if name == "maximize" or name in RENAMED_FIELDS:
            _warn_if_old(name, value)
            name = RENAMED_FIELDS.get(name, name)
        elif self.__dict__.get("_built") and _old_value(name, value):
            _warn_if_old(name, value)
            value = RENAMED_VALUES[name][value]
        elif not self.__dict__.get("_built") or name not in self.__dataclass_fields__:
            object.__setattr__(self, name, value)
            return
        old = {key: self.__dict__[key] for key in {name, "score_mode"} - {"maximize"}}
        try:
            if name == "score_mode":
                if value is None:  # "not given" means something only while the config is built
                    raise ConfigError("score_mode must be 'max' or 'min'; got None")
                self._set_direction(score_mode=value)
            elif name == "maximize":
                if value is None:
                    raise ConfigError("maximize must be true or false; got None")
                self._set_direction(maximize=value)
            else:
                object.__setattr__(self, name, value)
            self.validate()
        except ConfigError:
            for key, kept in old.items():
                object.__setattr__(self, key, kept)
            raise

    @property
    def maximize(self) -> bool:
        """``score_mode == "max"`` (the older spelling of ``score_mode``; setting it warns)."""
        return self.score_mode == "max"

    # the old names of renamed fields, read (silently) and set (with a warning) as the new ones
    min_correlation = property(lambda self: self.join_min_correlation)
    correlation_floor = property(lambda self: self.warn_min_correlation)
    correlation_improvement = property(lambda self: self.dendrite_improvement_threshold)

    def _set_direction(self, score_mode: Any = None, maximize: Any = None) -> None:
        if score_mode is not None:
            _choice("score_mode", score_mode, SCORE_MODES)
        if maximize is not None and not isinstance(maximize, bool):
            raise ConfigError(f"maximize must be true or false; got {show(maximize)}")
        if score_mode is not None and maximize is not None and (score_mode == "max") != maximize:
            raise ConfigError(f"score_mode={score_mode!r} and maximize={maximize!r} disagree; give "
                              "one of them (score_mode='max' for accuracy, 'min' for a loss)")
        if score_mode is None:
            score_mode = "min" if maximize is False else "max"
        object.__setattr__(self, "score_mode", score_mode)

    # ------------------------------------------------------------------ validation
    def validate(self) -> None:
        """Raise ConfigError naming the first bad field.

        Fields are checked against their bounds, then every field against its annotation
        (:func:`perforate.validation.check_fields`).
        """
        for name in ("include", "exclude"):
            value = getattr(self, name)
            if isinstance(value, str):
                value = [value]
            if not isinstance(value, (list, tuple)) or not all(isinstance(p, str) for p in value):
                raise ConfigError(f"{name} must be a list of module-name glob patterns "
                                  f"like ['encoder.*']; got {show(value)}")
            object.__setattr__(self, name, list(value))
        for name, check in _BOUNDS:
            check(name, getattr(self, name))
        check_fields(self, ConfigError)  # every field, those without bounds above too

    def inputs_for(self, name: str) -> int:
        """The inputs each dendrite of layer ``name`` reads (0: all), from ``dendrite_inputs``."""
        if not isinstance(self.dendrite_inputs, dict):
            return self.dendrite_inputs
        for pattern, count in self.dendrite_inputs.items():
            if fnmatchcase(name, pattern):
                return count
        return 0

    def better(self, score: float, reference: float | None) -> bool:
        """True when ``score`` improves on ``reference`` by more than both thresholds.

        Any score beats an infinite reference in the wrong direction (a first score of ``-inf``
        when maximising, or a diverged loss of ``+inf`` when minimising).
        """
        if reference is None:
            return True
        margin = 0.0 if math.isinf(reference) else \
            max(self.improvement_threshold * abs(reference), self.improvement_threshold_abs)
        return score > reference + margin if self.maximize else score < reference - margin

    # ------------------------------------------------------------------ files
    def to_dict(self) -> dict[str, Any]:
        """The fields as plain values, under the keys and values files have always used (the old
        names of :data:`RENAMED_FIELDS`, the old values of :data:`RENAMED_VALUES`, and
        ``maximize`` beside ``score_mode``)."""
        out: dict[str, Any] = {}
        for key, value in dataclasses.asdict(self).items():
            if key in _FILE_VALUES:
                value = _FILE_VALUES[key].get(value, value)
            out[_FILE_KEYS.get(key, key)] = value
            if key == "score_mode":
                out["maximize"] = self.maximize
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Config:
        """Build from a mapping (a file's keys, old or new names); unknown keys raise
        ConfigError listing the known ones."""
        if not isinstance(data, dict):
            raise ConfigError(f"a config must be a mapping of field names to values; got {type(data).__name__}")
        return _build(cls, data)

    def replace(self, **changes: Any) -> Config:
        """A copy with some fields changed (validated); ``maximize`` changes ``score_mode``."""
        for name, value in changes.items():
            _warn_if_old(name, value)
        data = dataclasses.asdict(self)
        if "maximize" in changes and "score_mode" not in changes:
            data.pop("score_mode")
        for old, new in RENAMED_FIELDS.items():
            if old in changes and new not in changes:
                data.pop(new)
        return _build(type(self), {**data, **changes})

    @classmethod
    def load(cls, path: str | Path) -> Config:
        """Read a .toml, .yaml/.yml or .json file (a ``[perforate]`` table is also accepted)."""
        data = read_settings(path, "config file")
        if isinstance(data, dict) and set(data) == {"perforate"}:
            data = data["perforate"]
        return cls.from_dict(data)

    def save(self, path: str | Path) -> None:
        """Write as .toml, .yaml/.yml or .json, chosen by the file's suffix."""
        path = Path(path)
        suffix = path.suffix.lower()
        data = self.to_dict()
        if suffix == ".toml":
            import tomli_w

            text = tomli_w.dumps(data)
        elif suffix in (".yaml", ".yml"):
            import yaml

            text = yaml.safe_dump(data, sort_keys=False)
        elif suffix == ".json":
            text = json.dumps(data, indent=2)
        else:
            raise ConfigError(f"config file {path} must end in .toml, .yaml, .yml or .json")
        try:
            write_text(path, text)
        except OSError as exc:
            raise ConfigError(f"cannot write config file {path}: {exc}; choose a writable path") from exc


_FILE_KEYS = {new: old for old, new in RENAMED_FIELDS.items()}
_FILE_VALUES = {name: {new: old for old, new in values.items()} for name, values in RENAMED_VALUES.items()}
_dataclass_init = Config.__init__


def _init(self: Config, *args: Any, **kwargs: Any) -> None:
    for name, value in kwargs.items():
        if not (name == "maximize" and value is None):  # None: "not given", as score_mode's
            _warn_if_old(name, value)
    _fill(self, args, kwargs)


_init.__doc__, _init.__wrapped__ = _dataclass_init.__doc__, _dataclass_init  # type: ignore[attr-defined]
Config.__init__ = _init  # type: ignore[method-assign]


def _fill(config: Config, args: tuple, kwargs: dict[str, Any]) -> None:
    """Run the dataclass's ``__init__`` with old names (``maximize``, :data:`RENAMED_FIELDS`)
    and old values (:data:`RENAMED_VALUES`) turned into current ones; ConfigError when a setting
    is given under both names."""
    current: dict[str, Any] = {}
    for name, value in kwargs.items():
        new = RENAMED_FIELDS.get(name, name)
        if _old_value(new, value):
            value = RENAMED_VALUES[new][value]
        if new in current:
            old = name if new != name else _FILE_KEYS[new]
            raise ConfigError(f"{old} is the old name of {new}, which is also given; give {new} alone")
        current[new] = value
    config.__dict__["_maximize_given"] = current.pop("maximize", None)
    _dataclass_init(config, *args, **current)


def _build(cls: type[Config], data: dict[str, Any]) -> Config:
    """``cls(**data)`` without deprecation warnings (files keep the old keys); unknown keys
    raise ConfigError listing the known ones."""
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(map(str, data)) - known - set(RENAMED_FIELDS) - {"maximize"})
    if unknown:
        raise ConfigError(f"unknown config field(s) {show(unknown)}; known fields are: {sorted(known)}")
    config = cls.__new__(cls)
    _fill(config, (), data)
    return config


def _warn_if_old(name: str, value: Any) -> None:
    """A DeprecationWarning, at the line that called the caller, when ``name`` is an old field
    name (``maximize``, :data:`RENAMED_FIELDS`) or ``value`` an old value of the field ``name``."""
    if name == "maximize" or name in RENAMED_FIELDS:
        new = "score_mode" if name == "maximize" else RENAMED_FIELDS[name]
        message = (f"Config field {name!r} is renamed {new!r}" + (" ('max' or 'min')" if name == "maximize"
                                                                  else "") + "; the old name will be removed")
    elif _old_value(name, value):
        message = (f"Config {name}={value!r} is renamed {name}={RENAMED_VALUES[name][value]!r}; "
                   "the old value will be removed")
    else:
        return
    warnings.warn(message, DeprecationWarning, stacklevel=3)


def _old_value(name: str, value: Any) -> bool:
    """Whether ``value`` is an old value of field ``name`` (:data:`RENAMED_VALUES`)."""
    return isinstance(value, str) and value in RENAMED_VALUES.get(name, {})


def _renamed_choice(name: str, value: Any, allowed: tuple[str, ...]) -> None:
    """:func:`_choice`, whose error also names the old values (which still work)."""
    if not isinstance(value, str) or value not in allowed:
        raise ConfigError(f"{name} must be one of {list(allowed)} (formerly "
                          f"{' and '.join(map(repr, RENAMED_VALUES[name]))}); got {show(value)}")


def _choice(name: str, value: Any, allowed: tuple[str, ...]) -> None:
    if not isinstance(value, str) or value not in allowed:
        raise ConfigError(f"{name} must be one of {list(allowed)}; got {show(value)}")


def _int_or_auto(name: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ConfigError(f"{name} must be \"auto\" or an integer >= 0; got {show(value)}")


def _int(name: str, value: Any, minimum: int, maximum: int | None = None) -> None:
    ok = not isinstance(value, bool) and isinstance(value, int) and value >= minimum
    if not ok or (maximum is not None and value > maximum):
        bounds = f">= {minimum}" if maximum is None else f"in [{minimum}, {maximum}]"
        raise ConfigError(f"{name} must be an integer {bounds}; got {show(value)}")


def _number(name: str, value: Any, minimum: float, strict: bool = False,
            maximum: float | None = None) -> None:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    ok = ok and (value > minimum if strict else value >= minimum)
    if not ok or (maximum is not None and value > maximum):
        bounds = f"{'>' if strict else '>='} {minimum}" + (f" and <= {maximum:g}" if maximum else "")
        raise ConfigError(f"{name} must be a finite number {bounds}; got {show(value)}")


def _unless(skipped: Any, check: Callable[[str, Any], None]) -> Callable[[str, Any], None]:
    """``check``, except that the value ``skipped`` (a setting's "off" or "auto") passes."""
    return lambda name, value: None if value == skipped else check(name, value)


def _axis_map(name: str, value: Any) -> None:
    if not isinstance(value, dict) or not all(
        isinstance(k, str) and isinstance(v, int) and not isinstance(v, bool)
        for k, v in value.items()
    ):
        raise ConfigError(f"{name} must map module-name glob patterns to an int "
                          f"axis, e.g. {{'encoder.*': -1}}; got {show(value)}")


def _input_counts(name: str, value: Any) -> None:
    counts = value if isinstance(value, dict) else {"*": value}
    for pattern, count in counts.items():
        if not isinstance(pattern, str) or isinstance(count, bool) or not isinstance(count, int) \
                or count < 0:
            raise ConfigError(f"{name} must be an integer >= 0 (0: all inputs) or a "
                              "mapping of module-name globs to such integers, e.g. "
                              f"{{'fc1': 8}}; got {show(value)}")


def _activation(name: str, value: Any) -> None:
    _choice(name, value, tuple(ACTIVATIONS))


def _below_one(name: str, value: Any) -> None:
    _number(name, value, 0.0)
    if value >= 1.0:
        raise ConfigError(f"{name} must be in [0, 1); got {show(value)}")


def _score_name(name: str, value: Any) -> None:
    if not isinstance(value, str) or not value.strip():
        raise ConfigError(f"{name} must be a non-empty string such as 'validation loss'; "
                          f"got {show(value)}")


# Each field's bounds, checked by Config.validate in this order (the first bad field raises).
_BOUNDS: tuple[tuple[str, Callable[[str, Any], None]], ...] = (
    ("neuron_axis", _axis_map),
    ("mode", partial(_choice, allowed=MODES)),
    ("dendrite_input_choice", partial(_choice, allowed=INPUT_CHOICES)),
    ("dendrite_inputs", _input_counts),
    ("candidate_training", partial(_choice, allowed=CANDIDATE_TRAINING)),
    ("snapshot_device", partial(_choice, allowed=SNAPSHOT_PLACES)),
    ("smoothing", partial(_int, minimum=1)),
    ("candidate_steps", _unless("auto", _int_or_auto)),
    ("max_epochs", partial(_int, minimum=0)),
    ("overfit_gap", _unless(math.inf, partial(_number, minimum=0.0))),
    ("train_rise", _unless(math.inf, partial(_number, minimum=0.0))),
    ("growth_lr_scale", partial(_number, minimum=0.0, strict=True)),
    ("candidate_lr", partial(_number, minimum=0.0, strict=True)),
    ("candidate_passes", partial(_number, minimum=0.0)),
    ("candidate_cache_mb", partial(_number, minimum=0.0, strict=True)),
    ("join_min_correlation", partial(_number, minimum=0.0)),
    ("dendrite_activation", _activation),
    ("checkpoint_best", partial(_renamed_choice, allowed=CHECKPOINT_POLICIES)),
    ("trial", partial(_choice, allowed=TRIALS)),
    ("patience", partial(_int, minimum=1)),
    ("max_dendrites", partial(_int, minimum=0)),
    ("max_growth_retries", partial(_int, minimum=0)),
    ("candidates", partial(_int, minimum=1, maximum=MAX_CANDIDATES)),
    ("dendrite_patience", partial(_int, minimum=1)),
    ("dendrite_max_epochs", partial(_int, minimum=1)),
    ("checkpoint_every", partial(_int, minimum=0)),
    ("seed", partial(_int, minimum=0, maximum=MAX_SEED)),
    ("improvement_threshold", partial(_number, minimum=0.0)),
    ("improvement_threshold_abs", partial(_number, minimum=0.0)),
    ("init_scale", partial(_number, minimum=0.0, strict=True, maximum=MAX_INIT_SCALE)),
    ("candidate_lr_scale", partial(_number, minimum=0.0, strict=True, maximum=MAX_LR_SCALE)),
    ("warn_min_correlation", partial(_number, minimum=0.0)),
    ("dendrite_improvement_threshold", partial(_number, minimum=0.0)),
    ("correlation_decay", _below_one),
    ("score_mode", partial(_choice, allowed=SCORE_MODES)),
    ("score_name", _score_name),
)
