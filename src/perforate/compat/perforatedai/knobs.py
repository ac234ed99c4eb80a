"""Every ``GPA.pc`` setting of the reference library: its default and what perforate does with it.

Effects:

- ``USED``: steers perforate (through :class:`perforate.Config` or the compat tracker);
- ``NOT_NEEDED``: accepted silently; perforate needs no such switch (it never stops to ask,
  new dendrites follow their layer's device and dtype, checkpoints are always safe);
- ``UNSUPPORTED``: accepted; setting it explicitly to a value other than ``honoured`` (the
  behaviour perforate has) logs one line saying what perforate does instead.

Defaults are those of perforatedai 3.2.9 (shared/reference/perforatedai-api.md §5). A scalar
setting that holds a list is a schedule by dendrite count; ``is_list`` settings hold lists.
"""
from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from typing import Any, Callable

import torch
from torch import nn

from ... import Config, ConfigError
from ...integration_api import DENDRITE_ACTIVATIONS
from .errors import CompatConfigError

USED, NOT_NEEDED, UNSUPPORTED = "used", "not_needed", "unsupported"
ANY = object()
"""``honoured`` for settings perforate has no counterpart of: any explicit value is noted."""

CONV_AND_LINEAR = [nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear]


@dataclass(frozen=True)
class Knob:
    name: str
    default: Any
    effect: str = USED
    is_list: bool = False
    honoured: Any = ANY
    note: str = ""

    def fresh_default(self) -> Any:
        return copy.copy(self.default) if isinstance(self.default, list) else self.default


def _knobs() -> list[Knob]:
    device = "cuda" if torch.cuda.is_available() else "cpu"
    return [
        # switching
        Knob("switch_mode", 1),
        Knob("n_epochs_to_switch", 10),
        Knob("history_lookback", 1),
        Knob("initial_history_after_switches", 0, UNSUPPORTED, honoured=0,
             note="patience counts from the restructure itself"),
        Knob("fixed_switch_num", 250),
        Knob("first_fixed_switch_num", -1),
        Knob("reset_best_score_on_switch", True, NOT_NEEDED),
        Knob("param_vals_setting", 1),
        Knob("testing_dendrite_capacity", True),
        # acceptance, retries, growth
        Knob("maximizing_score", True),
        Knob("improvement_threshold", [0.001, 0.0001, 0.0]),
        Knob("improvement_threshold_raw", 1e-5),
        Knob("max_dendrite_tries", 2),
        Knob("max_dendrites", 100),
        Knob("retain_all_dendrites", False, UNSUPPORTED, honoured=False,
             note="dendrites that did not beat the best score are always rolled back"),
        Knob("find_best_lr", True, UNSUPPORTED, honoured=False,
             note="no learning-rate search; the LR schedule restarts after each restructure"),
        Knob("dont_give_up_unless_learning_rate_lowered", True, UNSUPPORTED, honoured=False,
             note="growth is decided by n_epochs_to_switch patience alone"),
        Knob("candidate_weight_initialization_multiplier", 0.01),
        Knob("candidate_weight_init_by_main", False, UNSUPPORTED, honoured=False,
             note="new dendrites use the layer's default initialisation times init_scale"),
        Knob("pai_forward_function", torch.sigmoid),
        Knob("global_candidates", 1),
        Knob("learn_dendrites_live", False, NOT_NEEDED),
        Knob("no_extra_n_modes", True, NOT_NEEDED),
        Knob("d_type", torch.float32, NOT_NEEDED),
        # which modules get dendrites, shapes
        Knob("modules_to_convert", CONV_AND_LINEAR, is_list=True),
        Knob("module_names_to_convert", ["PAISequential"], is_list=True),
        Knob("module_ids_to_convert", [], is_list=True),
        Knob("modules_to_perforate", [], is_list=True),
        Knob("module_names_to_perforate", ["PAISequential", "Conv1d", "Conv2d", "Conv3d", "Linear"],
             is_list=True),
        Knob("module_ids_to_perforate", [], is_list=True),
        Knob("modules_to_track", [], is_list=True),
        Knob("module_names_to_track", [], is_list=True),
        Knob("module_ids_to_track", [], is_list=True),
        Knob("parameter_ids_to_track", [], NOT_NEEDED, is_list=True),
        Knob("modules_to_replace", [], is_list=True),
        Knob("replacement_modules", [], is_list=True),
        Knob("modules_with_processing", [], is_list=True),
        Knob("modules_processing_classes", [], is_list=True),
        Knob("module_names_with_processing", [], is_list=True),
        Knob("module_by_name_processing_classes", [], is_list=True),
        Knob("output_dimensions", [-1, 0, -1, -1], is_list=True),
        Knob("debugging_output_dimensions", 0, NOT_NEEDED),
        Knob("confirm_correct_sizes", False, NOT_NEEDED),
        Knob("unwrapped_modules_confirmed", False),
        Knob("checked_skipped_modules", False),
        Knob("configuration_confirmed", False, NOT_NEEDED),
        Knob("weight_tying_experimental", False, NOT_NEEDED),
        # outputs, saving, device
        Knob("save_name", "PAI"),
        Knob("drawing_pai", True),
        Knob("drawing_extra_graphs", True, NOT_NEEDED),
        Knob("save_old_graph_scores", True, NOT_NEEDED),
        Knob("test_saves", True),
        Knob("pai_saves", False, NOT_NEEDED),
        Knob("using_safe_tensors", True, UNSUPPORTED, honoured=True,
             note="checkpoints are always written as safetensors (plus JSON) and read the same way; "
                  "perforate never writes or loads pickles, so .pt files stay safe to load"),
        Knob("strict_loading", True, NOT_NEEDED),
        Knob("module_names_to_not_save", [".base_model"], NOT_NEEDED, is_list=True),
        Knob("weight_decay_accepted", True, NOT_NEEDED),
        Knob("verbose", False, NOT_NEEDED),
        Knob("extra_verbose", False, NOT_NEEDED),
        Knob("silent", False),
        Knob("device", device, NOT_NEEDED),
        Knob("use_cuda", device == "cuda", NOT_NEEDED),
        Knob("library_validation_score", "", NOT_NEEDED),
        Knob("library_extra_scores", [], NOT_NEEDED, is_list=True),
        Knob("library_extra_scores_without_graphing", [], NOT_NEEDED, is_list=True),
        Knob("config_file", None),
        Knob("dashboard_events_enabled", False, NOT_NEEDED),
        Knob("dashboard_url", "http://localhost:3002", NOT_NEEDED),
        Knob("dashboard_debug", False, NOT_NEEDED),
        # the paid package's Perforated Backpropagation settings (perforate's pb mode)
        Knob("perforated_backpropagation", False),
        Knob("p_epochs_to_switch", 2),
        Knob("cap_at_n", False),
        Knob("pai_improvement_threshold", 0.1),
        Knob("pai_improvement_threshold_raw", 1e-4, UNSUPPORTED,
             note="the dendrite phase uses the relative pai_improvement_threshold only"),
        Knob("initial_correlation_batches", 100, NOT_NEEDED),
        Knob("dendrite_update_mode", False, NOT_NEEDED),
        Knob("dendrite_graph_mode", False, NOT_NEEDED),
        Knob("debugging_memory_leak", False, NOT_NEEDED),
        Knob("pai_email", "", NOT_NEEDED),
        Knob("pai_token", "", NOT_NEEDED),
    ]


KNOBS: dict[str, Knob] = {k.name: k for k in _knobs()}

ALIASES = {
    "input_dimensions": "output_dimensions",  # 2.0.x name
    "debugging_input_dimensions": "debugging_output_dimensions",
    "n_fixed_switch_num": "fixed_switch_num",  # the name the official SKILL.md uses
}


def canonical(name: str) -> str | None:
    """The table's name for ``name`` (resolving aliases), or None when there is no such setting."""
    name = ALIASES.get(name, name)
    return name if name in KNOBS else None


# ---------------------------------------------------------------------- mapping onto Config

SOURCES = {  # Config field -> the setting it comes from (for error messages)
    "mode": "perforated_backpropagation", "patience": "n_epochs_to_switch",
    "improvement_threshold": "improvement_threshold",
    "improvement_threshold_abs": "improvement_threshold_raw", "score_mode": "maximizing_score",
    "max_dendrites": "max_dendrites", "max_growth_retries": "max_dendrite_tries",
    "dendrite_activation": "pai_forward_function", "candidates": "global_candidates",
    "init_scale": "candidate_weight_initialization_multiplier",
    "dendrite_patience": "p_epochs_to_switch", "dendrite_improvement_threshold": "pai_improvement_threshold",
}
ONLY_WHEN_SET = ("init_scale", "dendrite_patience", "dendrite_improvement_threshold")
"""Fields whose reference default differs in meaning from perforate's own default."""


def activation_name(fn: Any) -> str:
    """The registry name (``perforate.activations``) of torch.sigmoid / nn.Tanh() / F.relu / 'gelu' ..."""
    name = fn if isinstance(fn, str) else getattr(fn, "__name__", type(fn).__name__)
    name = name.lower().strip("_")
    if name not in DENDRITE_ACTIVATIONS:
        raise CompatConfigError(f"GPA.pc.set_pai_forward_function: perforate's dendrites use one of "
                                f"{list(DENDRITE_ACTIVATIONS)} (e.g. torch.sigmoid); got {fn!r}")
    return name


def config_fields(get: Callable[[str], Any], is_set: Callable[[str], bool]) -> dict[str, Any]:
    """The :class:`perforate.Config` fields the settings give (schedules already resolved)."""
    tries = get("max_dendrite_tries")
    fields = {
        "mode": "pb" if get("perforated_backpropagation") else "gd",
        "patience": get("n_epochs_to_switch"),
        "improvement_threshold": get("improvement_threshold"),
        "improvement_threshold_abs": get("improvement_threshold_raw"),
        "score_mode": "max" if get("maximizing_score") else "min",
        "max_dendrites": get("max_dendrites"),
        # the reference counts the first attempt among its tries
        "max_growth_retries": max(0, tries - 1) if isinstance(tries, int) else tries,
        "dendrite_activation": activation_name(get("pai_forward_function")),
        "candidates": get("global_candidates"),
        # the reference's rules: the tracker passes its own running score (history_lookback),
        # grows whatever the training score does, and trains candidates over epochs (p phases)
        "smoothing": 1,
        "overfit_gap": math.inf,
        "train_rise": math.inf,
        "candidate_training": "online",
        "growth_lr_scale": 1.0,  # the tracker replays the user's schedule itself
    }
    for field in ONLY_WHEN_SET:
        if is_set(SOURCES[field]):
            fields[field] = get(SOURCES[field])
    return fields


def validated(base: Config | None, fields: dict[str, Any]) -> Config:
    """``Config(**fields)`` (or ``base.replace(**fields)``); errors name the GPA.pc setting."""
    try:
        return base.replace(**fields) if base is not None else Config(**fields)
    except ConfigError as exc:
        field = str(exc).split(" ", 1)[0]
        source = SOURCES.get(field)
        where = f" (set through GPA.pc.set_{source})" if source else ""
        raise CompatConfigError(f"{exc}{where}") from exc
