"""Small pb tasks shared by the pb and cached-pb tests: models per layer kind, a regression
task a small MLP underfits, one epoch of an ordinary loop, a Linear at its optimum."""
import torch
import torch.nn.functional as F
from torch import nn

import perforate as pf
from tests.helpers.models import ConvBN


class ConvBNNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.block = ConvBN(2, 4)
        self.head = nn.Linear(4 * 4 * 4, 1)

    def forward(self, x):
        return self.head(torch.relu(self.block(x)).flatten(1))


class Sequence(nn.Module):
    """Linears on [B, T, C] sequences, as inside a transformer block."""

    def __init__(self):
        super().__init__()
        self.up = nn.Linear(3, 8)
        self.down = nn.Linear(8, 1)

    def forward(self, x):
        return self.down(torch.relu(self.up(x))).mean(1)


def _mlp():
    return nn.Sequential(nn.Linear(2, 8), nn.Tanh(), nn.Linear(8, 1))


def _task(n=256, seed=0):
    """A regression target a small tanh MLP underfits, so dendrites have error to explain."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 2, generator=g)
    y = torch.sin(3 * x[:, :1]) * torch.cos(2 * x[:, 1:]) + 0.5 * (x[:, :1] * x[:, 1:] > 0)
    return x, y


CASES = {
    "linear": (_mlp, lambda g: torch.randn(64, 2, generator=g), {}),
    "conv1d": (lambda: nn.Sequential(nn.Conv1d(2, 4, 3, padding=1), nn.ReLU(), nn.Flatten(),
                                     nn.Linear(4 * 6, 1)),
               lambda g: torch.randn(32, 2, 6, generator=g), {}),
    "conv2d": (lambda: nn.Sequential(nn.Conv2d(2, 3, 3, padding=1), nn.ReLU(), nn.Flatten(),
                                     nn.Linear(3 * 4 * 4, 1)),
               lambda g: torch.randn(16, 2, 4, 4, generator=g), {}),
    "conv_bn_block": (ConvBNNet, lambda g: torch.randn(16, 2, 4, 4, generator=g), {"blocks": [ConvBN]}),
    "sequence_btc": (Sequence, lambda g: torch.randn(16, 5, 3, generator=g), {}),
}


def _epoch(grower, x, y, batch=32, seed=0):
    """One epoch of the user's ordinary loop (fixed batch order per seed)."""
    model = grower.model
    model.train()
    order = torch.randperm(len(x), generator=torch.Generator().manual_seed(seed))
    for i in range(0, len(x), batch):
        idx = order[i:i + batch]
        loss = F.mse_loss(model(x[idx]), y[idx])
        grower.optimizer.zero_grad()
        loss.backward()
        grower.optimizer.step()
    return loss.item()


def _main_state(model):
    """Every tensor of the model except the training-only candidate pools."""
    return {k: v.detach().clone() for k, v in model.state_dict().items() if "candidate_pool" not in k}


def _eval(model, x):
    was = model.training
    model.eval()
    with torch.no_grad():
        out = model(x)
    model.train(was)
    return out


def linear_at_its_optimum(cfg):
    """A perforated Linear(2, 1) at its least-squares optimum under a sigmoid-shaped target: what
    is left of the error is nonlinear, so a dendrite has something to learn. (model, x, y)"""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(512, 2, generator=g)
    y = 2 * torch.sigmoid(4 * x[:, :1] - 3 * x[:, 1:])
    model = pf.perforate(nn.Linear(2, 1), cfg)
    with torch.no_grad():
        solution = torch.linalg.lstsq(torch.cat([x, torch.ones(512, 1)], 1), y).solution
        model.main.weight.copy_(solution[:2].T)
        model.main.bias.copy_(solution[2])
    return model, x, y


def case_data(case):
    """``(build, x, y, perforate kwargs)`` of a layer-kind case: inputs and a random target."""
    build, make_x, kwargs = CASES[case]
    g = torch.Generator().manual_seed(0)
    x = make_x(g)
    return build, x, torch.randn(len(x), 1, generator=g), kwargs
