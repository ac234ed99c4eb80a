"""The growth controller: one validation score per epoch decides when and how the model grows.

:class:`Grower` carries out what the growth policy (:mod:`perforate.policy`, whose docstring
states the rules) decides. It holds the model and its optimizer (rebuilt from the factories after
every restructure, over exactly what trains: :mod:`perforate.trainable`), the snapshots
(:class:`perforate.snapshots.Snapshots`), the shadow run (:mod:`perforate.shadow`) and the state
the policy reads (:class:`GrowerState`); its actions are in :mod:`perforate.grower_actions`, its
state and resume path in :mod:`perforate.grower_io`. Every decision's reason goes to ``history``
(the ``reason`` column), ``summary()["decisions"]`` and the ``perforate`` logger at INFO. Files
are written by :class:`perforate.writer.RunWriter`, never by the decision logic.
"""
from __future__ import annotations

import logging
import time
import warnings
from pathlib import Path
from typing import Any, Iterable, Mapping

import torch
from torch import nn

from . import grower_actions as act
from . import grower_io, policy, records, trainable
from .config import Config
from .convert import dendritic_layers, perforate
from .errors import GrowthError
from .grower_state import Decision, GrowerState
from .health import DivergenceCheck
from .loop_warnings import OptimizerGuard
from .measure import count_parameters
from .shadow import LossFn, ShadowRun
from .snapshots import Snapshots
from .trainable import LR_SCALE_KEY, OptimizerFactory, SchedulerFactory  # noqa: F401 (importable from here)
from .validation import score_problem
from .writer import RunWriter

log = logging.getLogger("perforate")
__getattr__ = grower_io.moved_name  # PHASES, RESUME_STEM, ... moved out in the split: they warn


class Grower:
    """Grows dendrites on a perforated model, driven by one validation score per epoch.

    Args:
        model: a model from :func:`pf.perforate` (an un-wrapped model is perforated here).
        config: the :class:`Config`.
        optimizer_factory: builds an optimizer from an iterable of parameters.
        scheduler_factory: optional, builds an LR scheduler from the optimizer.
        out_dir: folder for history.csv, summary.json, growth.png, best.pt and resume state
            (see :mod:`perforate.writer`: an ordinary epoch's files are written in the
            background; :meth:`flush` waits for them); None writes nothing.
        step_scheduler: call ``scheduler.step()`` once per ``step`` (with the score for
            ReduceLROnPlateau). Set False to step a per-batch scheduler yourself.
        verbose: log a one-line summary of every epoch at INFO (else at DEBUG) on the
            ``perforate`` logger; decisions (grow, retry, join, done and why) are always logged
            at INFO. Show them with ``logging.basicConfig(level=logging.INFO)``.
        name: names the run in log lines and the growth graph's title (e.g. "gd, seed 0").

    Warns (:class:`perforate.StaleOptimizerWarning`) when the training loop keeps stepping an
    optimizer that lacks the parameters of the last restructure, and
    (:class:`perforate.ScoreDirectionWarning`) when the score moves steadily the way
    ``Config.score_mode`` calls worse.
    """

    budget_warning = True
    """Log a WARNING when a run without ``Config.max_epochs`` ends at a plateau (off on the
    growers of APIs whose runs end there by design, e.g. the perforatedai tracker's)."""

    def __init__(self, model: nn.Module, config: Config | None = None,
                 optimizer_factory: OptimizerFactory | None = None,
                 scheduler_factory: SchedulerFactory | None = None,
                 out_dir: str | Path | None = None, step_scheduler: bool = True,
                 verbose: bool = False, name: str = "") -> None:
        self.config = config or Config()
        self.config.validate()  # fields may have been changed since the config was built
        if optimizer_factory is None:
            raise GrowthError("Grower needs optimizer_factory, e.g. "
                              "lambda params: torch.optim.Adam(params, lr=1e-3)")
        if not dendritic_layers(model):
            model = perforate(model, self.config)
        for layer in dendritic_layers(model).values():
            layer.perforated = self.config.mode == "pb"  # the grower's mode decides
        self.model = model
        self._set_aside = grower_io.set_pools_aside(self)
        self.optimizer_factory, self.scheduler_factory = optimizer_factory, scheduler_factory
        self.step_scheduler, self.verbose, self.name = step_scheduler, verbose, name
        self._log_prefix = f"[{name}] " if name else ""
        if verbose and not log.isEnabledFor(logging.INFO):
            warnings.warn("Grower(verbose=True) logs at INFO on the 'perforate' logger, which shows "
                          "nothing yet: call logging.basicConfig(level=logging.INFO, "
                          "format='%(message)s') first", stacklevel=2)
        self.out_dir = Path(out_dir) if out_dir is not None else None
        self.writer = RunWriter(self.out_dir) if self.out_dir is not None else None
        self.state = GrowerState(trainable_flags={n: p.requires_grad for n, p in model.named_parameters()})
        self.history: list[dict[str, Any]] = []
        self._row: dict[str, Any] | None = None  # this epoch's history row, appended at the end of step
        self.snaps = Snapshots()  # the best model, a grown model on trial, the model before growth
        self._shadow: ShadowRun | None = None  # the un-grown model training on (trial="shadow")
        self._example: torch.Tensor | None = None
        self._capture_handle = model.register_forward_pre_hook(self._capture_example)
        self._last_time = time.perf_counter()
        self._params = count_parameters(model)
        self._guard = OptimizerGuard()
        self._divergence = DivergenceCheck()  # warns once when scores or weights turn non-finite
        self._rebuild_optimizer()

    layers = property(lambda self: dendritic_layers(self.model))
    phase = property(lambda self: self.state.phase)
    done = property(lambda self: self.state.done)
    best_score = property(lambda self: self.state.best_score)
    best_version = property(lambda self: self.snaps.version, doc="Counts changes of the best snapshot.")
    _best = property(lambda self: self.snaps.best)
    _trial = property(lambda self: self.snaps.trial)
    _before = property(lambda self: self.snaps.before)

    @property
    def lr_scale(self) -> float:
        """The learning-rate multiplier of the current phase (:func:`perforate.trainable.lr_scale`)."""
        return trainable.lr_scale(self.config, self.state.phase, self.state.cycle)

    @property
    def shadow_model(self) -> nn.Module | None:
        """During a growth trial with ``Config.trial == "shadow"``: the un-grown model training
        beside the grown one (train it with :meth:`shadow_step`, score it on validation and pass
        ``shadow_score=`` to :meth:`step`); None otherwise."""
        return self._shadow.model if self._shadow is not None else None

    def shadow_step(self, loss_fn: LossFn) -> torch.Tensor | None:
        """Train the shadow run on the batch just trained (``trial="shadow"``): call after each
        optimizer step with ``loss_fn(model)`` computing that batch's loss, e.g.
        ``grower.shadow_step(lambda m: F.cross_entropy(m(x), y))``. The grower zeroes the
        shadow's gradients, back-propagates and steps its optimizer. Returns the loss, or None
        (and does nothing) when no shadow is training."""
        return self._shadow.train_step(loss_fn) if self._shadow is not None else None

    def _capture_example(self, module, args):
        if torch.compiler.is_compiling():  # traced as nothing: no graph break in torch.compile
            return
        if args and isinstance(args[0], torch.Tensor):
            self._example = args[0][:1].detach().clone()
        self._capture_handle.remove()

    # ------------------------------------------------------------------ what trains now
    def apply_trainable(self) -> list[nn.Parameter]:
        """Set ``requires_grad`` for the current phase and return the parameters that train
        (:func:`perforate.trainable.apply_trainable`). The grower calls this after every
        restructure; an integration calls it after its framework rebuilt or reloaded the model."""
        return trainable.apply_trainable(self.model, self.layers, self.state.phase,
                                         self.state.trainable_flags)

    def param_groups(self, groups: Iterable[Any] | None = None) -> list[dict[str, Any]]:
        """Optimizer parameter groups for the current phase, at :attr:`lr_scale`
        (:func:`perforate.trainable.param_groups`). Fit an optimizer that has not stepped yet with
        ``optimizer.param_groups[:] = grower.param_groups(optimizer.param_groups)``."""
        return trainable.param_groups(self.model, groups, self.lr_scale)

    def _retrain(self) -> None:  # after a restructure or reload: what trains, an optimizer over it
        self.apply_trainable()
        self._rebuild_optimizer()

    def _rebuild_optimizer(self) -> None:
        # a dendrite phase may train candidates outside the user's optimizer steps
        self.optimizer, self.scheduler = trainable.build_optimizer(
            self.model, self.optimizer_factory, self.scheduler_factory, self.lr_scale, self._guard,
            self.state.epoch, watch_new=self.state.phase == "neuron")

    def rebuild_optimizer(self) -> torch.optim.Optimizer:
        """Build ``optimizer`` and ``scheduler`` afresh from the factories (e.g. after changing
        what the factories build); the same rules as after a restructure apply."""
        self._rebuild_optimizer()
        return self.optimizer

    # ------------------------------------------------------------------ the policy's measures
    def overfit_gap(self) -> float | None:
        """:func:`perforate.policy.overfit_gap` now."""
        return policy.overfit_gap(self.state, self.config)

    def train_rise(self) -> float | None:
        """:func:`perforate.policy.train_rise` now."""
        return policy.train_rise(self.state, self.config)

    def cycle_epochs(self) -> int:
        """:func:`perforate.policy.cycle_epochs` now."""
        return policy.cycle_epochs(self.state, self.config)

    # ------------------------------------------------------------------ growth actions
    def add_dendrites(self) -> Decision:
        """Grow now, on the current weights (no rollback). In pb mode this starts a dendrite phase."""
        decision = act.add_dendrites(self)
        if self.writer is not None:
            records.hand_over(self, self.writer, "between")
        return decision

    def finish(self) -> nn.Module:
        """End growth now (e.g. the epoch budget ran out): restore the best model, write outputs.

        A growth cycle still on trial is kept if it paid so far (:mod:`perforate.policy`). When
        writing the outputs failed (:class:`CheckpointError`, e.g. disk full), call it again."""
        if not self.state.done:
            act.finish(self, "finish() was called")
        if self.writer is not None and not self.writer.ended:
            records.hand_over(self, self.writer, "end")
        return self.model

    def flush(self) -> None:
        """Wait until the files of every step so far are in ``out_dir`` (``finish`` does this;
        e.g. before reading them, or resuming the run, in this process)."""
        if self.writer is not None:
            records.hand_over(self, self.writer, "flush")

    # ------------------------------------------------------------------ the epoch step
    def step(self, val_score: float, *, shadow_score: float | None = None,
             **extra_scores: float) -> Decision:
        """Record one epoch's validation score (and any extra scores) and decide what happens next.

        A training score in the validation score's direction (``train_score=``, or
        ``train_acc=`` / ``train_loss=`` for a maximised / minimised score) lets the grower
        tell over-fitting from under-fitting (``Config.overfit_gap``). ``shadow_score``: the
        validation score of :attr:`shadow_model` while it is not None (``Config.trial``).
        """
        score, s, cfg = grower_io.number(val_score, "val_score"), self.state, self.config
        if score_problem(score, cfg.maximize):
            raise GrowthError(score_problem(score, cfg.maximize))
        extra = grower_io.extra_scores(extra_scores)
        self._set_aside = {}  # no load_state_dict came: they are stale
        if s.done:
            return Decision(restructured=False, done=True, phase="neuron", event="done", epoch=s.epoch)
        self._guard.check()
        self._divergence.check(s.epoch, self.model, extra, self._log_prefix)
        now = time.perf_counter()
        self._row = row = {"epoch": s.epoch, "phase": s.phase, "score": score,
                           "lr": self.optimizer.param_groups[0].get("lr", float("nan")),
                           "params": self._params, "dendrites": s.dendrites,
                           "seconds": round(now - self._last_time, 6), "event": "", **extra}
        self._last_time = now
        act.log_epoch(self, row)
        try:
            act.check_direction(self, score)
            act.take_shadow_score(self, shadow_score)
            if s.phase == "dendrite":
                decision = act.dendrite_step(self, row)
            else:
                decision = act.neuron_step(self, score, grower_io.train_score(cfg, extra))
            spent = "" if decision.done else policy.budget_spent(s, cfg)
            if spent:
                decision = act.finish(self, spent, decision.improved)
        finally:
            self._row = None
            self.history.append(row)  # complete: never edited after this
        if self.step_scheduler and self.scheduler is not None and not decision.restructured:
            trainable.step_scheduler(self.scheduler, score)
        s.epoch += 1
        if self.writer is not None:
            records.hand_over(self, self.writer, "epoch", decision)
        return decision

    # ------------------------------------------------------------------ outputs, state, resume
    def summary(self) -> dict[str, Any]:
        """Best score per architecture, parameters, FLOPs, switch epochs, correlations, config."""
        return grower_io.summary(self)

    def state_dict(self, model: bool = True, optimizer: bool = True) -> dict[str, Any]:
        """The grower's state: what :meth:`load_state_dict` needs to continue the run (the parts:
        :func:`perforate.grower_io.state_dict`). As in ``nn.Module.state_dict``, tensors are
        references, not copies. A framework that checkpoints the model and optimizer itself
        passes ``model=False, optimizer=False``."""
        return grower_io.state_dict(self, model, optimizer)

    def load_state_dict(self, state_dict: Mapping[str, Any]) -> None:
        """Continue from :meth:`state_dict` output (its model and optimizer parts are optional):
        from here ``step`` decides as the saved grower would have (details:
        :func:`perforate.grower_io.load_state_dict`). The config is not replaced; build the
        grower with ``Config.from_dict(state_dict["config"])`` (as :meth:`resume` does). A
        malformed state raises :class:`CheckpointError`."""
        grower_io.load_state_dict(self, state_dict)
        if self.writer is not None:
            records.hand_over(self, self.writer, "restart")

    @classmethod
    def resume(cls, out_dir: str | Path, base_model: nn.Module, optimizer_factory: OptimizerFactory,
               scheduler_factory: SchedulerFactory | None = None,
               step_scheduler: bool = True, *, verbose: bool = False, name: str = "",
               config: Config | None = None) -> "Grower":
        """Continue an interrupted run from the last state written to ``out_dir``.

        ``base_model`` is a fresh, un-wrapped instance of the architecture. The returned grower
        holds the model, optimizer and scheduler as they were after the last saved epoch and
        makes the same decisions an uninterrupted run would. ``grower.state.epoch`` is the
        next epoch to run. (To resume in the process that wrote the run, ``flush`` its grower.)
        ``verbose`` and ``name`` are not saved with the run: pass them as to :class:`Grower`.
        ``config``: go on with these settings instead of the saved ones, by the rule of
        :mod:`perforate.resuming` (changes are logged at INFO; those the saved state depends on,
        such as ``mode``, raise ConfigError). The optimizer keeps its saved learning rates.
        """
        model, config, state_dict = grower_io.read_run(out_dir, base_model, config, name)
        grower = cls(model, config, optimizer_factory, scheduler_factory, out_dir, step_scheduler,
                     verbose=verbose, name=name)
        grower.load_state_dict(state_dict)
        return grower
