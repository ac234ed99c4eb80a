"""Summarize benchmarks/issue20/noregret.py output: per arm, test and validation accuracy and the
paired gain over the plain model of the same width and seed (markdown table on stdout)."""
from __future__ import annotations

import json
import statistics
import sys
from collections import defaultdict


def main(path: str) -> None:
    rows = [json.loads(line) for line in open(path) if line.strip()]
    plain = {r["seed"]: r for r in rows if r["arm"] == "plain"}
    arms = defaultdict(list)
    for r in rows:
        arms[r["arm"]].append(r)
    print("| arm | seeds | test % (per seed) | val % (per seed) | test gain vs plain | val gain vs plain "
          "| dendrites kept | growths | continues | mean s/run |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for arm, rs in arms.items():
        rs = sorted(rs, key=lambda r: r["seed"])
        paired = [r for r in rs if r["seed"] in plain]
        gt = [r["test"] - plain[r["seed"]]["test"] for r in paired]
        gv = [r["val"] - plain[r["seed"]]["val"] for r in paired]
        mean = lambda xs: f"{statistics.mean(xs):+.2f}" if xs else "n/a"
        grows = sum(ev in ("grow", "retry", "dendrite_start") for r in rs for _, ev in r["events"])
        conts = sum(ev == "continue" for r in rs for _, ev in r["events"])
        tests = " / ".join(f"{r['test']:.1f}" for r in rs)
        vals = " / ".join(f"{r['val']:.1f}" for r in rs)
        dends = " / ".join(str(r["dendrites"]) for r in rs)
        print(f"| {arm} | {len(rs)} | {tests} | {vals} | {mean(gt)} | {mean(gv)} | {dends} | {grows} | {conts} "
              f"| {statistics.mean(r['seconds'] for r in rs):.0f} |")


if __name__ == "__main__":
    main(sys.argv[1])
