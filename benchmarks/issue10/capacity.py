"""Can a dendritic architecture beat width at all? Train from scratch (no growth decisions).

Plain models at a ladder of widths against narrow models built with K dendrites per wrapped
layer from the start (gd: dendrites train by backprop), same epochs, best validation epoch
kept. A dendritic layout that loses here cannot win through growth either.

Run: OMP_NUM_THREADS=1 python benchmarks/issue10/capacity.py mnist1d mlp 150 4,8,16,32 8:1:*,8:3:*
(each dendritic spec is width:dendrites:include-glob[:activation])
"""
from __future__ import annotations

import json
import statistics
import sys

import torch

import perforate as pf
from perforate.experiments.data.datasets import load_dataset
from perforate.experiments.data.models import build_model

sys.path.insert(0, __file__.rsplit("/", 1)[0])
from levers import train  # noqa: E402

torch.set_num_threads(1)


def main():
    ds, model, epochs = sys.argv[1], sys.argv[2], int(sys.argv[3])
    widths = [int(w) for w in sys.argv[4].split(",") if w]
    specs = [s.split(":") for s in sys.argv[5].split(",")] if len(sys.argv) > 5 and sys.argv[5] else []
    seeds = int(sys.argv[6]) if len(sys.argv) > 6 else 3
    lr, batch = 1e-2, (100 if ds in ("mnist1d", "digits") else 32)
    out = []
    jobs = [(w, 0, "*", "sigmoid") for w in widths] + [
        (int(s[0]), int(s[1]), s[2], s[3] if len(s) > 3 else "sigmoid") for s in specs]
    for w, k, inc, act in jobs:
        tests, params = [], 0
        for seed in range(seeds):
            d = load_dataset(ds, seed=seed)
            m = build_model(model, d, w, seed=seed)
            if k:
                m = pf.perforate(m, pf.Config(dendrite_activation=act, include=[inc]))
                g = torch.Generator().manual_seed(seed)
                for layer in pf.dendritic_layers(m).values():
                    layer.add_dendrites(k, g)
            _, t, _ = train(m, d, epochs, lr, batch, seed)
            tests.append(t)
            params = pf.count_parameters(m)
        row = {"width": w, "dendrites": k, "include": inc, "act": act, "params": params,
               "mean": statistics.mean(tests), "std": statistics.stdev(tests), "tests": tests}
        out.append(row)
        print(f"{ds}/{model} w{w} k{k} {inc} {act}: params {params} test {row['mean']:.2f} ± {row['std']:.2f}", flush=True)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
