"""Per dendritic (arm, width) of a frontier results.json: gain over the plain model of its width
(paired by seed) on test and validation, mean ± std and seeds better/worse/equal; dendrites kept;
distance to the same seed's plain frontier at equal parameters. Runs from after the harness's
shadow-validation fix (125d250), so every run's validation score is counted.

    python benchmarks/issue20/frontier_table.py results/issue20-frontier-digits-cnn2d-harness/results.json
"""
from __future__ import annotations

import json
import statistics
import sys

from perforate.experiments.frontier.distances import derive


def ms(xs: list[float]) -> str:
    sd = statistics.stdev(xs) if len(xs) > 1 else 0.0
    return f"{statistics.mean(xs):+.2f} ± {sd:.2f}"


def bwe(xs: list[float], tol: float = 1e-9) -> str:
    return f"{sum(x > tol for x in xs)}/{sum(x < -tol for x in xs)}/{sum(abs(x) <= tol for x in xs)}"


def main(path: str) -> None:
    doc = json.load(open(path))
    runs = doc["runs"]
    plain = {(r["width"], r["seed"]): r for r in runs if r["arm"] == "plain"}
    widths = sorted({r["width"] for r in runs if r["arm"] == "plain"})
    seeds = sorted({r["seed"] for r in runs if r["arm"] == "plain"})
    print(f"seeds: {len(seeds)}; plain ladder (test %): " + ", ".join(
        f"w{w} {statistics.mean(plain[(w, s)]['test_score'] for s in seeds if (w, s) in plain):.2f}"
        f" ({plain[(w, seeds[0])]['params']} p)" for w in widths))
    dist = {(p["arm"], p["width"]): p for p in derive(runs)["points"]}
    print("| arm | from | n | test gain ± std (b/w/e) | val gain ± std (b/w/e) | runs w/ dendrites, mean | params | dist. to plain frontier (above) | worst seed test / val |")
    print("|---|---|---|---|---|---|---|---|---|")
    for (arm, width), p in sorted(dist.items(), key=lambda kv: (kv[0][1], kv[0][0])):
        rs = sorted((r for r in runs if r["arm"] == arm and r["width"] == width and (width, r["seed"]) in plain),
                    key=lambda r: r["seed"])
        gt = [r["test_score"] - plain[(width, r["seed"])]["test_score"] for r in rs]
        gv = [r["val_score"] - plain[(width, r["seed"])]["val_score"] for r in rs]
        dk = [r["dendrites"] for r in rs]
        d = p["distance"]
        print(f"| {arm} | {width} | {len(rs)} | {ms(gt)} ({bwe(gt)}) | {ms(gv)} ({bwe(gv)}) | "
              f"{sum(x > 0 for x in dk)}/{len(rs)}, {statistics.mean(dk):.1f} | "
              f"{statistics.mean(r['params'] for r in rs):.0f} | {d['mean']:+.2f} ± {d['std']:.2f} ({p['above']}/{len(rs)}) | "
              f"{min(gt):+.1f} / {min(gv):+.1f} |")


if __name__ == "__main__":
    for path in sys.argv[1:]:
        print(f"\n{path}")
        main(path)
