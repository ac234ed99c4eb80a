"""Restricted-input dendrites built in from the start (not grown): an MLP whose first layer has K
dendrites per neuron, each reading 8 inputs (local windows or random subsets), trained jointly
(gd) like a plain model under the frontier's harness protocol. Adds the runs, as arms
``prebuilt-K-CHOICE``, to a copy of a frontier results folder, so that they are read against the
same seeds' dense and sparse plain ladders.

    PYTHONPATH=src python benchmarks/issue20/prebuilt.py results/frontier-restricted-mnist1d-mlp \
        results/frontier-restricted-mnist1d-mlp-prebuilt --widths 4,8,16,32 --dendrites 4
"""
from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

import torch

import perforate as pf
from perforate.experiments.data.datasets import load_dataset
from perforate.experiments.frontier.protocol import FrontierProtocol
from perforate.experiments.frontier.runs import load_frontier, save_frontier
from perforate.experiments.frontier.report import render_frontier
from perforate.experiments.data.models import build_model
from perforate.experiments.harness.train import train_model


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("source")
    ap.add_argument("out")
    ap.add_argument("--widths", default="4,8,16,32")
    ap.add_argument("--dendrites", type=int, default=4)
    ap.add_argument("--inputs", type=int, default=8)
    ap.add_argument("--choices", default="local,random")
    args = ap.parse_args()
    torch.set_num_threads(1)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if not (out / "results.json").exists():
        shutil.copy(Path(args.source) / "results.json", out / "results.json")
    doc = load_frontier(out)
    p = FrontierProtocol.from_dict(doc["protocol"])
    done = {r["run_id"] for r in doc["runs"]}
    for seed in p.seeds:
        data = load_dataset(p.dataset, seed=seed)
        for choice in args.choices.split(","):
            for width in map(int, args.widths.split(",")):
                arm = f"prebuilt-{args.dendrites}-{choice}"
                run_id = f"{arm}-w{width}-s{seed}"
                if run_id in done:
                    continue
                cfg = pf.Config(include=["1"], dendrite_inputs=args.inputs, dendrite_input_choice=choice,
                                seed=seed)
                model = pf.perforate(build_model(p.model, data, width, seed=seed), cfg)
                layer = pf.dendritic_layers(model)["1"]
                layer.add_dendrites(args.dendrites, torch.Generator().manual_seed(seed))
                result = train_model(data, p.model, width, model=model, config=p.stopper_config(),
                                     early_stopping=p.stopping == "patience", lr=p.lr,
                                     batch_size=p.batch_size, weight_decay=p.weight_decay, seed=seed,
                                     max_epochs=p.max_epochs, monitor="score")
                record = {"run_id": run_id, "arm": arm, "width": width, "seed": seed,
                          **{k: v for k, v in result.to_dict().items() if k != "history"}, "decisions": []}
                doc["runs"].append(record)
                save_frontier(out, doc)
                print(run_id, f"{record['test_score']:.1f}", record["params"], flush=True)
    doc["protocol"]["arms"] = list(dict.fromkeys([*doc["protocol"]["arms"],
                                                  *(r["arm"] for r in doc["runs"] if r["arm"].startswith("prebuilt"))]))
    doc["command"] = (doc.get("command", "") + "\nthen: PYTHONPATH=src python benchmarks/issue20/prebuilt.py "
                      + " ".join(f"{a}" for a in [args.source, args.out, "--widths", args.widths,
                                                  "--dendrites", str(args.dendrites), "--inputs", str(args.inputs),
                                                  "--choices", args.choices]))
    save_frontier(out, doc)
    print(render_frontier(out))


if __name__ == "__main__":
    main()
