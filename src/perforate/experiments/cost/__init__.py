"""``perforate bench cost``: run-time costs (:mod:`.bench`), the cost of growth itself
(:mod:`.growth`) and perforatedai's on the same model (:mod:`.reference`).

The names below were importable from ``perforate.experiments.cost`` when it was one module;
they still are (each loaded on first use).
"""
from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {name: "bench" for name in ("TARGETS", "CASE_TARGETS", "WIDE_UNITS", "WIDE_LAYER_TARGET",
                                        "render_table", "reference_line", "run_cost", "cost_command")}


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
