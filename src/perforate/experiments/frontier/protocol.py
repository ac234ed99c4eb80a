"""What defines a frontier experiment: :class:`FrontierProtocol` and the arm names it uses."""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import perforate as pf
from perforate.errors import ExperimentError
from perforate.experiments.harness.protocol import ExperimentProtocol
from perforate.experiments.harness.settings import check_stopping, finite_number, positive_int

SCHEMA = "perforate-frontier/1"
DEFAULT_VARIANTS = {"gd": {"mode": "gd"}, "pb": {"mode": "pb"}}
"""Dendritic arms by name: a growth mode and Config overrides."""
REFERENCE = "reference"
CONTROL = "control-"
"""``control-<arm>``: the width-matched control of a dendritic arm's runs."""
PLAIN = "plain"
CONTROL_CHOICES = ("local", "random")


def parse_control(name: str) -> tuple[str, int]:
    """A plain sparse control's name, ``CHOICE`` or ``CHOICE-xN`` (``local``, ``random``,
    ``local-x6``: a first layer ``N`` times as wide) -> (choice, expand); ExperimentError else."""
    choice, _, expand = name.partition("-x")
    if choice not in CONTROL_CHOICES or (expand and not (expand.isdigit() and int(expand) >= 1)):
        raise ExperimentError(f"a plain control is local, random, or either with -xN (a first "
                              f"layer N times as wide), e.g. local-x6; got {name!r}")
    return choice, int(expand or 1)


@dataclass(frozen=True, kw_only=True)
class FrontierProtocol(ExperimentProtocol):
    """Everything that defines a frontier experiment; ``key()`` holds what changes numbers."""

    FILE_ORDER = ("dataset", "model", "widths", "grow_widths", "arms", "variants",
                  "reference_widths", "seeds", "max_epochs", "patience", "stopping", "lr",
                  "batch_size", "weight_decay", "config", "run_outputs", "metric", "direction",
                  "custom_arms", "controls", "control_inputs", "control_widths")
    KEY_OMITS = ("widths", "grow_widths", "arms", "seeds", "reference_widths", "run_outputs",
                 "custom_arms", "controls", "control_widths")

    widths: list[int] = field(default_factory=lambda: [4, 8, 16, 32, 64, 128, 256])
    """The plain ladder."""
    grow_widths: list[int] = field(default_factory=lambda: [4, 8, 16])
    """Widths the dendritic arms start from."""
    arms: list[str] = field(default_factory=lambda: ["gd", "pb"])
    """Dendritic arms: names in ``variants``, or ``"reference"`` (perforatedai)."""
    variants: dict[str, dict[str, Any]] = field(default_factory=lambda: dict(DEFAULT_VARIANTS))
    reference_widths: list[int] | None = None
    """Starting widths of the reference arm (default: ``grow_widths``); it is slow."""
    seeds: list[int] = field(default_factory=lambda: list(range(5)))
    metric: str = ""
    """The score's name in reports ("" for a harness task: accuracy % or R² × 100)."""
    direction: str = "max"
    """Which way the score improves: "max" or "min"."""
    custom_arms: list[str] = field(default_factory=list)
    """Arms trained by a caller's function (``run_frontier(arms=...)``), by name."""
    controls: list[str] = field(default_factory=list)
    """Plain sparse ladders beside the dense one (see :func:`parse_control`); arm
    ``plain-NAME`` (distinct from ``control-<arm>``, the width-matched control)."""
    control_inputs: int = 8
    """Inputs each unit of a sparse control's restricted layer reads."""
    control_widths: list[int] | None = None
    """The sparse controls' ladder of widths (default: ``widths``)."""

    def validate(self) -> None:
        """Raise ExperimentError naming the first bad setting."""
        for name in ("max_epochs", "batch_size", "patience"):
            positive_int(name, getattr(self, name))
        finite_number("lr", self.lr, minimum=0.0, strict=True)
        finite_number("weight_decay", self.weight_decay, minimum=0.0)
        seeds = self.seeds
        if not seeds or any(isinstance(v, bool) or not isinstance(v, int) or v < 0 for v in seeds):
            raise ExperimentError(f"seeds must be a non-empty list of integers >= 0; got {seeds!r}")
        for name in ("widths", "grow_widths"):
            values = getattr(self, name)
            if not values or any(isinstance(v, bool) or not isinstance(v, (int, float))
                                 or not math.isfinite(v) or v <= 0 for v in values):
                raise ExperimentError(f"{name} must be a non-empty list of positive numbers "
                                      f"(widths or scales); got {values!r}")
        check_stopping(self.stopping)
        if self.direction not in ("max", "min"):
            raise ExperimentError(f"direction must be 'max' or 'min'; got {self.direction!r}")
        for name in self.controls:
            parse_control(name)
        positive_int("control_inputs", self.control_inputs)
        if self.control_widths is not None and (not self.control_widths or any(
                isinstance(v, bool) or not isinstance(v, int) or v < 1 for v in self.control_widths)):
            raise ExperimentError(f"control_widths must be a non-empty list of integers >= 1; got "
                                  f"{self.control_widths!r}")
        for arm in self.arms:
            grown = arm[len(CONTROL):] if arm.startswith(CONTROL) else None
            if grown is not None and grown in self.variants:
                if grown not in self.arms[:self.arms.index(arm)]:
                    raise ExperimentError(f"arm {arm!r} controls arm {grown!r}: list {grown!r} "
                                          "before it")
                continue
            if arm != REFERENCE and arm not in self.variants and arm not in self.custom_arms:
                raise ExperimentError(f"unknown arm {arm!r}; choose from {sorted(self.variants)} or "
                                      f"{REFERENCE!r}, or define it with --variant NAME=MODE[,field=value]")
        for name, variant in self.variants.items():
            if variant.get("mode") not in ("gd", "pb"):
                raise ExperimentError(f"variant {name!r} needs mode 'gd' or 'pb'; got {variant.get('mode')!r}")
            self.dendritic_config(name, 0)  # a bad override raises ConfigError now

    def dendritic_config(self, arm: str, seed: int) -> pf.Config:
        """The Config of a dendritic arm for one seed."""
        variant = dict(self.variants[arm])
        fields = {"checkpoint_every": 0, "plots": False, **self.config, **variant,
                  "patience": variant.get("patience", self.patience), "seed": seed,
                  "max_epochs": self.max_epochs if self.stopping == "budget" else 0}
        return pf.Config.from_dict(fields)

    def stopper_config(self) -> pf.Config:
        """What plain runs stop by: the same patience, smoothing and improvement thresholds."""
        return pf.Config.from_dict({**{k: v for k, v in self.config.items()
                                       if k in ("smoothing", "improvement_threshold",
                                                "improvement_threshold_abs")},
                                    "patience": self.patience})

    @property
    def starts_of_reference(self) -> list[int]:
        return self.grow_widths if self.reference_widths is None else self.reference_widths

    @property
    def ladder_of_controls(self) -> list[float]:
        """The widths of the sparse controls' ladders."""
        return self.widths if self.control_widths is None else self.control_widths

    def key(self) -> dict[str, Any]:
        """The settings two runs must share for their results to be pooled."""
        d = super().key()
        d["variants"] = {k: v for k, v in self.variants.items() if k in self.arms}
        for name, default in (("metric", ""), ("direction", "max")):  # as files before them
            if d[name] == default:
                d.pop(name)
        return d
