"""The protocol the model-family examples share: one model trained plain, one perforated, the
same epoch budget, the same data order; the dendritic run grows once, at the middle of the
budget (``Grower.add_dendrites``: function-preserving, so its score cannot drop at growth), and
both report their best validation score."""
from __future__ import annotations

import copy
import time
from typing import Callable

import torch
from torch import nn

import perforate as pf


def compare(build: Callable[[], nn.Module], train_epoch: Callable[[nn.Module, torch.optim.Optimizer, int], None],
            validate: Callable[[nn.Module], float], epochs: int, lr: float, mode: str = "gd",
            maximize: bool = False, blocks=(), seed: int = 0) -> dict:
    """Train ``build()`` plain and perforated for ``epochs`` each; returns scores, params, seconds."""
    better = max if maximize else min
    results = {}
    torch.manual_seed(seed)
    base = build()
    for arm in ("baseline", f"dendrites ({mode})"):
        model = copy.deepcopy(base)
        start = time.perf_counter()
        if arm == "baseline":
            optimizer = torch.optim.AdamW(model.parameters(), lr=lr)
            scores = []
            for epoch in range(epochs):
                train_epoch(model, optimizer, epoch)
                scores.append(validate(model))
            best = better(scores)
        else:
            # growth_lr_scale=1: the plain arm keeps its rate, and the growth is forced while the
            # model still learns (the default 0.3 is for growth at a plateau)
            config = pf.Config(mode=mode, patience=epochs, score_mode="max" if maximize else "min",
                               dendrite_max_epochs=3, growth_lr_scale=1.0, max_epochs=epochs)
            model = pf.perforate(model, config, blocks=blocks)
            grower = pf.Grower(model, config, lambda p: torch.optim.AdamW(p, lr=lr))
            for epoch in range(epochs):
                if epoch == epochs // 2:
                    grower.add_dendrites()
                train_epoch(grower.model, grower.optimizer, epoch)
                grower.step(validate(grower.model))
            model = grower.finish()
            best = grower.state.best_score
        results[arm] = {"best": best, "params": pf.count_parameters(model),
                        "seconds": round(time.perf_counter() - start, 1)}
        print(f"{arm:>16}: best validation {best:.4f}, {results[arm]['params']} parameters, "
              f"{results[arm]['seconds']} s", flush=True)
    return results
