"""The harness's standard models, each with one width knob.

========  ==================================  ===================================================
name      input_shape (per sample)            architecture (``w`` = width, ``out`` = outputs)
========  ==================================  ===================================================
``mlp``   any (flattened)                     Linear(in, w) ReLU Linear(w, w) ReLU Linear(w, out)
``cnn1d`` (L,) or (C, L)                      3 x [Conv1d(k=5, pad=2) w channels, ReLU], strides
                                              1, 2, 2, then Linear(w * ceil(L / 4), out)
``cnn2d`` (C, H, W), H and W at least 4       2 x [Conv2d(k=3, pad=1) w channels, ReLU,
                                              MaxPool2d(2)], then Linear(w * H/4 * W/4, out)
``gru``   (L,) as L steps of 1 feature,       GRU(hidden=w, batch_first) over the sequence,
          or (T, F) as T steps of F features  Linear(w, out) on the last hidden state
``lstm``  as ``gru``                          2-layer LSTM(hidden=w), Linear(w, out) on the last
                                              layer's final hidden state
``transformer`` as ``gru``                    Linear(F, w) + learned positions, one
                                              TransformerEncoderLayer(w, 1 head, 2w, pre-norm),
                                              mean over steps, Linear(w, out)
========  ==================================  ===================================================

:class:`TabularNet` (categorical embeddings + continuous features into an MLP) is the tabular
family; the bundled tabular data sets have no categorical columns, so it is not in ``MODELS``.

``out`` is ``data.num_classes`` for classification and 1 for regression.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn

from perforate.errors import ExperimentError
from perforate.experiments.data.datasets import DatasetSplits

__all__ = [
    "CNN1d",
    "CNN2d",
    "GRUNet",
    "LSTMNet",
    "MODELS",
    "TabularNet",
    "TransformerNet",
    "ModelSpec",
    "build_model",
    "build_sparse_model",
    "compatible_models",
    "model_names",
    "width_for_params",
]


class CNN1d(nn.Module):
    """Three Conv1d layers (kernel 5, padding 2, strides 1, 2, 2) with ReLU, then a Linear head.

    Takes ``[B, L]`` (a channel axis is added) or ``[B, C, L]``.
    """

    def __init__(self, in_channels: int, length: int, out_features: int, width: int):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv1d(in_channels, width, 5, stride=1, padding=2),
            nn.ReLU(),
            nn.Conv1d(width, width, 5, stride=2, padding=2),
            nn.ReLU(),
            nn.Conv1d(width, width, 5, stride=2, padding=2),
            nn.ReLU(),
        )
        reduced = math.ceil(math.ceil(length / 2) / 2)
        self.head = nn.Linear(width * reduced, out_features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() == 2:
            x = x.unsqueeze(1)
        return self.head(self.features(x).flatten(1))


class CNN2d(nn.Module):
    """Two [Conv2d(kernel 3, padding 1), ReLU, MaxPool2d(2)] stages, then a Linear head."""

    def __init__(self, input_shape: tuple[int, int, int], out_features: int, width: int):
        super().__init__()
        channels, height, breadth = input_shape
        self.features = nn.Sequential(
            nn.Conv2d(channels, width, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(width, width, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
        )
        self.head = nn.Linear(width * (height // 4) * (breadth // 4), out_features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x).flatten(1))


class GRUNet(nn.Module):
    """A one-layer GRU over the sequence and a Linear head on its last hidden state.

    Takes ``[B, L]`` (L steps of one feature) or ``[B, T, F]``.
    """

    def __init__(self, num_features: int, out_features: int, width: int):
        super().__init__()
        self.gru = nn.GRU(num_features, width, batch_first=True)
        self.head = nn.Linear(width, out_features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() == 2:
            x = x.unsqueeze(-1)
        _, hidden = self.gru(x)
        return self.head(hidden[-1])


def _steps(x: torch.Tensor) -> torch.Tensor:
    return x.unsqueeze(-1) if x.dim() == 2 else x


class LSTMNet(nn.Module):
    """A two-layer LSTM over the sequence and a Linear head on the last layer's final state."""

    def __init__(self, num_features: int, out_features: int, width: int):
        super().__init__()
        self.lstm = nn.LSTM(num_features, width, num_layers=2, batch_first=True)
        self.head = nn.Linear(width, out_features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _, (hidden, _) = self.lstm(_steps(x))
        return self.head(hidden[-1])


class TransformerNet(nn.Module):
    """A one-layer pre-norm Transformer encoder over the steps, mean-pooled, and a Linear head."""

    def __init__(self, num_features: int, length: int, out_features: int, width: int):
        super().__init__()
        self.embed = nn.Linear(num_features, width)
        self.positions = nn.Parameter(torch.zeros(length, width))
        self.encoder = nn.TransformerEncoderLayer(width, 1, 2 * width, dropout=0.0, batch_first=True,
                                                  norm_first=True)
        self.head = nn.Linear(width, out_features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.embed(_steps(x)) + self.positions
        return self.head(self.encoder(h).mean(1))


class TabularNet(nn.Module):
    """Tabular rows: one embedding per categorical column, concatenated with the continuous
    columns, then Linear(w) ReLU Linear(w) ReLU Linear(out).

    Takes ``(categorical [B, n_cat] long, continuous [B, n_cont] float)``.
    """

    def __init__(self, cardinalities: list[int], num_continuous: int, out_features: int, width: int,
                 embedding_dim: int = 4):
        super().__init__()
        self.embeddings = nn.ModuleList(nn.Embedding(n, embedding_dim) for n in cardinalities)
        inputs = embedding_dim * len(cardinalities) + num_continuous
        self.mlp = nn.Sequential(nn.Linear(inputs, width), nn.ReLU(), nn.Linear(width, width), nn.ReLU(),
                                 nn.Linear(width, out_features))

    def forward(self, categorical: torch.Tensor, continuous: torch.Tensor) -> torch.Tensor:
        columns = [emb(categorical[:, i]) for i, emb in enumerate(self.embeddings)]
        return self.mlp(torch.cat([*columns, continuous], 1))


def _sequence(shape: tuple[int, ...]) -> tuple[int, int]:
    """(steps, features) of a per-sample sequence shape (L,) or (T, F)."""
    return (shape[0], 1) if len(shape) == 1 else (shape[0], shape[1])


def _mlp(shape: tuple[int, ...], out: int, width: int) -> nn.Module:
    return nn.Sequential(
        nn.Flatten(),
        nn.Linear(math.prod(shape), width),
        nn.ReLU(),
        nn.Linear(width, width),
        nn.ReLU(),
        nn.Linear(width, out),
    )


def _cnn1d(shape: tuple[int, ...], out: int, width: int) -> nn.Module:
    channels, length = (1, shape[0]) if len(shape) == 1 else shape
    return CNN1d(channels, length, out, width)


def _gru(shape: tuple[int, ...], out: int, width: int) -> nn.Module:
    return GRUNet(1 if len(shape) == 1 else shape[1], out, width)


@dataclass(frozen=True)
class ModelSpec:
    """How to build one standard model and which per-sample input shapes it accepts."""

    build: Callable[[tuple[int, ...], int, int], nn.Module]  # (input_shape, out, width)
    accepts: Callable[[tuple[int, ...]], bool]
    shapes: str


MODELS: dict[str, ModelSpec] = {
    "mlp": ModelSpec(_mlp, lambda s: len(s) >= 1, "any input shape (flattened)"),
    "cnn1d": ModelSpec(_cnn1d, lambda s: len(s) in (1, 2), "(L,) or (C, L) signals"),
    "cnn2d": ModelSpec(
        lambda s, out, w: CNN2d(s, out, w),
        lambda s: len(s) == 3 and s[1] >= 4 and s[2] >= 4,
        "(C, H, W) images with H, W >= 4",
    ),
    "gru": ModelSpec(_gru, lambda s: len(s) in (1, 2), "(L,) or (T, F) sequences"),
    "lstm": ModelSpec(lambda s, out, w: LSTMNet(_sequence(s)[1], out, w), lambda s: len(s) in (1, 2),
                      "(L,) or (T, F) sequences"),
    "transformer": ModelSpec(lambda s, out, w: TransformerNet(_sequence(s)[1], _sequence(s)[0], out, w),
                             lambda s: len(s) in (1, 2), "(L,) or (T, F) sequences"),
}
"""Model name -> :class:`ModelSpec`."""


def model_names() -> list[str]:
    """Names accepted by :func:`build_model`."""
    return list(MODELS)


def compatible_models(data: DatasetSplits) -> list[str]:
    """Names of the models that accept ``data``'s input shape."""
    return [name for name, spec in MODELS.items() if spec.accepts(tuple(data.input_shape))]


def _spec_for(name: str, data: DatasetSplits) -> ModelSpec:
    if name not in MODELS:
        raise ExperimentError(f"unknown model {name!r}; choose one of: {', '.join(model_names())}")
    spec = MODELS[name]
    if not spec.accepts(tuple(data.input_shape)):
        table = "; ".join(f"{n}: {s.shapes}" for n, s in MODELS.items())
        raise ExperimentError(
            f"model {name!r} does not accept dataset {data.name!r} with input shape "
            f"{tuple(data.input_shape)}; use one of {compatible_models(data)} "
            f"(models and the shapes they take: {table})"
        )
    return spec


def _check_width(width: int) -> None:
    if isinstance(width, bool) or not isinstance(width, int) or width < 1:
        raise ExperimentError(f"width must be a positive integer, got {width!r}")


def build_model(name: str, data: DatasetSplits, width: int, seed: int = 0) -> nn.Module:
    """Build standard model ``name`` sized for ``data``, initialised deterministically by ``seed``.

    The global torch RNG state is left as it was.
    """
    spec = _spec_for(name, data)
    _check_width(width)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return spec.build(tuple(data.input_shape), data.out_features, width)


def _param_count(spec: ModelSpec, data: DatasetSplits, width: int) -> int:
    with torch.device("meta"):  # shapes only: no memory, no initialisation cost
        model = spec.build(tuple(data.input_shape), data.out_features, width)
    return sum(p.numel() for p in model.parameters())


def width_for_params(
    name: str, data: DatasetSplits, target_params: int, low: int = 1, high: int = 4096
) -> int:
    """Width in ``[low, high]`` whose plain model's parameter count is nearest ``target_params``."""
    spec = _spec_for(name, data)
    _check_width(low)
    _check_width(high)
    if low > high:
        raise ExperimentError(f"low ({low}) must not exceed high ({high})")
    if target_params < 1:
        raise ExperimentError(f"target_params must be positive, got {target_params!r}")
    # Smallest width whose count reaches the target (the count grows with width).
    lo, hi = low, high
    while lo < hi:
        mid = (lo + hi) // 2
        if _param_count(spec, data, mid) >= target_params:
            hi = mid
        else:
            lo = mid + 1
    if lo > low:
        below = _param_count(spec, data, lo - 1)
        if target_params - below <= _param_count(spec, data, lo) - target_params:
            return lo - 1
    return lo


def build_sparse_model(name: str, data: DatasetSplits, width: int, inputs: int, choice: str = "local",
                       seed: int = 0, expand: int = 1) -> nn.Module:
    """Standard model ``name`` whose first layer that reads more than ``inputs`` ordered inputs
    (an MLP's first Linear: the input's features; a convolution: its input channels) reads only
    ``inputs`` of them per unit: a local window or a random subset (``pf.restrict_inputs``,
    drawn from ``seed``). The plain sparse control of restricted-input dendrites.

    ``expand`` (``mlp`` only) widens that layer to ``expand * width`` units, the rest keep
    ``width``: a wide sparse layer, then dense ones. Initialised deterministically by ``seed``;
    the global torch RNG state is left as it was.
    """
    import perforate as pf
    from perforate.connectivity import input_size

    spec = _spec_for(name, data)
    _check_width(width)
    if isinstance(expand, bool) or not isinstance(expand, int) or expand < 1:
        raise ExperimentError(f"expand must be a positive integer; got {expand!r}")
    if expand != 1 and name != "mlp":
        raise ExperimentError(f"expand widens an MLP's first layer; model {name!r} takes expand=1")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        if expand == 1:
            model = spec.build(tuple(data.input_shape), data.out_features, width)
        else:
            wide = expand * width
            model = nn.Sequential(nn.Flatten(), nn.Linear(math.prod(data.input_shape), wide), nn.ReLU(),
                                  nn.Linear(wide, width), nn.ReLU(), nn.Linear(width, data.out_features))
    layer = next((m for m in model.modules() if (input_size(m) or 0) > inputs), None)
    if layer is None:
        raise ExperimentError(f"model {name!r} at width {width} has no Linear or ungrouped "
                              f"convolution reading more than {inputs} inputs to restrict; "
                              "choose fewer inputs or a wider model")
    pf.restrict_inputs(layer, inputs, choice, torch.Generator().manual_seed(seed))
    return model
