"""The training loop every experiment uses: plain (early stopping) or dendritic (a Grower).

Scores (higher is better everywhere, so one comparison rule serves every task):

- classification: accuracy in percent;
- regression: R² × 100 (100 is perfect, 0 is predicting the mean). ``100 - score`` is then the
  unexplained variance in percent, so :func:`perforate.remaining_error_reduction` keeps its
  meaning (relative reduction of the unexplained variance).

Determinism: the model is built by ``build_model(seed)``, the data order comes from a local
``torch.Generator`` seeded by ``seed``, and new dendrites from ``Config.seed = seed``; the global
RNG is never touched.
"""
from __future__ import annotations

import copy
import dataclasses
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import torch
from torch import nn
from torch.nn import functional as F

import perforate as pf
from perforate.errors import ExperimentError
from perforate.experiments.datasets import DatasetSplits
from perforate.experiments.models import build_model

__all__ = ["DEFAULT_PATIENCE", "TrainResult", "evaluate", "step_memory_mb", "train_model"]

DEFAULT_PATIENCE = 10
"""Early-stopping / growth patience when no config is given."""

_EVAL_CHUNK = 1024


@dataclass
class TrainResult:
    """What one training run produced. ``to_dict()`` is JSON-able and leaves the model out."""

    val_score: float
    """Best validation score (the epoch whose weights were kept)."""
    test_score: float
    """Test score of the kept model; the test split is scored exactly once."""
    params: int
    """Parameters inference needs (``pf.count_parameters``; dense count for pruned models)."""
    nonzero_params: int
    """Parameters that are not exactly zero (differs from ``params`` only after pruning)."""
    flops_per_sample: float
    """Forward FLOPs per sample (``pf.flops_per_sample``: matmuls and convolutions, dense)."""
    epochs: int
    """Epochs trained (the epoch budget this run used)."""
    seconds: float
    """Wall seconds of the training loop (evaluation of validation included, test excluded)."""
    dendrites: int
    """Dendrites per wrapped layer in the kept model (0 for plain models)."""
    history: list[dict]
    """One row per epoch: epoch, phase, val_score, val_loss, train_loss, train_score, lr,
    params, dendrites, event, seconds."""
    peak_memory_mb: float | None
    """Peak tensor memory of one training step in MB; see :func:`step_memory_mb`."""
    model: nn.Module | None = field(default=None, repr=False)
    restart_epochs: list[int] = field(default_factory=list)
    """Epochs at whose start a fresh optimizer was built (growth events of a dendritic run)."""
    best_epoch: int = -1

    def to_dict(self) -> dict[str, Any]:
        """The result as plain JSON-able values, without the model."""
        return {f.name: copy.deepcopy(getattr(self, f.name))
                for f in dataclasses.fields(self) if f.name != "model"}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "TrainResult":
        names = {f.name for f in dataclasses.fields(cls)} - {"model"}
        return cls(**{k: v for k, v in data.items() if k in names})


# ---------------------------------------------------------------------------- scoring
def _loss(data: DatasetSplits, out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    if data.task == "classification":
        return F.cross_entropy(out, y)
    return F.mse_loss(out, y)


@torch.no_grad()
def evaluate(model: nn.Module, data: DatasetSplits, x: torch.Tensor, y: torch.Tensor) -> float:
    """Score of ``model`` on ``(x, y)``: accuracy in percent, or R² × 100 for regression."""
    return _evaluate(model, data, x, y)[0]


@torch.no_grad()
def _evaluate(model: nn.Module, data: DatasetSplits, x: torch.Tensor,
              y: torch.Tensor) -> tuple[float, float]:
    """(score, mean loss) of ``model`` on ``(x, y)``."""
    was_training = model.training
    model.eval()
    try:
        outs = [model(x[i:i + _EVAL_CHUNK]) for i in range(0, len(x), _EVAL_CHUNK)]
    finally:
        model.train(was_training)
    out = torch.cat(outs)
    loss = float(_loss(data, out, y))
    if data.task == "classification":
        return float((out.argmax(1) == y).float().mean() * 100.0), loss
    residual = float(((out - y) ** 2).sum())
    total = float(((y - y.mean()) ** 2).sum())
    return (100.0 * (1.0 - residual / total) if total > 0 else 0.0), loss


def _batch_score(data: DatasetSplits, out: torch.Tensor, y: torch.Tensor) -> float:
    if data.task == "classification":
        return float((out.argmax(1) == y).sum())
    return 0.0


# ---------------------------------------------------------------------------- memory
class _SavedTensorMeter:
    """Bytes of the distinct tensors autograd saves for backward during a forward pass."""

    def __init__(self) -> None:
        self.seen: set[tuple[int, int]] = set()
        self.bytes = 0

    def pack(self, t: torch.Tensor) -> torch.Tensor:
        key = (t.untyped_storage().data_ptr(), t.untyped_storage().nbytes())
        if key not in self.seen:
            self.seen.add(key)
            self.bytes += key[1]
        return t

    @staticmethod
    def unpack(t: torch.Tensor) -> torch.Tensor:
        return t


def _tensor_bytes(tensors) -> int:
    seen, total = set(), 0
    for t in tensors:
        if isinstance(t, torch.Tensor):
            key = t.untyped_storage().data_ptr()
            if key not in seen:
                seen.add(key)
                total += t.untyped_storage().nbytes()
    return total


def step_memory_mb(model: nn.Module, optimizer: torch.optim.Optimizer, activation_bytes: int) -> float:
    """Tensor memory of one training step, in MB (10^6 bytes).

    On CPU PyTorch keeps no allocator statistics, so the peak is counted from the tensors a step
    must hold at once: parameters and buffers, gradients, optimizer state, and the activations
    autograd saved for backward (``activation_bytes``, measured with saved-tensor hooks). It
    leaves out the allocator's slack and short-lived temporaries, so it is a lower bound that
    compares models fairly, not the process's resident size.
    """
    params = list(model.parameters())
    state = [v for s in optimizer.state.values() for v in s.values()]
    total = (_tensor_bytes(params) + _tensor_bytes(model.buffers())
             + _tensor_bytes(p.grad for p in params) + _tensor_bytes(state) + activation_bytes)
    return total / 1e6


# ---------------------------------------------------------------------------- the loop
def _check_args(mode: str | None, max_epochs: int, batch_size: int, lr: float) -> None:
    if mode not in (None, "gd", "pb"):
        raise ExperimentError(f"mode must be None (plain training), 'gd' or 'pb'; got {mode!r}")
    if isinstance(max_epochs, bool) or not isinstance(max_epochs, int) or max_epochs < 1:
        raise ExperimentError(f"max_epochs must be a positive integer; got {max_epochs!r}")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ExperimentError(f"batch_size must be a positive integer; got {batch_size!r}")
    if not lr > 0:
        raise ExperimentError(f"lr must be positive; got {lr!r}")


def train_model(data: DatasetSplits, model_name: str, width: int, *, mode: str | None = None,
                config: pf.Config | None = None, lr: float = 1e-3, batch_size: int = 64,
                weight_decay: float = 0.0, max_epochs: int = 100, seed: int = 0,
                out_dir: str | Path | None = None,
                epoch_callback: Callable[[int, float], None] | None = None,
                model: nn.Module | None = None,
                early_stopping: bool = True,
                restart_epochs: Sequence[int] = (),
                monitor: str = "score",
                device: str | torch.device = "cpu") -> TrainResult:
    """Train one model on ``data`` and score it; the test split is scored once, at the end.

    Args:
        data: the dataset splits.
        model_name, width: the reference model (``build_model(model_name, data, width, seed)``);
            ignored when ``model`` is given.
        mode: None trains the plain model with early stopping (``config.patience`` epochs, or
            :data:`DEFAULT_PATIENCE`) and keeps its best-validation weights. ``"gd"``/``"pb"``
            perforates the model and grows dendrites with :class:`pf.Grower` until it is done or
            ``max_epochs`` ran out (then ``grower.finish()`` restores the best model).
        config: the dendritic configuration (its ``mode`` and ``seed`` are replaced by ``mode``
            and ``seed``); for plain training only its ``patience`` is used.
        lr, batch_size, weight_decay: Adam's settings and the minibatch size.
        max_epochs: the epoch budget.
        seed: model initialisation, data order and new dendrites.
        out_dir: where the Grower writes history.csv, summary.json, growth.png, best.pt.
        epoch_callback: called as ``epoch_callback(epoch, val_score)`` after every epoch; it may
            raise to stop the run (e.g. a pruned sweep trial).
        model: train this model instead of building one (plain mode: e.g. a pruned model).
        early_stopping: plain mode only; False trains exactly ``max_epochs`` epochs and still
            keeps the best-validation weights (the width-matched control's fixed budget).
        restart_epochs: plain mode only; at the start of each of these epochs the optimizer is
            rebuilt, reproducing the optimizer restarts of a dendritic run.
        monitor: what early stopping, growth decisions and the kept checkpoint follow:
            ``"score"`` (validation score, higher is better) or ``"loss"`` (validation loss,
            lower is better; a much finer signal than accuracy on a small validation split).
            ``val_score`` and ``epoch_callback`` report the score either way.
        device: where to train.
    """
    _check_args(mode, max_epochs, batch_size, lr)
    if monitor not in ("score", "loss"):
        raise ExperimentError(f"monitor must be 'score' or 'loss'; got {monitor!r}")
    by_loss = monitor == "loss"
    if config is not None and not isinstance(config, pf.Config):
        raise ExperimentError(f"config must be a perforate.Config; got {type(config).__name__}")
    device = torch.device(device)
    if model is None:
        model = build_model(model_name, data, width, seed=seed)
    model = model.to(device)
    x_train, y_train = data.x_train.to(device), data.y_train.to(device)
    x_val, y_val = data.x_val.to(device), data.y_val.to(device)

    def make_optimizer(params):
        return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay)

    grower = None
    patience = config.patience if config is not None else DEFAULT_PATIENCE
    if mode is not None:
        cfg = (config or pf.Config()).replace(mode=mode, seed=seed, maximize=not by_loss)
        grower = pf.Grower(model, cfg, optimizer_factory=make_optimizer, out_dir=out_dir)
        optimizer = grower.optimizer
    else:
        optimizer = make_optimizer([p for p in model.parameters() if p.requires_grad])
    restarts = set(int(e) for e in restart_epochs)

    generator = torch.Generator().manual_seed(seed)
    history: list[dict] = []
    used_restarts: list[int] = []
    best_val, best_epoch, best_state, stale = None, -1, None, 0
    best_key = None  # what "best" follows: the score, or minus the loss
    peak_mb: float | None = None
    measure_memory = True  # on the first step of every new architecture / optimizer
    cuda = device.type == "cuda"
    if cuda:
        torch.cuda.reset_peak_memory_stats(device)
    start = time.perf_counter()
    epoch = 0
    for epoch in range(max_epochs):
        epoch_start = time.perf_counter()
        if grower is None and epoch in restarts and epoch > 0:
            optimizer = make_optimizer([p for p in model.parameters() if p.requires_grad])
            used_restarts.append(epoch)
            measure_memory = True
        live = grower.model if grower is not None else model
        live.train()
        n = len(y_train)
        order = torch.randperm(n, generator=generator).to(device)
        loss_sum, correct = 0.0, 0.0
        for i in range(0, n, batch_size):
            idx = order[i:i + batch_size]
            xb, yb = x_train[idx], y_train[idx]
            if measure_memory and not cuda:
                meter = _SavedTensorMeter()
                with torch.autograd.graph.saved_tensors_hooks(meter.pack, meter.unpack):
                    out = live(xb)
                    loss = _loss(data, out, yb)
            else:
                out = live(xb)
                loss = _loss(data, out, yb)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if measure_memory and not cuda:
                # gradients exist now; optimizer state appears after the first step
                optimizer.step()
                mb = step_memory_mb(live, optimizer, meter.bytes)
                peak_mb = mb if peak_mb is None else max(peak_mb, mb)
                measure_memory = False
            else:
                optimizer.step()
            loss_sum += float(loss.detach()) * len(idx)
            correct += _batch_score(data, out.detach(), yb)
        val, val_loss = _evaluate(live, data, x_val, y_val)
        row = {"epoch": epoch, "phase": grower.phase if grower is not None else "neuron",
               "val_score": val, "val_loss": val_loss, "train_loss": loss_sum / n,
               "train_score": 100.0 * correct / n if data.task == "classification" else None,
               "lr": optimizer.param_groups[0]["lr"], "params": pf.count_parameters(live),
               "dendrites": _dendrites(live), "event": ""}
        done = False
        if grower is not None:
            if by_loss:  # the growth graph then shows losses, on one scale
                decision = grower.step(val_loss, train_loss=row["train_loss"])
            else:
                extra = {"train_acc": row["train_score"]} if row["train_score"] is not None else {}
                decision = grower.step(val, **extra)
            row["event"] = decision.event
            if decision.restructured and not decision.done:
                optimizer = grower.optimizer
                used_restarts.append(epoch + 1)
                measure_memory = True
            done = decision.done
        else:
            key = -val_loss if by_loss else val
            if best_key is None or key > best_key:
                best_key, best_val, best_epoch, stale = key, val, epoch, 0
                best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
            else:
                stale += 1
            done = early_stopping and stale >= patience
        row["seconds"] = time.perf_counter() - epoch_start
        history.append(row)
        if epoch_callback is not None:
            epoch_callback(epoch, val)
        if done:
            break
    epochs = epoch + 1
    if grower is not None:
        model = grower.finish()
        best_epoch = grower.state.best_epoch
        best_val = history[best_epoch]["val_score"] if 0 <= best_epoch < len(history) \
            else grower.best_score
    elif best_state is not None:
        model.load_state_dict(best_state)
    seconds = time.perf_counter() - start
    if cuda:
        peak_mb = torch.cuda.max_memory_allocated(device) / 1e6
    model.eval()
    test = evaluate(model, data, data.x_test.to(device), data.y_test.to(device))
    example = x_val[:8]
    return TrainResult(
        val_score=float(best_val), test_score=test, params=pf.count_parameters(model),
        nonzero_params=count_nonzero(model), flops_per_sample=pf.flops_per_sample(model, example),
        epochs=epochs, seconds=seconds, dendrites=_dendrites(model), history=history,
        peak_memory_mb=peak_mb, model=model, restart_epochs=used_restarts, best_epoch=best_epoch)


def _dendrites(model: nn.Module) -> int:
    layers = pf.dendritic_layers(model)
    return max((layer.num_dendrites for layer in layers.values()), default=0)


def count_nonzero(model: nn.Module) -> int:
    """Non-zero entries of the parameters inference uses (a pruned weight counts its mask)."""
    total = 0
    for name, module in model.named_modules():
        for pname, p in module.named_parameters(recurse=False):
            if pname.endswith("_orig") and hasattr(module, pname[:-5]):
                p = getattr(module, pname[:-5])  # torch.nn.utils.prune: weight = orig * mask
            total += int(torch.count_nonzero(p.detach()))
    return total
