"""A tiny model, its input and a few real optimizer steps, for tests that drive a Grower on
scripted scores."""
import torch
from torch import nn

X = torch.randn(16, 4, generator=torch.Generator().manual_seed(0))


def make_model(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(4, 6), nn.Tanh(), nn.Linear(6, 3))


def adam(params):
    return torch.optim.Adam(params, lr=1e-2)


def train_a_little(grower, steps=2):
    """Real optimizer steps so the weights (and the best snapshot) change each epoch."""
    model = grower.model.train()
    for _ in range(steps):
        grower.optimizer.zero_grad()
        loss = model(X).pow(2).mean() + sum((p - 0.3).pow(2).sum() for p in model.parameters()) * 1e-2
        loss.backward()
        grower.optimizer.step()


def events(decisions):
    """``(epoch, event)`` of the epochs that had an event, from ``(epoch, event, ...)`` tuples."""
    return [(epoch, event) for epoch, event, *_ in decisions if event]
