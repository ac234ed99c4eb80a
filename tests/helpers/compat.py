"""Helpers of the perforatedai compat tests: a tiny model, its data, scripted epochs.
The ``fresh`` fixture (fresh globals in a temporary folder) is in ``tests/conftest.py``."""
import torch
from torch import nn

from perforate.compat.perforatedai import globals_perforatedai as GPA

X = torch.randn(16, 4, generator=torch.Generator().manual_seed(0))
Y = torch.randint(0, 3, (16,), generator=torch.Generator().manual_seed(1))


def mlp():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 6), nn.Tanh(), nn.Linear(6, 3))


def train_epoch(model, optimizer):
    model.train()
    optimizer.zero_grad()
    nn.functional.cross_entropy(model(X), Y).backward()
    optimizer.step()


def feed(model, scores, optimizer=None, rebuild=None):
    """One add_validation_score per score (with a training step when an optimizer is given);
    returns the model, the (restructured, complete) pairs and the optimizer in use."""
    seen = []
    for score in scores:
        if optimizer is not None:
            train_epoch(model, optimizer)
        model, restructured, complete = GPA.pai_tracker.add_validation_score(score, model)
        seen.append((restructured, complete))
        if restructured and rebuild is not None:
            optimizer = rebuild(model)
        if complete:
            break
    return model, seen, optimizer
