"""How the reports write numbers: mean ± std and counts with a unit."""
from __future__ import annotations

import math


def pm(stats: dict[str, float] | None, digits: int = 2, scale: float = 1.0,
       sign: bool = False) -> str:
    """"mean ± std" ("mean" alone for one value, "–" for none); ``sign`` writes "+" too."""
    if not stats or stats.get("n", 0) == 0 or stats["mean"] is None or math.isnan(stats["mean"]):
        return "–"
    mean, std = stats["mean"] * scale, stats["std"] * scale
    text = f"{mean:{'+' if sign else ''}.{digits}f}"
    return text if stats["n"] == 1 else f"{text} ± {std:.{digits}f}"


def count(x: float) -> str:
    """A parameter or FLOP count in three digits: "1.23M", "45.6k", "812" ("–" for none)."""
    if x is None or math.isnan(x):
        return "–"
    for unit, div in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(x) >= div:
            return f"{x / div:.3g}{unit}"
    return f"{x:.0f}"
