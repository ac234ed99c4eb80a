"""Per run of a frontier results.json's dendritic arms: seed, width, test/val gain over the plain
run of its width, dendrites kept, best epoch (plain's) and the grower's decisions, to read why an
arm gains or loses.

    python benchmarks/issue20/frontier_events.py results/.../results.json [ARM ...]
"""
from __future__ import annotations

import json
import sys


def main(path: str, arms: list[str]) -> None:
    runs = json.load(open(path))["runs"]
    plain = {(r["width"], r["seed"]): r for r in runs if r["arm"] == "plain"}
    for r in sorted(runs, key=lambda r: (r["arm"], r["width"], r["seed"])):
        if r["arm"] == "plain" or (arms and r["arm"] not in arms) or (r["width"], r["seed"]) not in plain:
            continue
        p = plain[(r["width"], r["seed"])]
        ev = " ".join(f"{d['event']}@{d['epoch']}" for d in r["decisions"] if d["event"] not in ("hold", "done", "join"))
        print(f"{r['arm']:10s} w{r['width']} s{r['seed']} test {r['test_score'] - p['test_score']:+.1f} "
              f"val {r['val_score'] - p['val_score']:+.1f} dend {r['dendrites']} best@{r['best_epoch']} "
              f"(plain@{p['best_epoch']}) {ev}")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2:])
