"""What the grower decides from (:class:`GrowerState`) and what it answers (:class:`Decision`).

``GrowerState`` is plain numbers and lists: its plateau counters are :class:`Plateau` objects
(``plateau`` for the neuron phase, ``dendrite`` for a pb dendrite phase), saved flat under the
names of older versions (``window``, ``cycle_best``, ``stale``, ``dendrite_epochs`` ...), so
that old state files and new ones read alike. Fields renamed since (``attempts`` ->
``seed_draws``, ``level`` -> ``dendrites``, ``best_level`` -> ``best_dendrites``,
``best_by_level`` -> ``best_by_dendrites``) are read under either name and stay readable as
attributes under the old one.
"""
from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass
from typing import Any, Callable, Mapping

from .errors import CheckpointError
from .plateau import Plateau
from .validation import describe, fits, hints, show

PHASES = ("neuron", "dendrite")


@dataclass(frozen=True, kw_only=True)
class Decision:
    """What ``Grower.step`` decided for this epoch."""

    restructured: bool
    """The model's structure or trainable set changed; use ``grower.optimizer`` from now on."""
    done: bool
    """Growth is over; ``grower.model`` holds the best model."""
    phase: str
    """"neuron" or "dendrite" for the coming epoch."""
    event: str = ""
    """"grow", "retry", "dendrite_start", "join", "continue" (after a growth that did not pay:
    back to the model as it was when the growth began, training on), "hold" (a plateau where
    growth cannot help, training on to the budget), "done" or ""."""
    improved: bool = False
    """This epoch's score, in a neuron phase, beat the best score so far (whatever was decided
    after it; a grown model is kept only once its growth paid, see :mod:`perforate.policy`)."""
    epoch: int = 0
    reason: str = ""
    """Why this decision was taken (empty on ordinary epochs)."""


@dataclass
class DendritePhase(Plateau):
    """A pb dendrite phase: its epochs, and the plateau of the candidates' summed score."""

    epochs: int = 0
    """Epochs of the phase running now."""
    last_epochs: int = 0
    """Epochs of the last finished dendrite phase (what the next one is expected to take)."""

    def start(self) -> None:
        """A new dendrite phase: no epochs, no best, no stale count."""
        self.epochs = 0
        self.reset()

    def update_candidates(self, total: float, better: Callable[[float, float | None], bool]) -> bool:
        """Take the candidates' summed score of an epoch; ``better(new, best)`` says whether it
        improved (:func:`perforate.policy.candidates_improved`; unsmoothed: no window is kept)."""
        improved = self.update(total, 1, better)
        self.window = []
        return improved


RENAMED = {"attempts": "seed_draws", "level": "dendrites", "best_level": "best_dendrites",
           "best_by_level": "best_by_dendrites"}
"""Old state-file names -> the fields that replaced them."""

FLAT = {"cycle_best": ("plateau", "best"), "stale": ("plateau", "stale"), "window": ("plateau", "window"),
        "dendrite_epochs": ("dendrite", "epochs"), "dendrite_stale": ("dendrite", "stale"),
        "dendrite_best": ("dendrite", "best"), "last_dendrite_epochs": ("dendrite", "last_epochs")}
"""Saved names of the plateau counters -> (field, attribute)."""


class _Alias:
    """An attribute that reads and writes ``path`` ("field" or "field.attribute")."""

    def __init__(self, path: str) -> None:
        self.path = path.split(".")

    def __get__(self, obj: Any, owner: type) -> Any:
        if obj is None:
            return self
        for name in self.path:
            obj = getattr(obj, name)
        return obj

    def __set__(self, obj: Any, value: Any) -> None:
        for name in self.path[:-1]:
            obj = getattr(obj, name)
        setattr(obj, self.path[-1], value)


@dataclass
class GrowerState:
    """Everything the controller decides from: plain JSON values (see ``to_dict``).

    ``grower.state`` holds the live one; :meth:`Grower.state_dict` carries it under ``"state"``.
    """

    epoch: int = 0
    phase: str = "neuron"
    best_score: float | None = None
    """Best single-epoch score of an accepted architecture (the kept model's)."""
    best_epoch: int = -1
    best_smoothed: float | None = None
    """Best smoothed score of an accepted architecture."""
    cycle: str = "base"
    """What the current neuron phase is: "base" (the model as given), "growth" (after a growth
    step, not yet accepted) or "continue" (the accepted architecture training on after a plateau
    or a growth that did not pay)."""
    cycle_from: float | None = None
    """``best_smoothed`` when the cycle started (what a growth cycle must beat)."""
    plateau: Plateau = dataclasses.field(default_factory=Plateau)
    """The current cycle's smoothed scores (``window``, ``best``, ``stale``; saved as ``window``,
    ``cycle_best``, ``stale``)."""
    train_window: list = dataclasses.field(default_factory=list)
    train_trace: list = dataclasses.field(default_factory=list)
    """Smoothed training scores of this cycle's last ``patience + 1`` epochs."""
    trial_score: float | None = None
    """Best single-epoch score of the current growth cycle (accepted only if the growth paid)."""
    trial_epoch: int = -1
    dendrites: int = 0
    """Dendrite generations in the live model."""
    best_dendrites: int = 0
    """Dendrite generations in the best model."""
    failures: int = 0
    """Growth steps in a row that did not pay."""
    seed_draws: int = 0
    """Random generators drawn for growth (each growth's seed is derived from this count)."""
    dendrite: DendritePhase = dataclasses.field(default_factory=DendritePhase)
    done: bool = False
    decisions: list = dataclasses.field(default_factory=list)
    """Every decision: ``{"epoch", "event", "reason"}``."""
    switch_epochs: list = dataclasses.field(default_factory=list)
    best_by_dendrites: dict = dataclasses.field(default_factory=dict)
    correlations: list = dataclasses.field(default_factory=list)
    weak_layers: list = dataclasses.field(default_factory=list)
    trainable_flags: dict = dataclasses.field(default_factory=dict)
    """``requires_grad`` of each named parameter when the grower was built (the user's choice)."""

    window = _Alias("plateau.window")
    cycle_best = _Alias("plateau.best")
    stale = _Alias("plateau.stale")
    dendrite_epochs = _Alias("dendrite.epochs")
    dendrite_stale = _Alias("dendrite.stale")
    dendrite_best = _Alias("dendrite.best")
    last_dendrite_epochs = _Alias("dendrite.last_epochs")
    level = _Alias("dendrites")
    best_level = _Alias("best_dendrites")
    best_by_level = _Alias("best_by_dendrites")
    attempts = _Alias("seed_draws")

    def to_dict(self) -> dict[str, Any]:
        """Plain values, the plateau counters under their flat names."""
        out = {}
        for f in dataclasses.fields(self):
            if f.name == "plateau":
                out.update(cycle_best=self.cycle_best, stale=self.stale, window=list(self.window))
            elif f.name == "dendrite":
                out.update({k: getattr(self, k) for k, (field, _) in FLAT.items() if field == "dendrite"})
            else:
                out[f.name] = copy.deepcopy(getattr(self, f.name))
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> GrowerState:
        """Build from ``to_dict()`` output (or an older version's, see the module docstring);
        fields it lacks keep their defaults. Raises CheckpointError naming the first field of a
        bad type or value."""
        if not isinstance(data, Mapping):
            raise CheckpointError(f"a grower state must be a mapping; got {show(data)}")
        data = copy.deepcopy(dict(data))
        both = [old for old, new in RENAMED.items() if old in data and new in data]
        names = {}  # messages name a field as the file does
        for old, new in RENAMED.items():
            if old in data:
                data[new], names[new] = data.pop(old), old
        known = {f.name for f in dataclasses.fields(cls)} - {"plateau", "dendrite"}
        unknown = sorted(map(str, set(data) - known - set(FLAT)))
        if unknown:
            raise CheckpointError(f"grower state has unknown fields {show(unknown)}: it was written by "
                                  "another version of perforate; resume it with that version")
        state = cls(**{k: v for k, v in data.items() if k not in FLAT})
        for name in FLAT.keys() & data.keys():
            setattr(state, name, data[name])
        state.validate(names)
        if both:
            raise _StateError(f"{both[0]} is the old name of {RENAMED[both[0]]}, and the state has both")
        return state

    def _saved_fields(self):
        """``(saved name, value, annotation, default)`` of every saved field."""
        for f in dataclasses.fields(self):
            if f.name not in ("plateau", "dendrite"):
                yield f.name, getattr(self, f.name), hints(type(self))[f.name], f.default
        for name, (field, attr) in FLAT.items():
            part = getattr(self, field)
            default = next(f.default for f in dataclasses.fields(part) if f.name == attr)
            yield name, getattr(part, attr), hints(type(part))[attr], default

    def validate(self, names: Mapping[str, str] | None = None) -> None:
        """Raise CheckpointError naming the first field of a bad type or value (by its name in
        ``names``, field -> name in the file, when there)."""
        fields = [((names or {}).get(n, n), *rest) for n, *rest in self._saved_fields()]
        for name, value, hint, _ in fields:
            if not fits(value, hint):
                raise _StateError(f"{name} must be {describe(hint)}; got {show(value)}")
        if self.phase not in PHASES:
            raise _StateError(f"phase must be one of {list(PHASES)}; got {show(self.phase)}")
        if not all(isinstance(k, str) and isinstance(v, bool) for k, v in self.trainable_flags.items()):
            raise _StateError("trainable_flags must map parameter names to true/false; got "
                              f"{show(self.trainable_flags)}")
        for name, value, _, default in fields:  # counts and epochs: never below 0 (or their default)
            low = min(0, default) if isinstance(default, int) else 0
            if isinstance(value, int) and not isinstance(value, bool) and value < low:
                raise _StateError(f"{name} must be >= {low}; got {value}")


class _StateError(CheckpointError):
    def __init__(self, message: str) -> None:
        super().__init__(f"grower state field {message}; the saved state is damaged: resume from "
                         "another copy or start the run again")
