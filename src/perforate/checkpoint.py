"""Safe checkpoints: safetensors weights plus JSON structure and history. Never pickle."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import save_file
from torch import nn

from .convert import dendritic_layers
from .errors import CheckpointError
from .files import atomic_path
from .layers import DendriticLayer
from .modules import replace_module

FORMAT = "perforate/1"


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
        }
    return out


def apply_structure(model: nn.Module, struct: dict[str, dict[str, Any]]) -> nn.Module:
    """Wrap (if needed) and resize ``model``'s layers to match ``struct``; returns the model."""
    from .kinds import openers
    from .training.pb import CandidatePool

    model = openers.open_for(model, list(struct))
    existing = dendritic_layers(model)
    for name, spec in struct.items():
        layer = existing.get(name)
        if layer is None:
            try:
                module = model.get_submodule(name) if name else model
            except AttributeError as exc:
                raise CheckpointError(
                    f"the checkpoint has a dendritic layer '{name}' that this model lacks; "
                    "pass a fresh instance of the same architecture as base_model") from exc
            if isinstance(module, DendriticLayer):
                layer = module
            else:
                layer = DendriticLayer(module, activation=spec["activation"],
                                       neuron_axis=spec["neuron_axis"], perforated=spec["perforated"],
                                       init_scale=spec["init_scale"], kind=spec.get("kind"), name=name)
                if not name:
                    model = layer
                else:
                    replace_module(model, module, layer)
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


def write_tensors(path: str | Path, state: dict[str, torch.Tensor], meta: dict[str, Any]) -> None:
    """Write tensors and a JSON document atomically (temporary file, then rename)."""
    path = Path(path)
    tensors, aliases = _unique_tensors(state)
    doc = {"format": FORMAT, "aliases": aliases, **meta}
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(path) as tmp:
            save_file(tensors, str(tmp), metadata={"perforate": json.dumps(doc)})
    except OSError as exc:
        raise CheckpointError(f"cannot write checkpoint {path}: {exc}; choose a writable path") from exc


def read_tensors(path: str | Path, device: str | torch.device = "cpu"):
    """Read what :func:`write_tensors` wrote: ``(state, meta)``."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"no checkpoint at {path}")
    try:
        with safe_open(str(path), framework="pt", device=str(device)) as f:
            meta = json.loads((f.metadata() or {}).get("perforate", "{}"))
            state = {k: f.get_tensor(k) for k in f.keys()}
    except Exception as exc:
        raise CheckpointError(f"{path} is not a perforate checkpoint (safetensors + JSON): {exc}") from exc
    if meta.get("format") != FORMAT:
        raise CheckpointError(f"{path} was not written by pf.save (format {meta.get('format')!r})")
    for key, target in meta.get("aliases", {}).items():
        state[key] = state[target]
    return state, meta


# ---------------------------------------------------------------------- public API
def save(model: nn.Module, path: str | Path, history: list[dict] | None = None,
         extra: dict[str, Any] | None = None) -> None:
    """Save weights (safetensors) with the dendrite structure and growth history (JSON)."""
    write_tensors(path, model.state_dict(), {"structure": structure(model), "history": history or [],
                                             "extra": extra or {}})


def load(path: str | Path, base_model: nn.Module, map_location: str | torch.device = "cpu") -> nn.Module:
    """Rebuild a saved dendritic model from ``base_model``, a fresh un-wrapped instance.

    Returns the model, wrapped and sized as saved, with identical weights. The saved history
    is available as ``pf.read_checkpoint_meta(path)["history"]``.
    """
    state, meta = read_tensors(path, map_location)
    model = apply_structure(base_model, meta["structure"])
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
    def build(obj: Any) -> Any:
        if isinstance(obj, dict):
            if "__tensor__" in obj:
                return tensors[obj["__tensor__"]]
            if "__dict__" in obj:
                return {build(k): build(v) for k, v in obj["__dict__"]}
            if "__list__" in obj:
                return [build(v) for v in obj["__list__"]]
            if "__tuple__" in obj:
                return tuple(build(v) for v in obj["__tuple__"])
            if "__skipped__" in obj:
                return None
        return obj

    return build(doc)
