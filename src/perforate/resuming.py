"""What a resumed run uses, said at INFO, and the rule for settings changed between runs.

The rule (``Grower.resume(..., config=...)``):

- the fields in :data:`FIXED` (and, for a run saved in a pb dendrite phase, those in
  :data:`FIXED_IN_DENDRITE_PHASE`) decide what the saved state *is*: a change is refused with
  :class:`ConfigError` naming them (start a new run to change them);
- every other field (patience, budget, thresholds, outputs...) may change: the run goes on with
  the new value from its next epoch, and each change is logged at INFO;
- without ``config`` the saved one is used (logged at INFO).

The optimizer keeps the saved learning rates (they hold the scheduler's progress); where the
factory's differs, that is logged at INFO, and the factory's applies from the next restructure
(when the grower builds the optimizer again).
"""
from __future__ import annotations

import logging
from typing import Any

import torch

from .config import Config
from .errors import CheckpointError, ConfigError

log = logging.getLogger("perforate")

FIXED = ("mode", "score_mode", "maximize", "include", "exclude", "neuron_axis", "dendrite_activation")
"""Config fields a resumed run cannot change: they define its model's wrapping and its score."""
FIXED_IN_DENDRITE_PHASE = ("candidates", "candidate_training")
"""... nor, in a pb dendrite phase, those its candidate pools were built with."""


def resumed_config(saved: dict[str, Any], given: Config | None, phase: str, where: Any,
                   prefix: str = "") -> Config:
    """The config a run resumed from ``where`` goes on with (see the module rule). Raises
    CheckpointError for a damaged saved config, ConfigError for a change that is refused.
    ``prefix`` starts the log lines (the run's name and epoch)."""
    try:
        old = Config.from_dict(saved)
    except ConfigError as exc:
        raise CheckpointError(f"the run in {where} saved a bad config ({exc}); the saved state "
                              "is damaged") from exc
    if given is None:
        log.info("%sresuming %s with its saved config (pass config= to change what may change)", prefix, where)
        return old
    given.validate()
    before, after = old.to_dict(), given.to_dict()
    changed = {k: (before.get(k), v) for k, v in after.items() if before.get(k) != v}
    fixed = FIXED + (FIXED_IN_DENDRITE_PHASE if phase == "dendrite" else ())
    refused = sorted(k for k in changed if k in fixed)
    if refused:
        shown = ", ".join(f"{k}: {changed[k][0]!r} -> {changed[k][1]!r}" for k in refused)
        raise ConfigError(f"the run in {where} cannot go on with changed {shown}: the saved state "
                          "depends on them; pass them as saved, or start a new run in another out_dir")
    if changed:
        log.info("%sresuming %s with changed settings (from its next epoch): %s", prefix, where,
                 ", ".join(f"{k} {a!r} -> {b!r}" for k, (a, b) in sorted(changed.items())))
    else:
        log.info("%sresuming %s: the given config equals the saved one", prefix, where)
    return given


def learning_rates(optimizer: torch.optim.Optimizer) -> list[Any]:
    """Each parameter group's base learning rate (``initial_lr`` under a scheduler, else ``lr``)."""
    return [group.get("initial_lr", group.get("lr")) for group in optimizer.param_groups]


def note_learning_rates(factory: list[Any], optimizer: torch.optim.Optimizer, prefix: str = "") -> None:
    """Log at INFO where the loaded optimizer's base learning rates differ from the factory's."""
    loaded = learning_rates(optimizer)
    if loaded != factory:
        log.info("%sthe resumed optimizer keeps its saved learning rate(s) %s; the optimizer factory "
                 "gives %s, which applies from the next growth step or rollback (build the run's "
                 "optimizer with the saved rate to keep it)", prefix, loaded, factory)
