"""What goes into and out of a :class:`perforate.Grower` besides the decisions: the scores given
to ``step``, ``summary()``, and the grower's state (``state_dict`` / ``load_state_dict``, the one
resume path)."""
from __future__ import annotations

import importlib
import logging
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping

import torch

from . import checkpoint as ckpt
from . import resuming
from .config import Config
from .errors import CheckpointError, GrowthError
from .grower_state import GrowerState
from .measure import count_parameters, flops_per_sample
from .records import BASE_COLUMNS
from .validation import show
from .writer import RESUME_STEM, STATE_FORMAT, load_grower_state

if TYPE_CHECKING:
    from .grower import Grower

log = logging.getLogger("perforate")

MOVED = {"PHASES": "grower_state", "STATE_FORMAT": "writer", "RESUME_STEM": "writer",
         "BASE_COLUMNS": "records", "budget_log": "grower_actions"}
"""Names of ``perforate.grower`` that moved out when it was split -> their ``perforate`` modules."""


def moved_name(name: str) -> Any:
    """``perforate.grower``'s module ``__getattr__``: a :data:`MOVED` name from its new module,
    with a DeprecationWarning naming the import to use."""
    if name not in MOVED:
        raise AttributeError(f"module 'perforate.grower' has no attribute {name!r}")
    warnings.warn(f"perforate.grower.{name} is deprecated: use "
                  f"'from perforate.{MOVED[name]} import {name}'", DeprecationWarning, stacklevel=2)
    return getattr(importlib.import_module(f"perforate.{MOVED[name]}"), name)


# ------------------------------------------------------------------ step's inputs
def number(value: Any, what: str) -> float:
    """``value`` as a float; GrowthError naming ``what`` when it is not a number."""
    try:
        return float(value)
    except (TypeError, ValueError) as exc:
        raise GrowthError(f"step() needs a number as {what}; got {value!r}") from exc


def extra_scores(scores: Mapping[str, Any]) -> dict[str, float]:
    """The extra scores given to ``step`` as numbers; names must not be history columns."""
    out = {}
    for name, value in scores.items():
        if name in BASE_COLUMNS or name.startswith("corr/"):
            raise GrowthError(f"step() got an extra score named '{name}', which is a history "
                              f"column; give it another name, e.g. 'val_{name}'")
        try:
            out[name] = float(value)
        except (TypeError, ValueError) as exc:
            raise GrowthError(f"step() needs numbers as extra scores; got {name}={show(value)}") from exc
    return out


def train_score(config: Config, extra: Mapping[str, float]) -> float | None:
    """The training score among the extra scores (in the validation score's direction)."""
    names = ("train_score", "train_acc") if config.maximize else ("train_score", "train_loss")
    for name in names:
        value = extra.get(name)  # a float (see extra_scores)
        if value is not None and value == value:  # not NaN
            return value
    return None


def summary(g: Grower) -> dict[str, Any]:
    """See :meth:`perforate.Grower.summary`."""
    s = g.state
    flops = None
    if g._example is not None:
        try:
            flops = flops_per_sample(g.model, g._example)
        except Exception:  # a model whose forward needs more than one tensor
            flops = None
    return {
        "best_score": s.best_score, "best_epoch": s.best_epoch, "best_dendrites": s.best_dendrites,
        "epochs": s.epoch, "done": s.done, "phase": s.phase,
        "params": count_parameters(g.model), "flops_per_sample": flops,
        "dendrites_by_layer": {n: l.num_dendrites for n, l in g.layers.items()},
        "best_by_dendrites": s.best_by_dendrites, "switch_epochs": s.switch_epochs,
        "correlations": s.correlations, "weak_layers": s.weak_layers,
        "decisions": s.decisions, "config": g.config.to_dict(),
    }


# ------------------------------------------------------------------ state and resume
def state_dict(g: Grower, model: bool = True, optimizer: bool = True) -> dict[str, Any]:
    """:meth:`perforate.Grower.state_dict`. Always: ``"config"``, ``"state"`` (:class:`GrowerState`
    as a dict), ``"history"``, ``"structure"`` (the live model's wrapping), all JSON-able, and
    ``"best"`` (the best model's structure and tensors, or None) with ``"best_version"``,
    ``"trial"`` (the best grown model of a growth cycle on trial) and ``"before"`` (the model when
    that growth began), each None outside a growth cycle. With ``model``: ``"model"``, the live
    model's state dict. With ``optimizer``: ``"optimizer"`` and ``"scheduler"`` state dicts and
    ``"optimizer_params"``, the optimizer's parameter names by group (its state is loaded by
    name)."""
    out: dict[str, Any] = {
        "format": STATE_FORMAT, "config": g.config.to_dict(), "state": g.state.to_dict(),
        "history": [dict(row) for row in g.history], "structure": ckpt.structure(g.model),
        **g.snaps.state_dict(),
    }
    if model:
        out["model"] = g.model.state_dict()
    if optimizer:
        out["optimizer"] = g.optimizer.state_dict()
        out["optimizer_params"] = ckpt.optimizer_param_names(g.optimizer, g.model)
        out["scheduler"] = g.scheduler.state_dict() if g.scheduler is not None else None
    return out


def load_state_dict(g: Grower, sd: Mapping[str, Any]) -> None:
    """:meth:`perforate.Grower.load_state_dict`: restores the decisions, history and snapshots;
    when present, the model's structure and weights. Then applies the saved phase's trainable set
    (``apply_trainable``), rebuilds the optimizer and scheduler for it and, when present, loads
    their states (matched to the parameters by name). Without a model part, a state saved in a pb
    dendrite phase needs the model's candidate pools (loaded into the model before the grower
    was built)."""
    check_state_dict(sd)
    source = "the grower state"
    if "model" in sd:
        g.model = ckpt.apply_structure(g.model, sd["structure"], sd["model"], source)
        ckpt.load_state(g.model, sd["model"], source)
    state = GrowerState.from_dict(sd["state"])
    for key, what in (("best", "best model"), ("trial", "grown model on trial"),
                      ("before", "model from before the growth")):
        if sd.get(key) is not None:
            ckpt.check_snapshot(g.model, sd[key], f"{source}'s {what}")
    place_pools(g, state.phase)
    g.state, g._shadow = state, None
    if g.config.trial == "shadow" and state.cycle == "growth":
        log.info("%sthe shadow run of the growth trial is not saved with the grower state: this "
                 "trial is judged as under trial='rollback'", g._log_prefix)
    if state.phase == "dendrite" and g.config.candidate_training == "cached":
        for layer in g.layers.values():  # the cached epoch starts again
            if layer.candidate_pool is not None:
                layer.candidate_pool.start_caching(g.config.candidate_cache_mb)
    g.history = [dict(row) for row in sd["history"]]
    g.snaps.load_state_dict(sd)
    g._params = count_parameters(g.model)
    g._retrain()
    if sd.get("optimizer") is not None:
        factory_lrs = resuming.learning_rates(g.optimizer)
        saved = ckpt.match_optimizer_state(sd["optimizer"], sd.get("optimizer_params"), g.optimizer, g.model)
        try:
            g.optimizer.load_state_dict(saved)
        except (ValueError, KeyError, TypeError, RuntimeError) as exc:
            raise CheckpointError(f"the saved optimizer state does not fit the optimizer: {exc}; "
                                  "build it with the same factory") from exc
        resuming.note_learning_rates(factory_lrs, g.optimizer, f"{g._log_prefix}epoch {state.epoch}: ")
    if g.scheduler is not None and sd.get("scheduler") is not None:
        g.scheduler.load_state_dict(ckpt.match_scheduler_state(sd["scheduler"], g.scheduler))


def read_run(out_dir: str | Path, base_model: torch.nn.Module, config: Config | None,
             name: str) -> tuple[torch.nn.Module, Config, dict[str, Any]]:
    """For :meth:`perforate.Grower.resume`: the model, config and state saved in ``out_dir``."""
    folder = Path(out_dir) / "state"
    if not (folder / f"{RESUME_STEM}.safetensors").is_file():
        raise CheckpointError(f"no resumable run in {out_dir} (no state/{RESUME_STEM}.safetensors); "
                              "was it started with out_dir set and checkpoint_every > 0?")
    state_dict = load_grower_state(folder)
    check_state_dict(state_dict)
    saved_state = state_dict["state"]
    prefix = f"{f'[{name}] ' if name else ''}epoch {saved_state.get('epoch')}: "
    config = resuming.resumed_config(state_dict["config"], config, saved_state.get("phase"), out_dir, prefix)
    model = ckpt.apply_structure(base_model, state_dict["structure"], state_dict.get("model"), folder)
    return model, config, state_dict


def place_pools(g: Grower, phase: str) -> None:
    """Give the layers candidate pools exactly when ``phase`` is a dendrite phase."""
    layers = g.layers
    for name, pool in g._set_aside.items():
        if name in layers and layers[name].candidate_pool is None:
            layers[name].candidate_pool = pool
    g._set_aside = {}
    if phase == "neuron":
        for layer in layers.values():
            layer.candidate_pool = None
    elif any(layer.candidate_pool is None for layer in layers.values()):
        raise CheckpointError("the grower state was saved in a pb dendrite phase but the model "
                              "has no candidate pools; load the weights saved with that state "
                              "into the model first, or pass the state with its model part")


def set_pools_aside(g: Grower) -> dict[str, Any]:
    """A new grower starts in the neuron phase: candidate pools of an unfinished dendrite phase
    (e.g. a model saved then) leave the model; ``load_state_dict`` puts them back for a state
    saved in that phase; the first ``step`` forgets them. Pools that are all the model trains
    (a copy of a model in its dendrite phase, for ``load_state_dict``) stay."""
    pools = {n: l.candidate_pool for n, l in g.layers.items() if l.candidate_pool is not None}
    pool_params = {id(p) for pool in pools.values() for p in pool.parameters()}
    if not any(p.requires_grad and id(p) not in pool_params for p in g.model.parameters()):
        return {}
    for name in pools:
        g.layers[name].candidate_pool = None
    return pools


def _is_scalar(value: Any) -> bool:
    return value is None or isinstance(value, (bool, int, float, str))


def _tensors(value: Any) -> bool:
    return isinstance(value, dict) and all(isinstance(k, str) and isinstance(v, torch.Tensor)
                                           for k, v in value.items())


def check_state_dict(sd: Any) -> None:
    """Raise CheckpointError unless ``sd`` has the parts and types of a ``Grower.state_dict()``
    (the values inside are checked where they are used)."""
    if not isinstance(sd, Mapping) or sd.get("format") != STATE_FORMAT:
        found = sd.get("format") if isinstance(sd, Mapping) else sd
        raise CheckpointError(f"not a grower state (format {show(found)}); pass what "
                              "Grower.state_dict() returned")
    checks = {
        "config": lambda v: isinstance(v, dict), "state": lambda v: isinstance(v, dict),
        "structure": lambda v: isinstance(v, dict),
        "history": lambda v: isinstance(v, list) and all(
            isinstance(row, dict) and all(isinstance(k, str) and _is_scalar(x) for k, x in row.items())
            for row in v),
        "best": lambda v: v is None or (isinstance(v, dict) and isinstance(v.get("structure"), dict)
                                        and _tensors(v.get("state"))),
        "best_version": lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= 0,
    }
    optional = {"model": _tensors, "optimizer": lambda v: v is None or isinstance(v, dict),
                "scheduler": lambda v: v is None or isinstance(v, dict)}
    for key, ok in [*checks.items(), *((k, f) for k, f in optional.items() if k in sd)]:
        if not ok(sd.get(key)):
            raise CheckpointError(f"the grower state's {key} is {show(sd.get(key))}, not what "
                                  "Grower.state_dict() writes; the saved state is damaged")
