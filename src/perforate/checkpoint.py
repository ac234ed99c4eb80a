"""Safe checkpoints: safetensors weights plus JSON structure and history. Never pickle.

Every file carries a SHA-256 digest of its JSON document and tensors (dtype, shape and bytes),
checked on reading: a corrupted file raises :class:`CheckpointError` instead of loading. Files
written before the digest existed have none and load unchecked. A structure read from a file is
checked against the file's tensors and the model before anything is allocated for it.
"""
from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file
from torch import nn

from . import connectivity
from .activations import ACTIVATIONS
from .convert import dendritic_layers
from .errors import CheckpointError, WrapError
from .files import atomic_path
from .layers import DendriticLayer
from .modules import replace_module
from .validation import fits, show

FORMAT = "perforate/1"
DOC_KEY, DIGEST_KEY = "perforate", "perforate_sha256"
"""Safetensors metadata entries: the JSON document, and the digest of it and the tensors."""
_SPEC_TYPES = {"kind": str | None, "num_dendrites": int, "activation": str, "neuron_axis": int,
               "perforated": bool, "init_scale": float, "frozen": bool, "candidates": int,
               "inputs": int, "input_choice": str}
_SPEC_OPTIONAL = ("kind", "frozen", "candidates", "inputs", "input_choice")  # older files lack them

log = logging.getLogger("perforate")


# ---------------------------------------------------------------------- structure
def structure(model: nn.Module) -> dict[str, dict[str, Any]]:
    """What ``load`` needs to rebuild the wrapping: per wrapped layer, its settings and size."""
    out = {}
    for name, layer in dendritic_layers(model).items():
        pool = layer.candidate_pool
        out[name] = {
            "kind": layer.kind,
            "num_dendrites": layer.num_dendrites,
            "activation": layer.activation,
            "neuron_axis": layer.neuron_axis,
            "perforated": layer.perforated,
            "init_scale": layer.init_scale,
            "frozen": layer.dendrites_frozen,
            "candidates": pool.num_candidates if pool is not None else 0,
            "inputs": layer.inputs,
            "input_choice": layer.input_choice,
        }
    return out


def check_structure(struct: Any, source: Any = "the checkpoint") -> dict[str, dict[str, Any]]:
    """Return ``struct`` when it is a well-formed :func:`structure`; else raise CheckpointError."""
    from . import kinds

    if not isinstance(struct, dict):
        raise CheckpointError(f"{source}: the structure must map layer names to settings; got "
                              f"{show(struct)}; the file is damaged or was not written by perforate")
    allowed = {"kind": lambda v: v is None or v in kinds.KINDS,  # beyond the type in _SPEC_TYPES
               "activation": lambda v: v in ACTIVATIONS,
               "init_scale": lambda v: 0 < v < float("inf"),
               "num_dendrites": lambda v: v >= 0, "candidates": lambda v: v >= 0,
               "inputs": lambda v: v >= 0, "input_choice": lambda v: v in connectivity.CHOICES}
    for name, spec in struct.items():
        if not isinstance(spec, dict):
            raise CheckpointError(f"{source}: layer {show(name)} has settings {show(spec)}, not a mapping")
        for key, hint in _SPEC_TYPES.items():
            if key not in spec and key in _SPEC_OPTIONAL:
                continue
            value = spec.get(key)
            if not (key in spec and fits(value, hint) and allowed.get(key, lambda v: True)(value)):
                raise CheckpointError(f"{source}: layer {show(name)} has a bad {key} {show(value)}; "
                                      "the file is damaged or was written by another version")
    return struct


def _check_sizes(layer: DendriticLayer, name: str, spec: dict[str, Any],
                 state: dict[str, torch.Tensor], source: Any) -> None:
    """Raise CheckpointError unless ``spec``'s dendrite and candidate counts agree with the
    tensors in ``state`` and with ``layer``, so loading allocates no more than the file holds."""
    k, p, c = spec["num_dendrites"], spec.get("candidates", 0), layer.channels
    prefix = f"{name}." if name else ""
    expected = {"output_weight": (k, c) if k else None,
                "cascade_weight": (k * (k - 1) // 2, c) if k > 1 else None,
                "candidate_pool.best_score": (p, c) if p else None,
                "candidate_pool.cascade": (p, k, c) if p and k else None}
    for key, shape in expected.items():
        tensor = state.get(prefix + key)
        got = tuple(tensor.shape) if isinstance(tensor, torch.Tensor) else None
        if got != shape:
            raise CheckpointError(
                f"{source}: layer '{name}' ({c} neurons) claims {k} dendrites and {p} candidates, "
                f"so its {key} should be {shape or 'absent'}, but the file has {got or 'none'}; "
                "the file is damaged or belongs to another architecture")
    owned = ("dendrite_", "candidate_pool.", "cascade_weight", "output_weight")
    held = sum(t.numel() for key, t in state.items()
               if key.startswith(prefix) and key[len(prefix):].startswith(owned))
    need = (k + p) * layer.adapter.unit_numel(layer.main)
    if held < need:
        raise CheckpointError(f"{source}: layer '{name}' claims {k} dendrites and {p} candidates "
                              f"({need} values) but the file holds {held}; the file is damaged")


def _check_kind(module: nn.Module, name: str, spec: dict[str, Any], source: Any) -> None:
    """Raise CheckpointError unless the saved kind is the one ``pf.perforate`` gives ``module``
    (or the block kind, which wraps any module with parameters)."""
    from . import kinds

    saved = spec.get("kind")
    if saved is None or saved == "block":
        return
    own = kinds.kind_of(module) or kinds.block_kind(module)
    if saved != own.name:
        raise CheckpointError(f"{source}: layer {show(name)} was saved as a {saved} layer, but this "
                              f"model has a {type(module).__name__} there ({own.name}); the file is "
                              "damaged or belongs to another architecture")


def apply_structure(model: nn.Module, struct: dict[str, dict[str, Any]],
                    state: dict[str, torch.Tensor] | None = None,
                    source: Any = "the checkpoint") -> nn.Module:
    """Wrap (if needed) and resize ``model``'s layers to match ``struct``; returns the model.

    With ``state`` (the tensors that will be loaded, e.g. read from a file), ``struct`` is
    first checked against them and the model (:class:`CheckpointError` before any allocation).
    """
    from .growth.pb import CandidatePool
    from .kinds import openers

    check_structure(struct, source)
    model = openers.open_for(model, list(struct))
    existing = dendritic_layers(model)
    for name, spec in struct.items():
        layer = existing.get(name)
        if layer is None:
            try:
                module = model.get_submodule(name) if name else model
            except AttributeError as exc:
                raise CheckpointError(
                    f"{source} has a dendritic layer {show(name)} that this model lacks; "
                    "pass a fresh instance of the same architecture as base_model") from exc
            if isinstance(module, DendriticLayer):
                layer = module
            else:
                _check_kind(module, name, spec, source)
                try:
                    layer = DendriticLayer(module, activation=spec["activation"],
                                           neuron_axis=spec["neuron_axis"], perforated=spec["perforated"],
                                           init_scale=spec["init_scale"], kind=spec.get("kind"), name=name,
                                           inputs=spec.get("inputs", 0),
                                           input_choice=spec.get("input_choice", "local"))
                except WrapError as exc:
                    raise CheckpointError(f"{source}: layer {show(name)} cannot be rebuilt as saved "
                                          f"({exc}); pass a fresh instance of the saved architecture") from exc
                if not name:
                    model = layer
                else:
                    replace_module(model, module, layer)
        if (layer.inputs, layer.input_choice) != (spec.get("inputs", 0), spec.get("input_choice", "local")):
            raise CheckpointError(
                f"{source}: layer {show(name)} reads {spec.get('inputs', 0) or 'all'} inputs per "
                f"dendrite ({spec.get('input_choice', 'local')}) but this model's layer reads "
                f"{layer.inputs or 'all'} ({layer.input_choice}); pass an un-wrapped base model")
        if state is not None:
            _check_sizes(layer, name, spec, state, source)
        layer.set_num_dendrites(spec["num_dendrites"])
        layer.freeze_dendrites(spec.get("frozen", False))
        layer.candidate_pool = (CandidatePool(layer, spec["candidates"], torch.Generator().manual_seed(0))
                                if spec.get("candidates") else None)
    extra = set(existing) - set(struct)
    if extra:
        raise CheckpointError(f"this model has dendritic layers {sorted(extra)} that the checkpoint "
                              "lacks; pass an un-wrapped base model")
    openers.guard(model)
    return model


# ---------------------------------------------------------------------- tensors on disk
def _unique_tensors(state: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Safetensors stores each storage once: alias tied tensors to their first name."""
    tensors, aliases, seen = {}, {}, {}
    for key, value in state.items():
        if value is None:
            continue
        ident = (value.data_ptr(), value.dtype, tuple(value.shape), tuple(value.stride()))
        if value.numel() and ident in seen:
            aliases[key] = seen[ident]
            continue
        seen[ident] = key
        tensors[key] = value.detach().to("cpu").contiguous()
    return tensors, aliases


def _digest(doc: str, tensors: dict[str, torch.Tensor]) -> str:
    """SHA-256 of the JSON document and every tensor's name, dtype, shape and bytes."""
    h = hashlib.sha256(doc.encode())
    for key in sorted(tensors):
        t = tensors[key].detach().cpu().contiguous()
        h.update(f"\0{key}\0{t.dtype}\0{tuple(t.shape)}\0".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().data)
    return h.hexdigest()


def write_tensors(path: str | Path, state: dict[str, torch.Tensor], meta: dict[str, Any]) -> None:
    """Write tensors and a JSON document atomically (temporary file, then rename), with their
    digest."""
    path = Path(path)
    tensors, aliases = _unique_tensors(state)
    doc = json.dumps({"format": FORMAT, "aliases": aliases, **meta})
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(path) as tmp:
            save_file(tensors, str(tmp), metadata={DOC_KEY: doc, DIGEST_KEY: _digest(doc, tensors)})
    except (OSError, SafetensorError) as exc:  # safetensors reports a full disk as its own error
        raise CheckpointError(f"cannot write checkpoint {path}: {exc}; choose a writable path "
                              "with room for it") from exc


def read_tensors(path: str | Path, device: str | torch.device = "cpu"):
    """Read what :func:`write_tensors` wrote: ``(state, meta)``, after checking the digest."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"no checkpoint at {path}")
    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            header = f.metadata() or {}
            state = {k: f.get_tensor(k) for k in f.keys()}
        doc = header.get(DOC_KEY, "{}")
        meta = json.loads(doc)
    except Exception as exc:
        raise CheckpointError(f"{path} is not a perforate checkpoint (safetensors + JSON): {exc}") from exc
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise CheckpointError(f"{path} was not written by pf.save (format "
                              f"{show(meta.get('format') if isinstance(meta, dict) else meta)})")
    if set(header) == {DOC_KEY}:
        log.info("%s has no digest (written before perforate checked files): loaded unchecked", path)
    elif set(header) != {DOC_KEY, DIGEST_KEY} or header[DIGEST_KEY] != _digest(doc, state):
        raise CheckpointError(f"{path} is corrupted: its contents do not match the digest written "
                              "with them; use another copy or rerun")
    aliases = meta.get("aliases", {})
    if not isinstance(aliases, dict) or not all(
            isinstance(k, str) and isinstance(v, str) and v in state for k, v in aliases.items()):
        raise CheckpointError(f"{path} has bad tensor aliases {show(aliases)}; the file is damaged")
    for key, target in aliases.items():
        state[key] = state[target]
    if str(device) != "cpu":
        state = {k: v.to(device) for k, v in state.items()}
    return state, meta


# ---------------------------------------------------------------------- public API
def save(model: nn.Module, path: str | Path, history: list[dict] | None = None,
         extra: dict[str, Any] | None = None) -> None:
    """Save weights (safetensors) with the dendrite structure and growth history (JSON).

    The file is a safetensors file whatever ``path`` ends in: name it ``*.safetensors`` and read
    it with :func:`load` (``torch.load`` cannot read it, and would need pickle)."""
    write_tensors(path, model.state_dict(), {"structure": structure(model), "history": history or [],
                                             "extra": extra or {}})


def load(path: str | Path, base_model: nn.Module, map_location: str | torch.device = "cpu") -> nn.Module:
    """Rebuild a saved dendritic model from ``base_model``, a fresh un-wrapped instance.

    Returns the model, wrapped and sized as saved, with identical weights. The saved history
    is available as ``pf.read_checkpoint_meta(path)["history"]``.
    """
    state, meta = read_tensors(path, map_location)
    model = apply_structure(base_model, meta.get("structure"), state, path)
    load_state(model, state, path)
    return model


def load_state(model: nn.Module, state: dict[str, torch.Tensor], source: Any = "state") -> None:
    try:
        missing, unexpected = model.load_state_dict(state, strict=False)
    except RuntimeError as exc:
        raise CheckpointError(f"{source} does not fit this model: {exc}") from exc
    if missing or unexpected:
        raise CheckpointError(f"{source} does not fit this model: missing {missing[:5]}, "
                              f"unexpected {unexpected[:5]}; pass a fresh instance of the saved architecture")


def read_checkpoint_meta(path: str | Path) -> dict[str, Any]:
    """The JSON part of a checkpoint: structure, history and extra."""
    return read_tensors(path)[1]


def snapshot(model: nn.Module) -> dict[str, Any]:
    """An in-memory copy of the model's structure and weights (for rollback)."""
    return {"structure": structure(model),
            "state": {k: v.detach().clone() for k, v in model.state_dict().items()}}


def check_snapshot(model: nn.Module, snap: dict[str, Any], source: Any = "the snapshot") -> None:
    """Raise CheckpointError unless a :func:`snapshot` read from a file fits ``model``'s wrapped
    layers and its own tensors (so that :func:`restore` allocates no more than it holds)."""
    struct = check_structure(snap["structure"], source)
    layers = dendritic_layers(model)
    for name, spec in struct.items():
        if name not in layers:
            raise CheckpointError(f"{source} has a dendritic layer {show(name)} that this model lacks; "
                                  "the saved state belongs to another architecture")
        _check_sizes(layers[name], name, spec, snap["state"], source)


def restore(model: nn.Module, snap: dict[str, Any]) -> nn.Module:
    """Return ``model`` to a :func:`snapshot` (structure and weights)."""
    model = apply_structure(model, snap["structure"])
    load_state(model, snap["state"], "snapshot")
    return model


# ---------------------------------------------------------------------- optimizer state
def optimizer_state_to_tensors(state_dict: dict[str, Any]) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Split an optimizer/scheduler state dict into tensors and a JSON-able remainder."""
    tensors: dict[str, torch.Tensor] = {}

    def walk(obj: Any, path: str) -> Any:
        if isinstance(obj, torch.Tensor):
            tensors[path] = obj
            return {"__tensor__": path}
        if isinstance(obj, dict):
            return {"__dict__": [[walk(k, f"{path}.k{i}"), walk(v, f"{path}.{i}")]
                                 for i, (k, v) in enumerate(obj.items())]}
        if isinstance(obj, (list, tuple)):
            return {"__list__" if isinstance(obj, list) else "__tuple__":
                    [walk(v, f"{path}.{i}") for i, v in enumerate(obj)]}
        if obj is None or isinstance(obj, (bool, int, float, str)):
            return obj
        return {"__skipped__": type(obj).__name__}  # e.g. a lambda in LambdaLR

    return tensors, walk(state_dict, "s")


def optimizer_state_from_tensors(tensors: dict[str, torch.Tensor], doc: Any) -> Any:
    """Rebuild what :func:`optimizer_state_to_tensors` split; CheckpointError when ``doc`` is not
    such a document."""

    used: set[str] = set()

    def build(obj: Any, depth: int) -> Any:
        if obj is None or isinstance(obj, (bool, int, float, str)):
            return obj
        if not isinstance(obj, dict) or len(obj) != 1 or depth > 32:
            raise CheckpointError(f"bad optimizer state entry {show(obj)}; the file is damaged")
        (tag, value), = obj.items()
        if tag == "__tensor__" and isinstance(value, str):
            if value not in tensors:
                raise CheckpointError(f"the optimizer state refers to a tensor {show(value)} that the "
                                      "file lacks; the file is damaged")
            used.add(value)
            return tensors[value]
        if tag == "__skipped__":
            return None
        if tag in ("__list__", "__tuple__") and isinstance(value, list):
            items = [build(v, depth + 1) for v in value]
            return items if tag == "__list__" else tuple(items)
        if tag == "__dict__" and isinstance(value, list) and all(
                isinstance(pair, list) and len(pair) == 2 for pair in value):
            pairs = [(build(k, depth + 1), build(v, depth + 1)) for k, v in value]
            if all(isinstance(k, (int, str, type(None))) for k, _ in pairs):
                return dict(pairs)
        raise CheckpointError(f"bad optimizer state entry {show(obj)}; the file is damaged")

    out = build(doc, 0)
    unused = sorted(set(tensors) - used)
    if unused:  # every tensor was written with a reference to it: one was cut out
        raise CheckpointError(f"the file holds optimizer tensors {show(unused)} that its optimizer "
                              "state no longer refers to; the file is damaged")
    return out


def optimizer_param_names(optimizer: torch.optim.Optimizer, model: nn.Module) -> list[list[str]]:
    """The name in ``model`` of each parameter of each of ``optimizer``'s groups."""
    names = {id(p): n for n, p in model.named_parameters()}
    return [[names.get(id(p), f"<group {g} item {i}>") for i, p in enumerate(group["params"])]
            for g, group in enumerate(optimizer.param_groups)]


def match_optimizer_state(saved: Any, saved_names: Any, optimizer: torch.optim.Optimizer,
                          model: nn.Module) -> dict[str, Any]:
    """``saved`` (an optimizer's ``state_dict()``) made to load into ``optimizer``.

    Parameters are matched by their names in ``model`` (``saved_names`` as from
    :func:`optimizer_param_names`), so each keeps its state however the groups list them; older
    files without names are matched by position. Raises CheckpointError when the groups, the
    hyperparameters' types or the state tensors' sizes do not fit ``optimizer``.
    """
    live_names = optimizer_param_names(optimizer, model)
    groups = saved.get("param_groups") if isinstance(saved, dict) else None
    state = saved.get("state") if isinstance(saved, dict) else None
    if not (isinstance(groups, list) and isinstance(state, dict) and all(
            isinstance(g, dict) and fits(g.get("params"), list[int]) for g in groups)):
        raise CheckpointError(f"the optimizer state {show(saved)} is not an optimizer's state_dict()")
    if saved_names is None and [len(g["params"]) for g in groups] == [len(n) for n in live_names]:
        saved_names = live_names
    if saved_names is None or not fits(saved_names, list[list[str]]) or \
            [sorted(n) for n in saved_names] != [sorted(n) for n in live_names] or \
            [len(n) for n in saved_names] != [len(g["params"]) for g in groups]:
        raise CheckpointError(
            f"the saved optimizer trains {show(saved_names or [g['params'] for g in groups])} but the "
            f"one built now trains {show(live_names)}; build it with the same factory and groups")
    ids = {n: i for g, names in zip(groups, saved_names) for i, n in zip(g["params"], names)}
    strays = sorted((k for k in state if k not in set(ids.values())), key=str)
    if strays:  # its state would be dropped without a word
        raise CheckpointError(f"the optimizer state has entries for parameters {show(strays)} that "
                              f"none of its groups lists ({show(sorted(ids.values()))}); the file is damaged")
    matched, probes = {}, {}
    for g, (group, names) in enumerate(zip(optimizer.param_groups, live_names)):
        for name, param in zip(names, group["params"]):
            entry = state.get(ids[name])
            if entry is None:
                continue
            key = (g, param.dim())
            if key not in probes:  # with the options the loaded group will have: the saved ones
                options = {**group, **{k: v for k, v in groups[g].items() if k != "params"}}
                probes[key] = _probe_state(optimizer, options, param.dim())
            if not _state_fits(entry, param, probes[key]):
                raise CheckpointError(f"the optimizer state of {name} ({show(entry)}) does not fit the "
                                      f"parameter {tuple(param.shape)} or the optimizer; the file is damaged")
            matched[ids[name]] = entry
    for group, own in zip(groups, optimizer.param_groups):
        for key, value in own.items():
            if key != "params" and key in group and not _same_kind(group[key], value):
                raise CheckpointError(f"the optimizer state has {key}={show(group[key])} where the "
                                      f"optimizer uses values like {show(value)}; the file is damaged")
        saved_options = {**own, **{k: v for k, v in group.items() if k != "params"}}
        # values of the right kind can still be unusable (Adam's beta1 = 1 divides by zero)
        if _probe_state(optimizer, saved_options, 1) is None and _probe_state(optimizer, own, 1) is not None:
            raise CheckpointError(
                f"the optimizer state's options {show({k: v for k, v in group.items() if k != 'params'})} "
                f"cannot take a step with {type(optimizer).__name__}; the file is damaged")
    # options the saved groups lack (e.g. from another torch version) keep the optimizer's own
    return {"state": matched, "param_groups": [
        {**own, **g, "params": [ids[n] for n in names]}
        for g, own, names in zip(groups, optimizer.param_groups, live_names)]}


def _probe_state(optimizer: torch.optim.Optimizer, group: dict[str, Any], ndim: int) -> dict | None:
    """The state ``optimizer``'s class keeps for a parameter of ``ndim`` dimensions with
    ``group``'s options, from one step on a small stand-in; None when it cannot be probed (an
    optimizer that needs a closure or other arguments)."""
    probe = torch.zeros([2] * ndim, requires_grad=True)
    options = {k: v for k, v in group.items() if k in optimizer.defaults}
    try:
        trial = type(optimizer)([probe], **options)
        probe.grad = torch.zeros_like(probe)
        trial.step()
    except Exception:  # any failure only means: no probe, the state is not compared
        return None
    return trial.state[probe]


def _state_fits(entry: Any, param: torch.Tensor, probe: dict | None) -> bool:
    """True when a parameter's saved optimizer state has the probe's entries, tensors where it has
    tensors (of the parameter's shape, fewer elements or none), and values of the same kind."""
    if not isinstance(entry, dict):
        return False
    for value in entry.values():
        if isinstance(value, torch.Tensor) and value.dim() and value.shape != param.shape \
                and value.numel() >= param.numel():
            return False
    if probe is None or not entry:
        return True
    stand_in = (2,) * param.dim()  # the probe's parameter: its state shaped like it is per element
    return set(entry) == set(probe) and all(
        isinstance(entry[k], torch.Tensor) == isinstance(v, torch.Tensor) and
        (isinstance(v, torch.Tensor) or _same_kind(entry[k], v)) and
        (not isinstance(v, torch.Tensor) or tuple(v.shape) != stand_in or entry[k].shape == param.shape)
        for k, v in probe.items())


def _same_kind(saved: Any, live: Any) -> bool:
    """True when ``saved`` could stand where ``live`` stands in an optimizer's group."""
    if isinstance(live, bool) or live is None or isinstance(live, str):
        return live is None or type(saved) is type(live)
    if isinstance(live, (int, float)):
        return isinstance(saved, (int, float, torch.Tensor)) and not isinstance(saved, bool)
    if isinstance(live, (list, tuple)):
        return isinstance(saved, (list, tuple)) and len(saved) == len(live) and all(
            _same_kind(a, b) for a, b in zip(saved, live))
    return True


def match_scheduler_state(saved: Any, scheduler: Any) -> dict[str, Any]:
    """``saved`` (a scheduler's ``state_dict()``) without the entries it could not save (None);
    CheckpointError when it has entries ``scheduler`` lacks or values of other kinds."""
    live = scheduler.state_dict()
    if not isinstance(saved, dict) or not all(
            k in live and (v is None or _same_kind(v, live[k])) for k, v in saved.items()):
        raise CheckpointError(f"the scheduler state {show(saved)} does not fit the scheduler "
                              f"{type(scheduler).__name__}; build it with the same factory")
    return {k: v for k, v in saved.items() if v is not None}
