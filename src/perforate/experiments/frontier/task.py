"""A user's own model, data and loop as the frontier bench trains them.

A :class:`Task` is what the bench needs to know about a training problem, and no more:

- ``make_model(width)``: a fresh model whose size grows with ``width`` (an int such as a hidden
  size, or a float scale); given a parameter named ``seed``, it is called with the run's seed;
- ``data``: ``(train, val, test)`` loaders, or a function returning them (``data()``, or
  ``data(seed=...)`` when it has a ``seed`` parameter: e.g. a split per seed). A loader is anything that yields batches when iterated again each epoch:
  a ``torch.utils.data.DataLoader``, a list of ``(x, y)`` pairs...;
- optionally the loop: ``train_epoch(model, loader, optimizer)`` (one epoch; may return the
  mean training loss) and ``evaluate(model, loader) -> float`` (the metric), a ``loss``, an
  ``optimizer`` factory ``(params) -> torch.optim.Optimizer`` and the metric's ``direction``.

Defaults: batches are ``(x, y)``; classification trains with cross-entropy and scores accuracy
in percent (``max``); regression trains with MSE and scores the MSE (``min``). Named metrics:
``accuracy``, ``mse``, ``mae``, ``r2`` (R² × 100); or any ``metric(outputs, targets) -> float``
with its ``direction``.

:func:`fit` trains one (width, seed) of a task, plain or growing dendrites, under the same
controller and improvement rule as every harness run. Each run draws its initialisation and
data order from ``torch.manual_seed(seed)`` inside :func:`torch.random.fork_rng`, so runs are
repeatable and paired by seed, and the caller's global RNG is left as it was.
"""
from __future__ import annotations

import inspect
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import torch
from torch import nn
from torch.nn import functional as F

import perforate as pf
from perforate.errors import ExperimentError

__all__ = ["Task", "fit", "harness_task", "matching_width", "parameter_counts"]

_METRICS: dict[str, tuple[Callable[[torch.Tensor, torch.Tensor], float], str, str]] = {}
"""name -> (metric, direction, label); filled below, never changed."""


def _accuracy(out: torch.Tensor, y: torch.Tensor) -> float:
    return float((out.argmax(1) == y).float().mean() * 100.0)


def _mse(out: torch.Tensor, y: torch.Tensor) -> float:
    return float(F.mse_loss(out.reshape(y.shape).float(), y.float()))


def _mae(out: torch.Tensor, y: torch.Tensor) -> float:
    return float(F.l1_loss(out.reshape(y.shape).float(), y.float()))


def _r2(out: torch.Tensor, y: torch.Tensor) -> float:
    out = out.reshape(y.shape).float()
    residual = float(((out - y) ** 2).sum())
    total = float(((y - y.mean()) ** 2).sum())
    return 100.0 * (1.0 - residual / total) if total > 0 else 0.0


_METRICS.update({"accuracy": (_accuracy, "max", "accuracy (%)"), "mse": (_mse, "min", "MSE"),
                 "mae": (_mae, "min", "MAE"), "r2": (_r2, "max", "R² × 100")})


def _mse_loss(out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return F.mse_loss(out.reshape(y.shape), y)


def _label(obj: Any, fallback: str) -> str:
    module, name = getattr(obj, "__module__", None), getattr(obj, "__qualname__", None)
    if name and "<" in name:  # a local function: its own name, a lambda: the fallback
        name = getattr(obj, "__name__", "")
    if not name or "<" in name:
        return fallback
    return f"{module}:{name}" if module else name


def _takes_seed(fn: Callable) -> bool:
    """True when ``fn`` has a parameter named ``seed`` (or takes ``**kwargs``)."""
    try:
        params = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):  # no signature (a builtin): call it without
        return False
    return any(p.name == "seed" or p.kind is p.VAR_KEYWORD for p in params)


def _length(loader: Any) -> int | None:
    try:
        return len(loader)
    except TypeError:  # an iterable dataset, a generator: no length
        return None


_SHADOW_NEEDS_DEFAULT_LOOP = ("Config(trial='shadow') trains the shadow run batch by batch, which a "
                              "custom train_epoch cannot do: use trial='rollback' or the default "
                              "training loop")


@dataclass
class Task:
    """A model factory with a width knob, the data, and optionally the loop (see the module)."""

    make_model: Callable[..., nn.Module]
    data: Any
    train_epoch: Callable[[nn.Module, Iterable, torch.optim.Optimizer], Any] | None = None
    evaluate: Callable[[nn.Module, Iterable], float] | None = None
    loss: Callable[[Any, Any], torch.Tensor] | None = None
    optimizer: Callable[[Iterable[nn.Parameter]], torch.optim.Optimizer] | None = None
    metric: str | Callable[[torch.Tensor, torch.Tensor], float] | None = None
    """A name in ``accuracy, mse, mae, r2``, a ``metric(outputs, targets)``, or None: the
    default of ``kind`` (or the name shown for a custom ``evaluate``)."""
    direction: str | None = None
    """``"max"`` or ``"min"``: which way the metric improves (named metrics know theirs)."""
    kind: str = "classification"
    """``"classification"`` or ``"regression"``: the default loss and metric."""
    metric_name: str = ""
    model_name: str = ""
    data_name: str = ""
    example_input: Callable[[Any], Any] | None = None
    """Batch -> the model's input, for counting FLOPs (default: ``batch[0]`` of an (x, y)
    batch); FLOPs are left out when the model cannot be called on it."""
    harness: tuple[str, str] | None = field(default=None, repr=False)
    """(dataset, model) of a harness task (the reference arm needs them)."""

    def __post_init__(self) -> None:
        if not callable(self.make_model):
            raise ExperimentError(f"make_model must be a function width -> nn.Module; got "
                                  f"{type(self.make_model).__name__}")
        if self.kind not in ("classification", "regression"):
            raise ExperimentError(f"kind must be 'classification' or 'regression'; got {self.kind!r}")
        if isinstance(self.metric, str) and self.metric not in _METRICS:
            raise ExperimentError(f"unknown metric {self.metric!r}; use one of "
                                  f"{', '.join(_METRICS)} or pass a function (outputs, targets) -> float")
        if self.direction is None:
            if callable(self.metric) or self.evaluate is not None and self.metric is None:
                raise ExperimentError("a custom metric or evaluate needs its direction: "
                                      "direction='max' (higher is better) or 'min' (lower is better)")
            self.direction = _METRICS[self._metric_key][1]
        if self.direction not in ("max", "min"):
            raise ExperimentError(f"direction must be 'max' or 'min'; got {self.direction!r}")
        if not self.metric_name:
            self.metric_name = (_METRICS[self.metric][2] if isinstance(self.metric, str)
                                else _label(self.metric, "metric") if callable(self.metric)
                                else _label(self.evaluate, "score") if self.evaluate is not None
                                else _METRICS[self._metric_key][2])
        self.model_name = self.model_name or _label(self.make_model, "your model")
        self.data_name = self.data_name or _label(self.data, "your data")

    @property
    def _metric_key(self) -> str:
        if isinstance(self.metric, str):
            return self.metric
        return "accuracy" if self.kind == "classification" else "mse"

    def describe(self, lr: float) -> dict[str, str]:
        """What the report says about the task (JSON-able)."""
        return {"model": self.model_name, "data": self.data_name, "metric": self.metric_name,
                "direction": self.direction,
                "train_epoch": _label(self.train_epoch, "your function") if self.train_epoch
                else "default: " + ("cross-entropy" if self.kind == "classification" else "MSE")
                if self.loss is None else _label(self.loss, "your loss"),
                "evaluate": _label(self.evaluate, "your function") if self.evaluate else "default",
                "optimizer": _label(self.optimizer, "your factory") if self.optimizer
                else f"Adam lr {lr:g}"}

    @property
    def maximize(self) -> bool:
        return self.direction == "max"

    # ------------------------------------------------------------------ the pieces
    def build(self, width: float, seed: int) -> nn.Module:
        """``make_model(width)`` (``make_model(width, seed=seed)`` when it has a ``seed``
        parameter); raise on a non-module."""
        fn = self.make_model
        model = fn(width, seed=seed) if _takes_seed(fn) else fn(width)
        if not isinstance(model, nn.Module):
            raise ExperimentError(f"make_model({width!r}) returned {type(model).__name__}, "
                                  "not a torch.nn.Module")
        return model

    def loaders(self, seed: int) -> tuple[Any, Any, Any]:
        """(train, val, test), each checked to yield a batch."""
        data = self.data
        if callable(data):
            data = data(seed=seed) if _takes_seed(data) else data()
        if isinstance(data, dict):
            data = tuple(data.get(k) for k in ("train", "val", "test"))
        if not isinstance(data, (tuple, list)) or len(data) != 3:
            raise ExperimentError("data must be (train, val, test) loaders or a function returning "
                                  f"them; got {type(data).__name__}"
                                  + (f" of length {len(data)}" if isinstance(data, (tuple, list)) else ""))
        for name, loader in zip(("train", "validation", "test"), data):
            try:  # len() when the loader knows it: iterating would draw from its shuffle RNG
                if _length(loader) == 0 or _length(loader) is None and next(iter(loader)) is None:
                    raise StopIteration
            except StopIteration:
                raise ExperimentError(f"the {name} loader yields no batches: give it data (a "
                                      "DataLoader with drop_last=True and fewer samples than "
                                      "batch_size is empty too)") from None
            except TypeError:
                raise ExperimentError(f"the {name} loader is not iterable; got "
                                      f"{type(loader).__name__}") from None
        return tuple(data)

    def loss_fn(self) -> Callable[[Any, Any], torch.Tensor]:
        if self.loss is not None:
            return self.loss
        return F.cross_entropy if self.kind == "classification" else _mse_loss

    def train_one(self, model: nn.Module, loader: Iterable, optimizer: torch.optim.Optimizer,
                  shadow_step: Callable | None = None) -> tuple[float | None, float | None]:
        """One training epoch: (mean training loss, training accuracy) when known.
        ``shadow_step`` (a growth trial's :meth:`pf.Grower.shadow_step`, default loop only)
        trains the un-grown shadow run on every batch after the model."""
        if self.train_epoch is not None:
            if shadow_step is not None:
                raise ExperimentError(_SHADOW_NEEDS_DEFAULT_LOOP)
            model.train()
            loss = self.train_epoch(model, loader, optimizer)
            return (float(loss) if isinstance(loss, (int, float, torch.Tensor)) else None), None
        model.train()
        loss_fn, count_correct = self.loss_fn(), self._metric_key == "accuracy"
        total, correct, n = 0.0, 0.0, 0
        for x, y in loader:
            optimizer.zero_grad(set_to_none=True)
            out = model(x)
            loss = loss_fn(out, y)
            loss.backward()
            optimizer.step()
            if shadow_step is not None:
                shadow_step(lambda m, x=x, y=y: loss_fn(m(x), y))
            total += float(loss.detach()) * len(y)
            n += len(y)
            if count_correct:
                correct += float((out.detach().argmax(1) == y).sum())
        return total / max(n, 1), (100.0 * correct / n if count_correct and n else None)

    @torch.no_grad()
    def score(self, model: nn.Module, loader: Iterable) -> tuple[float, float | None]:
        """(metric, mean loss when the default evaluation computes it) of ``model``."""
        was_training = model.training
        model.eval()
        try:
            if self.evaluate is not None:
                return float(self.evaluate(model, loader)), None
            outs, ys = [], []
            for x, y in loader:
                outs.append(model(x))
                ys.append(y)
        finally:
            model.train(was_training)
        out, y = torch.cat(outs), torch.cat(ys)
        metric = self.metric if callable(self.metric) else _METRICS[self._metric_key][0]
        loss = self.loss_fn()(out, y)
        return float(metric(out, y)), float(loss)

    def flops(self, model: nn.Module, loader: Iterable) -> float | None:
        """Forward FLOPs per sample on a validation batch, or None when they cannot be counted."""
        try:
            batch = next(iter(loader))
            x = self.example_input(batch) if self.example_input else batch[0]
            return pf.flops_per_sample(model, x[:8])
        except Exception:  # noqa: BLE001 - a model the counter cannot run: FLOPs are left out
            return None


def parameter_counts(task: Task, widths: Sequence[float]) -> dict[float, int]:
    """Parameters of ``make_model(width)`` at each width; raise ExperimentError when the width
    does not change the model (the same count at every width)."""
    counts = {}
    for width in widths:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            counts[width] = pf.count_parameters(task.build(width, 0))
    if len(widths) > 1 and len(set(counts.values())) == 1:
        raise ExperimentError(
            f"make_model returned {next(iter(counts.values()))} parameters at every width "
            f"({', '.join(map(str, widths))}): it must use its width argument to size the model, "
            "e.g. nn.Linear(n_in, width) for the hidden layers")
    return counts


def _count(task: Task, width: int) -> int:
    """Parameters of ``make_model(width)``: built on the meta device when the factory allows."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        try:
            with torch.device("meta"):
                return pf.count_parameters(task.build(width, 0))
        except Exception:  # noqa: BLE001 - a factory that needs real tensors: build it for real
            return pf.count_parameters(task.build(width, 0))


def matching_width(task: Task, target_params: int, start: float = 1, limit: int = 1 << 16) -> int:
    """The integer width from ``start`` up whose model's parameter count is nearest
    ``target_params`` (counts must grow with the width)."""
    if isinstance(start, float) and not start.is_integer():
        raise ExperimentError("the width-matched control needs integer widths; your widths are "
                              f"scales ({start!r})")
    low = high = int(start)
    while _count(task, high) < target_params and high < limit:
        low, high = high, high * 2
    while low < high:  # the smallest width reaching the target
        mid = (low + high) // 2
        if _count(task, mid) >= target_params:
            high = mid
        else:
            low = mid + 1
    if low > int(start) and target_params - _count(task, low - 1) <= _count(task, low) - target_params:
        return low - 1
    return low


def fit(task: Task, width: float, seed: int, *, mode: str | None = None,
        config: pf.Config | None = None, max_epochs: int = 100, early_stopping: bool = True,
        optimizer: Callable[[Iterable[nn.Parameter]], torch.optim.Optimizer] | None = None,
        out_dir: str | Path | None = None,
        epoch_callback: Callable[[int, float], None] | None = None, name: str = "",
        model: nn.Module | None = None, restart_epochs: Sequence[int] = ()):
    """Train one (width, seed) of ``task``; returns a
    :class:`~perforate.experiments.harness.train.TrainResult` whose test score is read once, at the end.

    ``mode`` None trains the plain model (early stopping by ``config.patience`` unless
    ``early_stopping`` is False); ``"gd"``/``"pb"`` grows dendrites with :class:`pf.Grower`.
    Either way the best validation epoch is kept, judged by ``Config.better`` in the task's
    direction. ``optimizer`` (default: the task's, else Adam 1e-3) builds every optimizer.
    """
    from perforate.experiments.harness.train import (TrainResult, _controller, _dendrites, _kept_val_score,
                                             _run_epochs, count_nonzero)

    if config is not None and mode is not None and config.trial == "shadow" and task.train_epoch:
        raise ExperimentError(_SHADOW_NEEDS_DEFAULT_LOOP)
    monitored = {"score_mode": task.direction, "score_name": f"validation {task.metric_name}"}
    factory = task.optimizer or optimizer or (lambda params: torch.optim.Adam(params, lr=1e-3))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = model if model is not None else task.build(width, seed)
        train, val, test = task.loaders(seed)
        controller = _controller(model, mode, config, seed, monitored, factory, out_dir,
                                 early_stopping, restart_epochs, name)
        start = time.perf_counter()

        def train_one(live, opt, _measure, shadow_step):
            return (*task.train_one(live, train, opt, shadow_step), None)

        history, restarts, _ = _run_epochs(controller, train_one, lambda live: task.score(live, val),
                                           max_epochs, False, epoch_callback)
        model = controller.finish().eval()
        seconds = time.perf_counter() - start
        test_score = task.score(model, test)[0]
        best_epoch = controller.state.best_epoch
        return TrainResult(
            val_score=_kept_val_score(history[best_epoch], controller.state.best_score, False),
            test_score=test_score,
            params=pf.count_parameters(model), nonzero_params=count_nonzero(model),
            flops_per_sample=task.flops(model, val), epochs=len(history), seconds=seconds,
            dendrites=_dendrites(model), history=history, peak_memory_mb=None, model=model,
            restart_epochs=restarts, best_epoch=best_epoch)


# ---------------------------------------------------------------------------- the harness
class TensorBatches:
    """Minibatches of tensors ``(x, y)``: shuffled by its own seeded generator each pass (the
    harness's training order), or in order."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor, batch_size: int, seed: int | None = None):
        self.x, self.y, self.batch_size = x, y, batch_size
        self.generator = None if seed is None else torch.Generator().manual_seed(seed)

    def __iter__(self):
        n = len(self.y)
        order = (torch.randperm(n, generator=self.generator) if self.generator is not None
                 else None)
        for i in range(0, n, self.batch_size):
            if order is None:
                yield self.x[i:i + self.batch_size], self.y[i:i + self.batch_size]
            else:
                idx = order[i:i + self.batch_size]
                yield self.x[idx], self.y[idx]

    def __len__(self) -> int:
        return -(-len(self.y) // self.batch_size)


def harness_task(dataset: str, model: str, batch_size: int = 100) -> Task:
    """A harness dataset and standard model as a :class:`Task`: ``build_model`` is the factory,
    the dataset's seeded split the loaders (accuracy % or R² × 100, higher is better)."""
    from perforate.experiments.data.datasets import load_dataset
    from perforate.experiments.data.models import build_model
    from perforate.experiments.harness.settings import RunSettings

    RunSettings(dataset=dataset, model=model, batch_size=batch_size).check()
    build_model(model, load_dataset(dataset, seed=0), 1)  # a model that cannot take the data

    def make_model(width: int, seed: int) -> nn.Module:
        return build_model(model, load_dataset(dataset, seed=seed), width, seed=seed)

    def loaders(seed: int):
        d = load_dataset(dataset, seed=seed)
        return (TensorBatches(d.x_train, d.y_train, batch_size, seed=seed),
                TensorBatches(d.x_val, d.y_val, 1024), TensorBatches(d.x_test, d.y_test, 1024))

    task = load_dataset(dataset, seed=0).task
    return Task(make_model, loaders, kind=task, metric="accuracy" if task == "classification" else "r2",
                model_name=model, data_name=dataset, harness=(dataset, model))
