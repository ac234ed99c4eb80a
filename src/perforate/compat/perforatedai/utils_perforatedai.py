"""``UPA``: converting a model, saving and loading it, counting its parameters (the reference's utils).

``initialize_pai`` (3.0/3.1) and ``perforate_model`` (3.2) convert the model in place with
:func:`perforate.perforate`, the modules chosen by the ``GPA.pc`` lists, and give
``GPA.pai_tracker`` a tracker for it. Checkpoints are :func:`perforate.save` files (safetensors
plus JSON), whatever ``using_safe_tensors`` says: nothing here writes or loads a pickle.
"""
from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import load_file
from torch import nn

from ... import CheckpointError, count_parameters, dendritic_layers, export, load
from ...integration_api import CHECKPOINT_DOC_KEY
from . import globals_perforatedai as GPA
from . import knobs, selection
from .errors import CompatConfigError, CompatUsageError
from .modules_perforatedai import adopt, keep_forms
from .outputs import read_tracker_state, write_system
from .tracker import PAITracker

__all__ = [
    "convert_network", "count_params", "deep_copy_pai", "extract_gpa_config", "from_hf_pretrained",
    "get_pai_modules",
    "initialize_pai", "load_pretrained_model", "load_system", "pai_save_system", "perforate_model",
    "prepare_final_model", "save_system", "set_gpa_config", "upload_to_huggingface",
]


def initialize_pai(model: nn.Module, doing_pai: bool = True, save_name: str = "PAI",
                   making_graphs: bool = True, maximizing_score: bool | None = None,
                   num_classes: float = 1e10, values_per_train_epoch: int = -1,
                   values_per_val_epoch: int = -1, zooming_graph: bool = True) -> nn.Module:
    """Convert ``model`` and start its tracker (the 3.0/3.1 entry point); returns the model.

    ``maximizing_score`` defaults to ``GPA.pc.get_maximizing_score()`` (True). ``num_classes``,
    ``values_per_*_epoch`` and ``zooming_graph`` only shaped the reference's graph; accepted.
    """
    return start(model, "3.0", doing_pai, save_name, making_graphs, maximizing_score)


def perforate_model(model: nn.Module, doing_pai: bool = True, save_name: str = "",
                    making_graphs: bool = True, maximizing_score: bool | None = None,
                    num_classes: float = 1e10, values_per_train_epoch: int = -1,
                    values_per_val_epoch: int = -1, zooming_graph: bool = True,
                    config_file: str | None = None, **newer: Any) -> nn.Module:
    """Convert ``model`` and start its tracker (the 3.2 entry point); returns the model.

    ``config_file`` (or ``GPA.pc.set_config_file``) is a JSON file of settings; settings the
    script set by hand win. Never interactive: ``configuration_confirmed`` is not needed.
    """
    config_file = config_file or GPA.pc.value("config_file")
    if config_file:
        GPA.pc.load_config(config_file)
    for name in newer:
        GPA.pc.note(f"perforate_model:{name}", f"UPA.perforate_model({name}=...) is not implemented "
                                               "by perforate; ignored")
    return start(model, "3.2", doing_pai, save_name, making_graphs, maximizing_score)


def start(model: nn.Module, generation: str, doing_pai: bool, save_name: str, making_graphs: bool,
          maximizing_score: bool | None) -> nn.Module:
    """Convert ``model`` the ``generation``'s way and put a new tracker on ``GPA.pai_tracker``."""
    pc = GPA.pc
    save_name = save_name or pc.value("save_name") or "PAI"
    pc.assign("save_name", save_name)
    if maximizing_score is not None:
        pc.assign("maximizing_score", bool(maximizing_score))
    fields = knobs.config_fields(lambda n: pc.value(n, 0), pc.is_set)
    config = knobs.validated(None, {**fields, "seed": torch.initial_seed() % 2**31})
    if dendritic_layers(model):
        config = config.replace(include=list(dendritic_layers(model)))
        model = adopt(model, pc)
    else:
        model, config = selection.convert(model, pc, generation, config)
    GPA.pai_tracker = PAITracker(pc, model, config, generation=generation, save_name=save_name,
                                 doing_pai=doing_pai, making_graphs=making_graphs)
    pc.save_config(Path(save_name) / f"{Path(save_name).name}_config.json")
    return model


def convert_network(net: nn.Module, layer_name: str = "") -> nn.Module:
    """Wrap the modules the ``GPA.pc`` lists choose, without a tracker; returns the model."""
    pc = GPA.pc
    config = knobs.validated(None, knobs.config_fields(lambda n: pc.value(n, 0), pc.is_set))
    return selection.convert(net, pc, "3.2", config)[0]


# ---------------------------------------------------------------------- saving and loading
def _stem(name: str) -> str:
    return name[:-3] if name.endswith(".pt") else name


def save_system(net: nn.Module, folder: str | Path, name: str) -> None:
    """Write ``<folder>/<name>.pt`` (weights, dendrite structure, growth history) and, for the
    tracked model, the tracker's state beside it, so ``load_system`` can continue the run."""
    tracker = GPA.pai_tracker
    tracked = tracker.model is net and tracker.grower is not None
    write_system(net, folder, _stem(name), tracker.grower.history if tracked else None,
                 tracker.state_dict() if tracked else None)


def load_system(net: nn.Module, folder: str | Path, name: str, load_from_restart: bool = False,
                switch_call: bool = False, load_from_manual_save: bool = False) -> nn.Module:
    """Load ``<folder>/<name>.pt`` into ``net`` (resized to the saved dendrite count); returns it.

    When ``net`` is the tracked model, its tracker starts again from the file: with the saved
    tracker state (``latest``, or any ``save_system`` file) the scores and growth decisions
    continue where they were; otherwise they start afresh. Call ``setup_optimizer`` next.
    """
    model = adopt(load(Path(folder) / f"{_stem(name)}.pt", net), GPA.pc)
    tracker = GPA.pai_tracker
    if tracker.model is net:
        fresh = PAITracker(tracker.pc, model, tracker.config, generation=tracker.generation,
                           save_name=str(tracker.files.folder), doing_pai=tracker.doing_pai,
                           making_graphs=tracker.files.graphs)
        fresh.recipe = tracker.recipe
        state = read_tracker_state(folder, _stem(name))
        if state is not None:
            fresh.load_state_dict(state)
        GPA.pai_tracker = fresh
    return model


def load_pretrained_model(net: nn.Module, folder: str | Path, name: str,
                          remove_dendrite_scaffolding: bool = False) -> nn.Module:
    """Load weights and dendrites for transfer learning; with ``remove_dendrite_scaffolding``,
    return :func:`perforate.export`'s plain model (dendrites fused, nothing left to grow)."""
    model = adopt(load(Path(folder) / f"{_stem(name)}.pt", net), GPA.pc)
    return keep_forms(model, export(model)) if remove_dendrite_scaffolding else model


def from_hf_pretrained(net: nn.Module, repo_id: str | Path, force_download: bool = False) -> nn.Module:
    """Load a model published for the Hugging Face Hub into ``net``, from a local folder.

    ``repo_id`` is a folder holding ``model.safetensors`` (and optionally ``config.json``), or a
    Hub id already in the local Hugging Face cache: nothing is downloaded (fetch it once with
    ``huggingface-cli download <id> --local-dir <folder>``). ``config.json``'s ``pai_config``
    is applied to ``GPA.pc`` first, as perforatedai does. ``model.safetensors`` is either a
    :func:`perforate.save` file (``net`` is then the un-wrapped architecture, rebuilt with its
    dendrites) or a plain state dict that fits ``net``. Returns the model.
    """
    folder = _local_repo(str(repo_id))
    if force_download:
        GPA.pc.note("force_download", "UPA.from_hf_pretrained: force_download is ignored, perforate "
                    f"fetches nothing and reads the local copy in {folder}")
    config_file = folder / "config.json"
    if config_file.is_file():
        try:
            data = json.loads(config_file.read_text())
        except (OSError, ValueError) as exc:
            raise CompatConfigError(f"cannot read {config_file}: {exc}; it must be JSON (the "
                                    "'pai_config' entry holds the settings)") from exc
        if isinstance(data, dict) and isinstance(data.get("pai_config"), dict):
            set_gpa_config(data["pai_config"])
    weights = folder / "model.safetensors"
    if not weights.is_file():
        raise CheckpointError(f"{folder} has no model.safetensors; from_hf_pretrained reads the "
                              "folder a model was published from (model.safetensors, config.json)")
    try:
        with safe_open(str(weights), framework="pt", device="cpu") as f:
            perforate_file = CHECKPOINT_DOC_KEY in (f.metadata() or {})
    except Exception as exc:  # safetensors raises its own error types for damaged headers
        raise CheckpointError(f"{weights} is not a safetensors file: {exc}") from exc
    if perforate_file:
        return adopt(load(weights, net), GPA.pc)
    state = load_file(str(weights))
    try:
        net.load_state_dict(state, strict=bool(GPA.pc.value("strict_loading")))
    except RuntimeError as exc:
        raise CheckpointError(f"{weights} does not fit this model: {exc}; pass the architecture "
                              "it was saved from (un-wrapped)") from exc
    return net


def upload_to_huggingface(model: nn.Module, repo_id: str, *args: Any, **kwargs: Any) -> str:
    """Not provided: perforate sends nothing over the network. Raises :class:`CompatUsageError`
    saying how to write the folder that :func:`from_hf_pretrained` reads, to upload it yourself."""
    raise CompatUsageError(
        "UPA.upload_to_huggingface: perforate uploads nothing; write the folder with "
        "pf.save(model, '<folder>/model.safetensors') and a config.json holding "
        "{'pai_config': UPA.extract_gpa_config()}, then upload it (huggingface-cli upload "
        f"{repo_id} <folder>); UPA.from_hf_pretrained reads it back")


def _local_repo(repo_id: str) -> Path:
    """The folder ``repo_id`` names, or its snapshot in the local Hugging Face cache."""
    if Path(repo_id).is_dir():
        return Path(repo_id)
    where = "is not a folder here"
    try:
        from huggingface_hub import snapshot_download
    except ImportError:
        snapshot_download = None
    if snapshot_download is not None:
        try:  # local_files_only: the cache is read, the network is not touched
            return Path(snapshot_download(repo_id, local_files_only=True))
        except Exception:  # noqa: BLE001 - any miss means the same thing here: not cached
            where += " nor in the local Hugging Face cache"
    raise CompatUsageError(f"UPA.from_hf_pretrained: {repo_id!r} {where}; perforate downloads "
                           f"nothing: fetch it once (huggingface-cli download {repo_id} --local-dir "
                           "<folder>) and pass the folder")


def pai_save_system(net: nn.Module, folder: str | Path, name: str) -> None:
    """Does nothing, as in the reference's open package (lean ``_pai`` copies are a paid feature);
    :func:`perforate.export` gives a lean inference model."""


def prepare_final_model(net: nn.Module) -> nn.Module:
    """The inference model: :func:`perforate.export` (plain modules, dendrites fused)."""
    return keep_forms(net, export(net))


# ---------------------------------------------------------------------- small helpers
def count_params(net: nn.Module) -> int:
    """Parameters inference needs (tied weights once; pb candidates not at all)."""
    return count_parameters(net)


def deep_copy_pai(net: nn.Module) -> nn.Module:
    """An independent copy (e.g. a DQN target network or an EMA model)."""
    return copy.deepcopy(net)


def get_pai_modules(net: nn.Module, depth: int = 0) -> list[nn.Module]:
    """The wrapped layers (:class:`perforate.DendriticLayer`), in model order."""
    return list(dendritic_layers(net).values())


def extract_gpa_config() -> dict[str, Any]:
    """The JSON-able settings of ``GPA.pc``."""
    return GPA.pc.to_dict()


def set_gpa_config(settings: dict[str, Any]) -> None:
    """Set every ``name: value`` of ``settings`` with ``GPA.pc.set_<name>``."""
    for name, value in settings.items():
        getattr(GPA.pc, f"set_{name}")(value)
