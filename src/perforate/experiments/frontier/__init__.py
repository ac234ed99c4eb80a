"""``perforate bench frontier``, ``perforate demo`` and the study API.

What a frontier experiment is (:mod:`.protocol`), how its arms run (:mod:`.runs`), what it says
(:mod:`.distances`), its report (:mod:`.report`), the time budget (:mod:`.budget`), a user's
task (:mod:`.task`), :func:`~.study.dendrites_vs_width` (:mod:`.study`) and the commands
(:mod:`.cli`).

The names below were importable from ``perforate.experiments.frontier`` when it was one module;
they still are (each loaded on first use).
"""
from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    **dict.fromkeys(("SCHEMA", "DEFAULT_VARIANTS", "REFERENCE", "CONTROL", "PLAIN",
                     "CONTROL_CHOICES", "parse_control", "FrontierProtocol"), "protocol"),
    **dict.fromkeys(("pareto", "frontier_at", "derive"), "distances"),
    **dict.fromkeys(("FrontierRun", "plan_frontier", "ArmRun", "ArmFn", "sparse_model",
                     "arm_function", "run_one", "open_frontier", "is_frontier", "load_frontier",
                     "save_frontier", "FrontierPlan", "prepare_frontier", "execute_frontier",
                     "run_frontier"), "runs"),
}


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
