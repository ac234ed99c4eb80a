"""Cost-bench figures of a growth as a user pays for it (``perforate bench cost``):

- ``pb_phase_per_growth``: a default (cached) pb dendrite phase, the recording epoch plus the
  fit and join in ``Grower.step``, in plain epochs of the same model, on a ResNet-18-style CNN
  whose conv + batch-norm pairs are declared ``blocks=``, a two-layer LSTM and a one-layer
  Transformer encoder (its attention layer wrapped). Target <= 3 plain epochs. (The stacked
  Linear MLP's figure is ``pb_phase_ratio``'s cached case.)
- ``grown_epoch_ratio``: a whole training epoch of the MNIST-1D loop after one growth (``gd``,
  one trained-looking dendrite on every layer, ``Grower.step`` included) against the plain
  epoch. Target <= 1.3.
"""
from __future__ import annotations

import copy
from types import SimpleNamespace
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

PB_PHASE_TARGET = 3.0
GROWN_EPOCH_TARGET = 1.3


class ConvBN(nn.Module):
    """A bias-free 3x3 convolution and its batch norm: one declared block."""

    def __init__(self, cin: int, cout: int, stride: int = 1) -> None:
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn = nn.BatchNorm2d(cout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bn(self.conv(x))


class _Basic(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.a, self.b = ConvBN(cin, cout, stride), ConvBN(cout, cout)
        self.skip = ConvBN(cin, cout, stride) if stride != 1 or cin != cout else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.b(F.relu(self.a(x)))
        return F.relu(h + (x if self.skip is None else self.skip(x)))


class ResNet18ish(nn.Module):
    """ResNet-18's layout (stem, four stages of two basic blocks) at width ``w``."""

    def __init__(self, w: int = 8, classes: int = 10) -> None:
        super().__init__()
        self.stem = ConvBN(3, w)
        self.layers = nn.Sequential(_Basic(w, w, 1), _Basic(w, w, 1), _Basic(w, 2 * w, 2),
                                    _Basic(2 * w, 2 * w, 1), _Basic(2 * w, 4 * w, 2),
                                    _Basic(4 * w, 4 * w, 1), _Basic(4 * w, 8 * w, 2),
                                    _Basic(8 * w, 8 * w, 1))
        self.fc = nn.Linear(8 * w, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.layers(F.relu(self.stem(x))).mean((2, 3)))


def _data(x: torch.Tensor, y: torch.Tensor) -> SimpleNamespace:
    """What ``cost._Loop`` reads: train tensors, and a small validation slice of them."""
    return SimpleNamespace(x_train=x, y_train=y, x_val=x[:64], y_val=y[:64])


def _families(quick: bool, data) -> dict[str, tuple[nn.Module, Any, dict, int]]:
    """name -> (model, loop data, ``pf.perforate`` keyword arguments, batch)."""
    from perforate.experiments.data.models import build_model

    g = torch.Generator().manual_seed(0)
    n, side, width = (32, 8, 2) if quick else (512, 16, 8)
    images = _data(torch.randn(n, 3, side, side, generator=g), torch.randint(0, 10, (n,), generator=g))
    steps, seq_n, seq_w = (8, 32, 4) if quick else (40, 1024, 32)
    if data is not None and not quick:  # MNIST-1D sequences (40 steps of one feature)
        seq = _data(data.x_train[:seq_n], data.y_train[:seq_n])
        spec = data
    else:
        seq = _data(torch.randn(seq_n, steps, generator=g), torch.randint(0, 10, (seq_n,), generator=g))
        spec = SimpleNamespace(name="synthetic", input_shape=(steps,), num_classes=10, out_features=10,
                               task="classification")
    torch.manual_seed(0)
    return {
        "ResNet-18-style conv+BN blocks (blocks=)": (ResNet18ish(width), images, {"blocks": [ConvBN]}, 64),
        "lstm (2 layers)": (build_model("lstm", spec, seq_w, seed=0), seq, {}, 32),
        "attention (Transformer encoder)": (build_model("transformer", spec, seq_w, seed=0), seq, {}, 32),
    }


def pb_phase_figures(quick: bool, data, device: torch.device, repeats: int, clock, paired, ratio,
                     loop_class, adam) -> dict:
    """``pb_phase_per_growth`` for every family (see the module docstring). Each repeat starts a
    fresh dendrite phase, untimed; the phase arm is one call (the recording epoch, then
    ``Grower.step``), the plain arm one epoch of the same model."""
    import perforate as pf
    from perforate.errors import ExperimentError

    out = {}
    for name, (base, fam_data, kwargs, batch) in _families(quick, data).items():
        base = base.to(device)
        cfg = pf.Config(mode="pb", patience=10**6, seed=0)
        loops = {arm: loop_class(fam_data, batch, device) for arm in ("pb", "plain")}
        plain = copy.deepcopy(base)
        plain_opt = adam(plain.parameters())
        held: dict[str, Any] = {}

        def start_phase(base=base, cfg=cfg, kwargs=kwargs):
            grower = pf.Grower(pf.perforate(copy.deepcopy(base), cfg, **kwargs), cfg,
                               optimizer_factory=adam)
            grower.add_dendrites()
            held["grower"] = grower

        def phase(loops=loops):
            grower = held["grower"]
            grower.step(loops["pb"].epoch(grower.model, grower.optimizer))
            if grower.state.phase == "dendrite":
                raise ExperimentError("the cached dendrite phase did not end after one epoch")

        times = paired({"pb dendrite phase": phase,
                        "plain": lambda plain=plain, opt=plain_opt, loop=loops["plain"]: loop.epoch(plain, opt)},
                       repeats, clock, 0.0, prepare={"pb dendrite phase": start_phase})
        out[name] = ratio(times, "pb dendrite phase", "plain", PB_PHASE_TARGET,
                          layers=len(pf.dendritic_layers(held["grower"].model)), batch=batch,
                          samples=len(fam_data.x_train))
    return out


def grown_epoch_figure(data, batch: int, device: torch.device, repeats: int, clock, paired, ratio,
                       loop_class, adam, base: nn.Module, grow) -> dict:
    """``grown_epoch_ratio``: the loop plus ``Grower.step`` on the model after one gd growth
    (``grow(model, 1)``: one dendrite on every layer) against the plain loop."""
    import perforate as pf

    cfg = pf.Config(patience=10**6, seed=0)
    grower = pf.Grower(grow(pf.perforate(copy.deepcopy(base), cfg), 1), cfg, optimizer_factory=adam)
    plain = copy.deepcopy(base)
    plain_opt = adam(plain.parameters())
    loops = {arm: loop_class(data, batch, device) for arm in ("grown", "plain")}

    def grown():
        grower.step(loops["grown"].epoch(grower.model, grower.optimizer))

    times = paired({"grown, 1 dendrite/layer": grown, "plain": lambda: loops["plain"].epoch(plain, plain_opt)},
                   repeats, clock, 0.0)
    return ratio(times, "grown, 1 dendrite/layer", "plain", GROWN_EPOCH_TARGET,
                 dendrites=sum(layer.num_dendrites for layer in pf.dendritic_layers(grower.model).values()))
