"""What the frontier says: plain envelopes (:func:`pareto`, :func:`frontier_at`) and each grown
point's distance to them and gain over its starting width (:func:`derive`)."""
from __future__ import annotations

import math
from typing import Any

from perforate.experiments.frontier.protocol import CONTROL, PLAIN
from perforate.experiments.harness import results as res


def pareto(points: list[tuple[float, float]], maximize: bool = True) -> list[tuple[float, float]]:
    """The envelope of (cost, score) points: sorted by cost, each beats every cheaper one
    (higher scores beat lower ones, or lower beat higher with ``maximize=False``)."""
    sign = 1.0 if maximize else -1.0
    out: list[tuple[float, float]] = []
    for cost, score in sorted(points, key=lambda p: (p[0], -sign * p[1])):
        if not out or sign * score > sign * out[-1][1]:
            out.append((cost, score))
    return out


def frontier_at(front: list[tuple[float, float]], cost: float) -> float:
    """The envelope's score at ``cost``: linear in log-cost between its points, flat outside."""
    if cost <= front[0][0]:
        return front[0][1]
    for (c0, s0), (c1, s1) in zip(front, front[1:]):
        if cost <= c1:
            t = (math.log(cost) - math.log(c0)) / (math.log(c1) - math.log(c0))
            return s0 + t * (s1 - s0)
    return front[-1][1]


def _key(width: float) -> str:
    """A width as a key of the ladder: "8", "0.5"."""
    return f"{width:g}" if isinstance(width, float) else str(width)


def _ladder(by_seed: dict[int, dict[float, dict]]) -> dict[str, dict]:
    """Mean ± std over seeds of each width's test score, parameters and FLOPs."""
    ladder = {}
    for width in sorted({w for by_width in by_seed.values() for w in by_width}):
        rows = [by_width[width] for by_width in by_seed.values() if width in by_width]
        ladder[_key(width)] = {m: res.mean_std([r[m] for r in rows])
                              for m in ("test_score", "params", "flops_per_sample")}
    return ladder


def _against(r: dict[str, Any], ladders: dict[str, dict[int, dict[float, dict]]],
             maximize: bool = True) -> dict[str, dict]:
    """Run ``r``'s signed distance (positive is better) to each ladder of its seed with at least
    2 widths, at equal parameters and equal FLOPs, and to the envelope of all of them
    (``best``). A sparse control's ladder counts only where it reaches down to ``r``'s parameter
    count (its frontier is not extended below its narrowest width); the dense ladder always
    counts. Costs that were not counted (FLOPs of some models) are left out."""
    sign = 1.0 if maximize else -1.0
    out: dict[str, dict] = {}
    pooled: dict[str, list] = {"params": [], "flops_per_sample": []}

    def distance(pts: list) -> dict[str, float]:
        return {cost: sign * (r["test_score"] - frontier_at(pareto(p, maximize), r[cost]))
                for cost, p in pts.items() if r.get(cost) is not None and len(p) >= 2}

    for name, by_seed in ladders.items():
        rows = list(by_seed.get(r["seed"], {}).values())
        if len(rows) < 2 or (name != PLAIN and min(q["params"] for q in rows) > r["params"]):
            continue
        pts = {cost: [(q[cost], q["test_score"]) for q in rows if q.get(cost) is not None]
               for cost in pooled}
        for cost in pooled:
            pooled[cost] += pts[cost]
        out[name] = distance(pts)
    if out:
        out["best"] = distance(pooled)
    return out


def _control_summary(rows: list[dict[str, Any]], ladders, maximize: bool = True) -> dict[str, Any]:
    """Distances of runs ``rows`` to each plain ladder and to all of them, mean ± std over
    seeds, and the plain ladder whose frontier lies best at their parameters."""
    per = [_against(r, ladders, maximize) for r in rows]
    names = [n for n in ladders if all(n in d for d in per)]  # ladders that reach this size
    summary = {n: {"distance": res.mean_std([d[n].get("params") for d in per]),
                   "distance_flops": res.mean_std([d[n].get("flops_per_sample") for d in per])}
               for n in names}
    best_plain = None
    if names:  # the ladder whose frontier is best here: the smallest distance to it
        best_plain = min(names, key=lambda n: summary[n]["distance"]["mean"])
    best = {}
    if per and all("best" in d for d in per):
        dist = [d["best"].get("params") for d in per]
        dist_f = [d["best"].get("flops_per_sample") for d in per]
        best = {"distance_best": res.mean_std(dist),
                "above_best": sum(x > 0 for x in dist if x is not None),
                "distance_best_flops": res.mean_std(dist_f),
                "above_best_flops": sum(x > 0 for x in dist_f if x is not None)}
    return {"against": summary, "best_plain": best_plain, **best}


def derive(runs: list[dict[str, Any]], maximize: bool = True) -> dict[str, Any]:
    """The plain ladder (mean ± std per width) and, per dendritic (arm, width), its distance to
    the same seed's plain frontier at equal parameters and FLOPs and its gain over its width.

    Distances and gains are signed so that positive is better: score minus frontier when the
    score is maximised, frontier minus score when it is minimised (``maximize=False``). FLOPs
    distances are left out (NaN) for runs whose FLOPs could not be counted.

    With plain sparse controls (arms ``plain-*``): their ladders (``controls``), each control
    width's distance to the dense frontier (``control_points``), and each point's distance to
    every ladder (``against``), to the envelope of all (``distance_best``) and the ladder that
    is best at its parameters (``best_plain``)."""
    ladders: dict[str, dict[int, dict[float, dict]]] = {}
    for r in runs:
        if r["arm"] == PLAIN or r["arm"].startswith(f"{PLAIN}-"):
            ladders.setdefault(r["arm"], {}).setdefault(r["seed"], {})[r["width"]] = r
    plain = ladders.get(PLAIN, {})
    controls = {arm: _ladder(by_seed) for arm, by_seed in ladders.items() if arm != PLAIN}
    points = []
    for arm, width in sorted({(r["arm"], r["width"]) for r in runs if r["arm"] not in ladders}):
        rows = [r for r in runs if r["arm"] == arm and r["width"] == width and len(plain.get(r["seed"], {})) >= 2]
        if not rows:
            continue
        points.append(_point(arm, width, rows, plain, maximize))
        if arm.startswith(CONTROL):  # the grown arm against its control, paired by seed
            points[-1].update(_against_control(arm, width, rows, runs, maximize))
        if controls:
            points[-1].update(_control_summary(rows, ladders, maximize))
    out = {"ladder": _ladder(plain), "points": points}
    if controls:
        out.update(controls=controls, control_points=_control_points(ladders, maximize))
    return out


def _control_points(ladders: dict[str, dict[int, dict[float, dict]]],
                    maximize: bool) -> list[dict[str, Any]]:
    """Each sparse control width's distance to the dense plain frontier of its seeds."""
    plain = ladders.get(PLAIN, {})
    control_points = []
    for arm in (a for a in ladders if a != PLAIN):
        for width in sorted({w for by_width in ladders[arm].values() for w in by_width}):
            rows = [by_width[width] for s, by_width in ladders[arm].items()
                    if width in by_width and len(plain.get(s, {})) >= 2]
            if rows:
                dist = [_against(r, {PLAIN: plain}, maximize)[PLAIN] for r in rows]
                control_points.append({
                    "arm": arm, "width": width, "seeds": [r["seed"] for r in rows],
                    **{m: res.mean_std([r[m] for r in rows]) for m in ("test_score", "params", "flops_per_sample")},
                    "distance": res.mean_std([d.get("params") for d in dist]),
                    "above": sum(d.get("params", 0) > 0 for d in dist),
                    "distance_flops": res.mean_std([d.get("flops_per_sample") for d in dist])})
    return control_points


def _point(arm: str, width: float, rows: list[dict[str, Any]],
           plain: dict[int, dict[float, dict]], maximize: bool) -> dict[str, Any]:
    """One dendritic (arm, width) over its seeds ``rows``: the distance to each seed's plain
    frontier at equal parameters and FLOPs, and the gain over the plain run of its width."""
    sign = 1.0 if maximize else -1.0
    dist: dict[str, list[float]] = {"params": [], "flops_per_sample": []}
    gain = []
    for r in rows:
        ladder_s = plain[r["seed"]].values()
        for cost in dist:
            known = [(q[cost], q["test_score"]) for q in ladder_s if q.get(cost) is not None]
            if r.get(cost) is None or len(known) < 2:
                continue
            front = pareto(known, maximize)
            dist[cost].append(sign * (r["test_score"] - frontier_at(front, r[cost])))
        if width in plain[r["seed"]]:
            gain.append(sign * (r["test_score"] - plain[r["seed"]][width]["test_score"]))
    return {
        "arm": arm, "width": width, "seeds": [r["seed"] for r in rows],
        **{m: res.mean_std([r[m] for r in rows])
           for m in ("test_score", "params", "flops_per_sample", "dendrites", "epochs", "seconds")},
        "distance": res.mean_std(dist["params"]), "above": sum(d > 0 for d in dist["params"]),
        "distance_flops": res.mean_std(dist["flops_per_sample"]),
        "above_flops": sum(d > 0 for d in dist["flops_per_sample"]),
        "gain": res.mean_std(gain) if gain else None, "gain_per_seed": gain,
        "better": sum(g > 0 for g in gain), "worse": sum(g < 0 for g in gain),
    }


def _against_control(arm: str, width: float, rows: list[dict[str, Any]],
                     runs: list[dict[str, Any]], maximize: bool) -> dict[str, Any]:
    """A ``control-<arm>`` point: the grown arm's score minus its control's, paired by seed."""
    sign = 1.0 if maximize else -1.0
    grown = {r["seed"]: r for r in runs if r["arm"] == arm[len(CONTROL):] and r["width"] == width}
    diffs = [sign * (grown[r["seed"]]["test_score"] - r["test_score"])
             for r in rows if r["seed"] in grown]
    return {"grown_minus_control": res.mean_std(diffs) if diffs else None,
            "control_width": res.mean_std([r.get("control_width") for r in rows])}
