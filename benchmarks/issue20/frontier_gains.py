"""Gain of each dendritic arm over the plain model of its width (paired by seed), on test and on
validation, from a frontier results.json. Shadow runs written before the harness fix (commit
"harness: a kept epoch from a trial's shadow run ...") may carry the grown model's validation
score when their kept epoch lies inside a trial that ended in "continue": those are left out of the
validation gain and counted.

    python benchmarks/issue20/frontier_gains.py results/issue20-frontier-mnist1d-mlp-harness/results.json
"""
from __future__ import annotations

import json
import statistics
import sys
from collections import defaultdict


def suspect(run: dict) -> bool:
    start = None
    for d in run.get("decisions", []):
        if d["event"] in ("grow", "retry", "dendrite_start"):
            start = d["epoch"] if start is None else start
        elif d["event"] == "continue" and start is not None:
            if start < run["best_epoch"] <= d["epoch"]:
                return True
            start = None
    return False


def main(path: str) -> None:
    runs = json.load(open(path))["runs"]
    plain = {(r["width"], r["seed"]): r for r in runs if r["arm"] == "plain"}
    cells = defaultdict(list)
    for r in runs:
        if r["arm"] != "plain" and (r["width"], r["seed"]) in plain:
            cells[(r["arm"], r["width"])].append(r)
    print("| arm | from width | seeds | test gain (mean, per seed) | val gain (mean, per seed) | val runs left out |")
    print("|---|---|---|---|---|---|")
    for (arm, width), rs in sorted(cells.items()):
        rs.sort(key=lambda r: r["seed"])
        gt = [r["test_score"] - plain[(width, r["seed"])]["test_score"] for r in rs]
        ok = [r for r in rs if not (arm.endswith("shadow") and suspect(r))]
        gv = [r["val_score"] - plain[(width, r["seed"])]["val_score"] for r in ok]
        fmt = lambda xs: (f"{statistics.mean(xs):+.2f} ({', '.join(f'{x:+.1f}' for x in xs)})" if xs else "n/a")
        print(f"| {arm} | {width} | {len(rs)} | {fmt(gt)} | {fmt(gv)} | {len(rs) - len(ok)} |")


if __name__ == "__main__":
    main(sys.argv[1])
