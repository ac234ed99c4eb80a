"""Public helpers for framework integrations (see docs/integrations.md): resizing on load, and
carrying an LR schedule across optimizer rebuilds.

Frameworks load state dicts on their own (Lightning's ``ckpt_path``, Hugging Face's
``load_best_model_at_end``). :func:`install_resize_hook` lets such a load succeed when the saved
model had a different number of dendrites than the live one: a ``load_state_dict`` pre-hook reads
each layer's dendrite count from the incoming tensor shapes and resizes the layer first.
"""
from __future__ import annotations

from typing import Any, Mapping

import torch
from torch import nn

from .. import Config, ConfigError, dendritic_layers
from ..integration_api import LR_SCALE_KEY, dendrite_structure, rebuild_structure

_HOOK_ATTR = "_perforate_resize_hook"


def refuse_shadow_trials(config: Config, integration: str) -> None:
    """Raise ConfigError for ``Config.trial == "shadow"``: a framework's loop cannot train the
    shadow run on its batches (it owns the step and the loss), so the integration would waste a
    model copy and judge the growth as under rollback anyway."""
    if config.trial == "shadow":
        raise ConfigError(f"trial='shadow' is not supported by {integration}: the framework's "
                          "training step cannot also train the shadow run; use trial='rollback', "
                          "or a loop of your own that calls grower.shadow_step (see perforate.shadow)")


def structure_from_state(model: nn.Module, state: Mapping[str, Any], prefix: str = "") -> dict[str, dict]:
    """The structure (as :func:`perforate.integration_api.dendrite_structure`) that ``state`` was saved from.

    Layer settings come from ``model``'s own wrapping; dendrite and candidate counts come from
    the shapes in ``state`` (``<layer>.output_weight`` is ``[K, C]``, a candidate pool's
    ``best_score`` buffer is ``[P, C]``). Perforated (``pb``) layers hold frozen dendrites.
    """
    struct = dendrite_structure(model)
    for name, spec in struct.items():
        key = f"{prefix}{name}." if name else prefix
        out = state.get(key + "output_weight")
        k = int(out.shape[0]) if isinstance(out, torch.Tensor) else 0
        pool = state.get(key + "candidate_pool.best_score")
        spec["num_dendrites"] = k
        spec["candidates"] = int(pool.shape[0]) if isinstance(pool, torch.Tensor) else 0
        spec["frozen"] = bool(spec["perforated"]) and k > 0
    return struct


def resize_to_state(model: nn.Module, state: Mapping[str, Any], prefix: str = "") -> bool:
    """Resize ``model``'s dendritic layers to fit ``state``; returns True when anything changed."""
    current = dendrite_structure(model)
    wanted = structure_from_state(model, state, prefix)
    changed = any(current[n]["num_dendrites"] != s["num_dendrites"] or
                  current[n]["candidates"] != s["candidates"] for n, s in wanted.items())
    if changed:
        rebuild_structure(model, wanted)
    return changed


def _resize_hook(module: nn.Module, state_dict, prefix: str, *args) -> None:
    # module level, so that a model carrying the hook can still be pickled (e.g. ddp_spawn)
    if dendritic_layers(module):
        resize_to_state(module, state_dict, prefix)


def install_resize_hook(model: nn.Module) -> None:
    """Make ``model.load_state_dict`` accept states with other dendrite counts (idempotent)."""
    if getattr(model, _HOOK_ATTR, None) is not None:
        return
    object.__setattr__(model, _HOOK_ATTR, model.register_load_state_dict_pre_hook(_resize_hook))


def carry_schedule(old: Any, new: Any, old_optimizer: torch.optim.Optimizer | None,
                   new_optimizer: torch.optim.Optimizer) -> None:
    """Make ``new`` follow its optimizer's phase rates and, when possible, continue ``old``.

    ``new`` was built with ``new_optimizer`` before that optimizer was fitted to the grower's
    phase (``Grower.param_groups`` scales ``lr`` and ``initial_lr``): its base rates are taken
    from the fitted groups. When ``old`` is of the same class its schedule continues: step count
    and current rates, moved to the new phase's rate multiplier. Without this a schedule defined
    over the whole run (warm-up, linear or one-cycle decay) would restart at every growth step.
    """
    if new is None:
        return
    groups = new_optimizer.param_groups
    if hasattr(new, "base_lrs"):
        new.base_lrs = [g.get("initial_lr", g["lr"]) for g in groups]
    if old is None or type(old) is not type(new):
        return
    state = old.state_dict()
    try:
        new.load_state_dict(state)
    except (KeyError, ValueError, TypeError, RuntimeError):
        return
    if old_optimizer is None or len(old_optimizer.param_groups) != len(groups):
        return
    ratios = [_lr_scale(new_group) / _lr_scale(old_group)
              for old_group, new_group in zip(old_optimizer.param_groups, groups)]
    if "base_lrs" in state:
        new.base_lrs = [base * r for base, r in zip(state["base_lrs"], ratios)]
    for g_old, g_new, r in zip(old_optimizer.param_groups, groups, ratios):
        if "lr" in g_old:
            g_new["lr"] = g_old["lr"] * r
    if hasattr(new, "_last_lr"):  # loaded with the old schedule's: what get_last_lr() reports
        new._last_lr = [g["lr"] for g in groups]


def _lr_scale(group: Mapping[str, Any]) -> float:
    return group.get(LR_SCALE_KEY, 1.0)
