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
import functools
import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import torch
from torch import nn
from torch.nn import functional as F

import perforate as pf
from perforate.errors import ExperimentError
from perforate.experiments.data.datasets import DatasetSplits
from perforate.experiments.data.models import build_model
from perforate.experiments.harness.stopper import EarlyStopper
from perforate.measure import peak_training_memory

__all__ = ["DEFAULT_PATIENCE", "TrainResult", "evaluate", "train_model"]

DEFAULT_PATIENCE = pf.Config().patience
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
    """Peak tensor memory of a training step in MB (10^6 bytes): the largest
    :func:`perforate.measure.peak_training_memory` over the first step of every architecture
    (and optimizer) the run trained."""
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
def task_loss(data: DatasetSplits, out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Cross-entropy for classification, mean squared error for regression."""
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
    loss = float(task_loss(data, out, y))
    if data.task == "classification":
        return float((out.argmax(1) == y).float().mean() * 100.0), loss
    residual = float(((out - y) ** 2).sum())
    total = float(((y - y.mean()) ** 2).sum())
    return (100.0 * (1.0 - residual / total) if total > 0 else 0.0), loss


def _batch_score(data: DatasetSplits, out: torch.Tensor, y: torch.Tensor) -> float:
    if data.task == "classification":
        return float((out.argmax(1) == y).sum())
    return 0.0


# ---------------------------------------------------------------------------- the loop
def _check_args(mode: str | None, max_epochs: int, batch_size: int, lr: float, monitor: str,
                config: pf.Config | None) -> None:
    if mode not in (None, "gd", "pb"):
        raise ExperimentError(f"mode must be None (plain training), 'gd' or 'pb'; got {mode!r}")
    if isinstance(max_epochs, bool) or not isinstance(max_epochs, int) or max_epochs < 1:
        raise ExperimentError(f"max_epochs must be a positive integer; got {max_epochs!r}")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ExperimentError(f"batch_size must be a positive integer; got {batch_size!r}")
    if not lr > 0:
        raise ExperimentError(f"lr must be positive; got {lr!r}")
    if monitor not in ("score", "loss"):
        raise ExperimentError(f"monitor must be 'score' or 'loss'; got {monitor!r}")
    if config is not None and not isinstance(config, pf.Config):
        raise ExperimentError(f"config must be a perforate.Config; got {type(config).__name__}")


class _Epochs:
    """The training split on the device, cut into shuffled minibatches, one epoch per call."""

    def __init__(self, data: DatasetSplits, batch_size: int, seed: int, device: torch.device) -> None:
        self.data = data
        self.x, self.y = data.x_train.to(device), data.y_train.to(device)
        self.batch_size = batch_size
        self.generator = torch.Generator().manual_seed(seed)

    def train(self, model: nn.Module, optimizer: torch.optim.Optimizer,
              measure_memory: bool, shadow_step: Callable | None = None
              ) -> tuple[float, float | None, int | None]:
        """One epoch: (mean training loss, training score, peak step bytes or None).

        With ``measure_memory`` the first step's peak memory is measured
        (:func:`perforate.measure.peak_training_memory`). ``shadow_step`` (a growth trial's
        shadow run, :meth:`perforate.Grower.shadow_step`) trains on every batch after the model.
        """
        model.train()
        n = len(self.y)
        order = torch.randperm(n, generator=self.generator).to(self.x.device)
        loss_sum, correct, peak = 0.0, 0.0, None
        for i in range(0, n, self.batch_size):
            idx = order[i:i + self.batch_size]
            optimizer.zero_grad(set_to_none=True)
            measured = measure_memory and i == 0
            with peak_training_memory(model, optimizer) if measured else nullcontext() as memory:
                out = model(self.x[idx])
                loss = task_loss(self.data, out, self.y[idx])
                loss.backward()
                optimizer.step()
            if measured:
                peak = memory.bytes
            if shadow_step is not None:
                xb, yb = self.x[idx], self.y[idx]
                shadow_step(lambda m: task_loss(self.data, m(xb), yb))
            loss_sum += float(loss.detach()) * len(idx)
            correct += _batch_score(self.data, out.detach(), self.y[idx])
        score = 100.0 * correct / n if self.data.task == "classification" else None
        return loss_sum / n, score, peak


def _monitored(data: DatasetSplits, by_loss: bool) -> dict[str, str]:
    """``Config`` fields naming the monitored score and its direction."""
    if by_loss:
        return {"score_mode": "min", "score_name": "validation loss"}
    name = "accuracy %" if data.task == "classification" else "R² × 100"
    return {"score_mode": "max", "score_name": f"validation {name}"}


def _controller(model: nn.Module, mode: str | None, config: pf.Config | None, seed: int,
                monitored: dict[str, str], optimizer_factory, out_dir: str | Path | None,
                early_stopping: bool, restart_epochs: Sequence[int],
                name: str) -> pf.Grower | EarlyStopper:
    """A Grower for a dendritic run, an EarlyStopper for a plain one; both follow ``Config.better``."""
    cfg = (config or pf.Config(patience=DEFAULT_PATIENCE)).replace(seed=seed, **monitored)
    if mode is None:
        return EarlyStopper(model, cfg, optimizer_factory, stop_early=early_stopping,
                            restart_epochs=restart_epochs)
    return pf.Grower(model, cfg.replace(mode=mode), optimizer_factory=optimizer_factory,
                     out_dir=out_dir, name=name)


def train_model(data: DatasetSplits, model_name: str, width: int, *, mode: str | None = None,
                config: pf.Config | None = None, lr: float = 1e-2, batch_size: int = 100,
                weight_decay: float = 0.0, max_epochs: int = 100, seed: int = 0,
                out_dir: str | Path | None = None,
                epoch_callback: Callable[[int, float], None] | None = None,
                model: nn.Module | None = None, early_stopping: bool = True,
                restart_epochs: Sequence[int] = (), monitor: str = "score",
                device: str | torch.device = "cpu", name: str = "") -> TrainResult:
    """Train one model on ``data`` and score it; the test split is scored once, at the end.

    Args:
        data: the dataset splits.
        model_name, width: the standard model (``build_model(model_name, data, width, seed)``);
            ignored when ``model`` is given.
        mode: None trains the plain model with early stopping (:class:`EarlyStopper`:
            ``config.patience`` epochs, or :data:`DEFAULT_PATIENCE`) and keeps its
            best-validation weights. ``"gd"``/``"pb"`` perforates the model and grows dendrites
            with :class:`pf.Grower` until it is done or ``max_epochs`` ran out (then
            ``grower.finish()`` restores the best model). Both count improvements by
            ``Config.better``.
        config: the dendritic configuration (its ``mode`` and ``seed`` are replaced by ``mode``
            and ``seed``); plain training uses its ``patience`` and improvement thresholds.
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
        name: the run's name in the grower's log lines and growth graph title.
    """
    _check_args(mode, max_epochs, batch_size, lr, monitor, config)
    device = torch.device(device)
    model = (model if model is not None else build_model(model_name, data, width, seed=seed)).to(device)
    x_val, y_val = data.x_val.to(device), data.y_val.to(device)
    adam = functools.partial(torch.optim.Adam, lr=lr, weight_decay=weight_decay)
    by_loss = monitor == "loss"
    controller = _controller(model, mode, config, seed, _monitored(data, by_loss), adam, out_dir,
                             early_stopping, restart_epochs, name)
    start = time.perf_counter()
    history, restarts, peak_bytes = _run_epochs(
        controller, _Epochs(data, batch_size, seed, device).train,
        lambda live: _evaluate(live, data, x_val, y_val), max_epochs, by_loss, epoch_callback)
    model = controller.finish().eval()
    seconds = time.perf_counter() - start
    return _scored(model, controller, data, x_val, history, restarts, peak_bytes, seconds, by_loss)


def _scored(model: nn.Module, controller: pf.Grower | EarlyStopper, data: DatasetSplits,
            x_val: torch.Tensor, history: list[dict[str, Any]], restarts: list[int],
            peak_bytes: int, seconds: float, by_loss: bool) -> TrainResult:
    """The trained model's result: its kept epoch's validation score, the test split scored
    once, its size and cost."""
    device = x_val.device
    best_epoch = controller.state.best_epoch  # the first epoch always improves: it is set
    val_score = _kept_val_score(history[best_epoch], controller.state.best_score, by_loss)
    test = evaluate(model, data, data.x_test.to(device), data.y_test.to(device))
    return TrainResult(
        val_score=val_score, test_score=test, params=pf.count_parameters(model),
        nonzero_params=count_nonzero(model), flops_per_sample=pf.flops_per_sample(model, x_val[:8]),
        epochs=len(history), seconds=seconds, dendrites=_dendrites(model), history=history,
        peak_memory_mb=peak_bytes / 1e6 or None, model=model, restart_epochs=restarts,
        best_epoch=best_epoch)


def _run_epochs(controller: pf.Grower | EarlyStopper,
                train_one: Callable[[nn.Module, torch.optim.Optimizer, bool, Callable | None],
                                    tuple[float | None, float | None, int | None]],
                validate: Callable[[nn.Module], tuple[float, float | None]], max_epochs: int,
                by_loss: bool, epoch_callback: Callable[[int, float], None] | None
                ) -> tuple[list[dict], list[int], int]:
    """Train until the controller is done or the budget is spent: (history, epochs at which a
    fresh optimizer was built, peak bytes of the measured training steps).

    ``train_one(model, optimizer, measure_memory, shadow_step)`` trains one epoch and answers
    (mean training loss, training score, peak step bytes), each possibly None; during a growth
    trial under ``Config(trial="shadow")`` ``shadow_step`` is :meth:`pf.Grower.shadow_step`, to be
    called after every batch with that batch's loss closure (else None); ``validate(model)`` answers the
    validation (score, loss), the loss possibly None. The harness and a user's own task
    (:mod:`perforate.experiments.frontier.task`) both train through here."""
    history: list[dict] = []
    restarts: list[int] = []
    peak_bytes = 0
    measure_memory = True  # on the first step of every new architecture / optimizer
    for epoch in range(max_epochs):
        epoch_start = time.perf_counter()
        live, optimizer = controller.model, controller.optimizer
        shadow = getattr(controller, "shadow_model", None)  # a growth trial's un-grown run
        shadow_step = controller.shadow_step if shadow is not None else None
        train_loss, train_score, step_bytes = train_one(live, optimizer, measure_memory, shadow_step)
        peak_bytes = max(peak_bytes, step_bytes or 0)
        val, val_loss = validate(live)
        shadow_scores = {}
        if shadow is not None:
            shadow_val, shadow_loss = validate(shadow)
            shadow_scores["shadow_score"] = shadow_loss if by_loss else shadow_val
        row = {"epoch": epoch, "phase": controller.phase, "val_score": val, "val_loss": val_loss,
               "train_loss": train_loss, "train_score": train_score,
               "lr": optimizer.param_groups[0]["lr"], "params": pf.count_parameters(live),
               "dendrites": _dendrites(live)}
        if shadow is not None:  # a growth trial's shadow run: its best epoch may be the one kept
            row.update(shadow_val_score=shadow_val, shadow_val_loss=shadow_loss)
        if by_loss:  # the growth graph then shows losses, on one scale
            decision = controller.step(val_loss, train_loss=train_loss, **shadow_scores)
        else:
            extra = {"train_acc": train_score} if train_score is not None else {}
            decision = controller.step(val, **extra, **shadow_scores)
        measure_memory = decision.restructured and not decision.done
        if measure_memory:
            restarts.append(epoch + 1)
        history.append({**row, "event": decision.event, "seconds": time.perf_counter() - epoch_start})
        if epoch_callback is not None:
            epoch_callback(epoch, val)
        if decision.done:
            break
    return history, restarts, peak_bytes


def _kept_val_score(row: dict, best: float | None, by_loss: bool) -> float:
    """The validation score of the kept model at its epoch: the live model's, or the shadow run's
    when the best epoch came from a growth trial's shadow (``Config.trial == "shadow"``)."""
    if "shadow_val_score" in row:
        shadow = row["shadow_val_loss"] if by_loss else row["shadow_val_score"]
        live = row["val_loss"] if by_loss else row["val_score"]
        if shadow == best and live != best:
            return row["shadow_val_score"]
    return row["val_score"]


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
