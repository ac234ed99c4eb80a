"""Cost sense for a frontier: how many runs, about how long, and what a time cap drops.

The estimate comes from one timed epoch (validation included) of the narrowest and the widest
plain model, taken as linear in the parameter count between them. A plain sparse control
(``plain-<choice>``) is costed as the dense model of its width (``-xN``: N times its
parameters). A dendritic run is costed as
a plain model of twice its starting width's parameters (a dendrite of the default shape copies
its layer's input weights), the reference arm as three times that (its graphs). Every run is
costed at its full epoch budget, so runs that stop early make the total an upper bound.

A cap (``max_minutes``) drops, in this order, until the estimate fits:

1. seeds beyond the first 2, the last first;
2. ladder widths strictly between the narrowest and the widest that no arm grows from, the
   widest of them first (the frontier gets coarser, never shorter);
3. seeds beyond the first, the last first (one seed cannot settle a verdict, and says so);
4. starting widths of the grown arms beyond the first (narrowest), the widest first.

The cap counts from the start of the preparation (the timed epochs included).

If even that does not fit, nothing runs and the error says what the smallest plan would take.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Callable

from perforate.errors import ExperimentError

__all__ = ["Costs", "TRIM_ORDER", "estimate_seconds", "trim"]

TRIM_ORDER = ("seeds beyond 2", "middle ladder widths (widest first)", "seeds beyond 1",
              "starting widths beyond the narrowest (widest first)")
"""What a time cap drops, in order (see the module)."""

_DENDRITIC_SCALE = 2.0
_REFERENCE_SLOWDOWN = 3.0


@dataclass(frozen=True)
class Costs:
    """Measured cost of an epoch: (parameters, seconds) of the narrowest and widest plain
    model, and the parameter count of every width."""

    narrow: tuple[int, float]
    wide: tuple[int, float]
    params: dict[float, int]

    def epoch_seconds(self, params: float) -> float:
        """Seconds of an epoch of a model with ``params`` parameters (linear in them)."""
        (p0, t0), (p1, t1) = self.narrow, self.wide
        if p1 == p0:
            return max(t0, t1)
        slope = max(0.0, (t1 - t0) / (p1 - p0))
        return max(1e-4, t0 + slope * (params - p0))

    def run_seconds(self, arm: str, width: float, epochs: int) -> float:
        """At most how long one run of ``arm`` from ``width`` takes."""
        params = self.params[width]
        if arm == "plain":
            return self.epoch_seconds(params) * epochs
        if arm.startswith("plain-"):  # a sparse control: a dense model's compute (-xN: N times)
            _, _, expand = arm.partition("-x")
            return self.epoch_seconds(params * (int(expand) if expand.isdigit() else 1)) * epochs
        seconds = self.epoch_seconds(_DENDRITIC_SCALE * params) * epochs
        return seconds * (_REFERENCE_SLOWDOWN if arm == "reference" else 1.0)


def estimate_seconds(runs: list, costs: Costs, done: set[str], epochs: int) -> float:
    """Seconds of the planned ``runs`` (``arm``, ``width``, ``run_id``) not in ``done`` (run
    ids), each at its full budget of ``epochs``."""
    return sum(costs.run_seconds(r.arm, r.width, epochs) for r in runs if r.run_id not in done)


def trim(protocol, seconds: Callable[[object], float], budget: float):
    """Drop seeds and widths in :data:`TRIM_ORDER` until ``seconds(protocol) <= budget``;
    returns (the protocol that fits, what was dropped in words). Raise ExperimentError when the
    smallest plan does not fit either."""
    dropped: list[str] = []
    p = protocol

    def fits() -> bool:
        return seconds(p) <= budget

    def seeds_down_to(n: int) -> None:
        nonlocal p
        while not fits() and len(p.seeds) > n:
            dropped.append(f"seed {p.seeds[-1]}")
            p = dataclasses.replace(p, seeds=p.seeds[:-1])

    seeds_down_to(2)
    grown = set(p.grow_widths) | set(p.reference_widths or [])
    while not fits():
        ends = {min(p.widths), max(p.widths)}
        middle = sorted((w for w in p.widths if w not in ends and w not in grown), reverse=True)
        if not middle:
            break
        dropped.append(f"ladder width {middle[0]}")
        p = dataclasses.replace(p, widths=[w for w in p.widths if w != middle[0]])
    seeds_down_to(1)
    while not fits() and len(p.grow_widths) > 1:
        widest = max(p.grow_widths)
        dropped.append(f"starting width {widest}")
        refs = None if p.reference_widths is None else [w for w in p.reference_widths if w != widest] or None
        p = dataclasses.replace(p, grow_widths=[w for w in p.grow_widths if w != widest],
                                reference_widths=refs)
    if not fits():
        raise ExperimentError(
            f"the smallest plan ({len(p.widths)} plain widths, {len(p.grow_widths)} starting "
            f"width(s), 1 seed) takes about {seconds(p) / 60:.1f} min, more than the "
            f"{budget / 60:.1f} min cap: raise --max-minutes (max_minutes), or lower the epochs "
            "or the widest width")
    return p, dropped
