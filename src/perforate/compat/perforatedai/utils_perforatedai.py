"""``UPA``: converting a model, saving and loading it, counting its parameters (the reference's utils).

``initialize_pai`` (3.0/3.1) and ``perforate_model`` (3.2) convert the model in place with
:func:`perforate.perforate`, the modules chosen by the ``GPA.pc`` lists, and give
``GPA.pai_tracker`` a tracker for it. Checkpoints are :func:`perforate.save` files (safetensors
plus JSON), whatever ``using_safe_tensors`` says: nothing here writes or loads a pickle.
"""
from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ...checkpoint import load
from ...convert import dendritic_layers
from ...export import export
from ...measure import count_parameters
from . import globals_perforatedai as GPA
from . import knobs, selection
from .outputs import read_tracker_state, write_system
from .tracker import PAITracker

__all__ = [
    "convert_network", "count_params", "deep_copy_pai", "extract_gpa_config", "get_pai_modules",
    "initialize_pai", "load_pretrained_model", "load_system", "pai_save_system", "perforate_model",
    "prepare_final_model", "save_system", "set_gpa_config",
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
    else:
        model, config = selection.convert(model, pc, generation, config)
    GPA.pai_tracker = PAITracker(pc, model, config, generation=generation, save_name=save_name,
                                 doing_pai=doing_pai, making_graphs=making_graphs)
    if doing_pai and pc.value("testing_dendrite_capacity"):
        pc.note("capacity-start", "perforate: testing_dendrite_capacity is on (the perforatedai "
                "default): a dendrite is added every epoch and training completes after 3; call "
                "GPA.pc.set_testing_dendrite_capacity(False) before converting for a real run")
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
    model = load(Path(folder) / f"{_stem(name)}.pt", net)
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
    model = load(Path(folder) / f"{_stem(name)}.pt", net)
    return export(model) if remove_dendrite_scaffolding else model


def pai_save_system(net: nn.Module, folder: str | Path, name: str) -> None:
    """Does nothing, as in the reference's open package (lean ``_pai`` copies are a paid feature);
    :func:`perforate.export` gives a lean inference model."""


def prepare_final_model(net: nn.Module) -> nn.Module:
    """The inference model: :func:`perforate.export` (plain modules, dendrites fused)."""
    return export(net)


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
