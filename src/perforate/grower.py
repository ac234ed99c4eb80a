"""The growth controller: one validation score per epoch decides when and how the model grows.

Rules (both modes):
- A score counts as an improvement when ``Config.better`` says so (relative and absolute
  thresholds). Plateaus are judged on the *smoothed* score, the mean of the last
  ``Config.smoothing`` scores of the current architecture; the model kept is the best single
  epoch (snapshotted in memory).
- After ``patience`` epochs without a smoothed improvement the model is at a plateau. It is
  rolled back to the best snapshot and grows (``gd``: one trainable dendrite per layer; ``pb``:
  a dendrite phase trains candidate dendrites, then the best are joined) unless growth cannot
  help: ``max_dendrites`` reached, ``max_growth_retries`` failed growths in a row, too few
  epochs of ``Config.max_epochs`` left for a growth cycle to show it paid, the model over-fits
  (``Config.overfit_gap``) or is still learning (its training score still rising,
  ``Config.train_rise``).
- A growth cycle *paid* when its smoothed score beat the smoothed best from before it and its
  best epoch beat the best score; only then does a grown model become the best. One that did
  not pay is rolled back, and retried with fresh dendrites up to ``max_growth_retries`` times.
  With a budget, training then goes on from the model as it was when the growth began (not
  from the best epoch's snapshot, which may be many epochs older): a failed growth costs the
  budget only its own epochs.
- With ``Config.trial = "shadow"`` (:mod:`perforate.shadow`) a growth is judged against the
  un-grown model trained beside it on the same batches: it paid only if its best smoothed score
  also beat the shadow's over the same epochs; one that did not continues from the shadow
  (weights, optimizer and scheduler state), so a failed growth loses no training.
- Without a budget, a plateau where growth cannot go on ends the run (early stopping): the best
  model is restored and ``Decision.done`` is True. With ``Config.max_epochs`` the best model
  keeps training (as a plain model given the budget would) until the budget is spent, and may
  grow again if it improves.
Every decision's reason goes to ``history`` (the ``reason`` column), to ``summary()["decisions"]``
and to the ``perforate`` logger at INFO.
The grower rebuilds ``grower.optimizer`` (and scheduler) after every restructure from the
factories, holding exactly the parameters that train in the new phase.

Its whole state is public, so that a run can be resumed and a framework can drive it:
:meth:`Grower.state_dict` / :meth:`Grower.load_state_dict` (the one resume path,
:meth:`Grower.resume` and the integrations use it), :class:`GrowerState` (the decisions),
:meth:`Grower.apply_trainable` and :meth:`Grower.param_groups` (what trains in the current phase,
for integrations whose framework builds the optimizer). Files are written by
:class:`perforate.writer.RunWriter`, never by the decision logic.
"""
from __future__ import annotations

import copy
import dataclasses
import logging
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping

import torch
from torch import nn

from . import checkpoint as ckpt
from . import resuming, snapshots
from .checks import check_fields, score_problem, show
from .config import CANDIDATE_FLAT_LR_SCALE, CANDIDATE_FLAT_STEPS, CANDIDATE_SLICED_STEPS, Config
from .convert import dendritic_layers, perforate
from .errors import CheckpointError, ConfigError, GrowthError
from .guards import DIRECTION_EPOCHS, OptimizerGuard, ScoreDirectionWarning, direction_problem
from .health import DivergenceCheck
from .measure import count_parameters, flops_per_sample
from .report import BASE_COLUMNS
from .shadow import LossFn, ShadowRun
from .training import gd, pb
from .writer import RESUME_STEM, STATE_FORMAT, RunWriter, load_grower_state

log = logging.getLogger("perforate")
budget_log = logging.getLogger("perforate.budget")
"""The warning that a run without ``Config.max_epochs`` ended at a plateau (its own name, so a
script that wants it silent can say so)."""


def _mean(values: list) -> float:
    return sum(values) / len(values)


def _fmt(value: float | None) -> str:
    return "none" if value is None else f"{value:.4g}"


LR_SCALE_KEY = "perforate_lr_scale"
"""Parameter-group option recording the phase's learning-rate multiplier already in ``lr``."""

PHASES = ("neuron", "dendrite")
OptimizerFactory = Callable[[Iterable[nn.Parameter]], torch.optim.Optimizer]
SchedulerFactory = Callable[[torch.optim.Optimizer], Any]


@dataclass(frozen=True)
class Decision:
    """What ``Grower.step`` decided for this epoch."""

    restructured: bool
    """The model's structure or trainable set changed; use ``grower.optimizer`` from now on."""
    done: bool
    """Growth is over; ``grower.model`` holds the best model."""
    phase: str
    """"neuron" or "dendrite" for the coming epoch."""
    event: str = ""
    """"grow", "retry", "dendrite_start", "join", "continue" (after a growth that did not pay:
    back to the model as it was when the growth began, training on), "hold" (a plateau where
    growth cannot help, training on to the budget), "done" or ""."""
    improved: bool = False
    """This epoch's score beat the best score so far (after a growth step the grown model is
    kept only once the growth paid; see the module rules)."""
    epoch: int = 0
    reason: str = ""
    """Why this decision was taken (empty on ordinary epochs)."""


@dataclass
class GrowerState:
    """Everything the controller decides from: plain JSON values (see ``to_dict``).

    ``grower.state`` holds the live one; :meth:`Grower.state_dict` carries it under ``"state"``.
    """

    epoch: int = 0
    phase: str = "neuron"
    best_score: float | None = None
    """Best single-epoch score of an accepted architecture (the kept model's)."""
    best_epoch: int = -1
    best_smoothed: float | None = None
    """Best smoothed score of an accepted architecture."""
    cycle: str = "base"
    """What the current neuron phase is: "base" (the model as given), "growth" (after a growth
    step, not yet accepted) or "continue" (the accepted architecture training on after a plateau
    or a growth that did not pay)."""
    cycle_from: float | None = None
    """``best_smoothed`` when the cycle started (what a growth cycle must beat)."""
    cycle_best: float | None = None
    """Best smoothed score of the current cycle."""
    stale: int = 0
    """Epochs since the smoothed score last improved in this cycle."""
    window: list = dataclasses.field(default_factory=list)
    train_window: list = dataclasses.field(default_factory=list)
    train_trace: list = dataclasses.field(default_factory=list)
    """Smoothed training scores of this cycle's last ``patience + 1`` epochs."""
    trial_score: float | None = None
    """Best single-epoch score of the current growth cycle (accepted only if the growth paid)."""
    trial_epoch: int = -1
    level: int = 0  # dendrite generations in the live model
    best_level: int = 0
    failures: int = 0
    """Growth steps in a row that did not pay."""
    attempts: int = 0
    dendrite_epochs: int = 0
    dendrite_stale: int = 0
    dendrite_best: float | None = None
    last_dendrite_epochs: int = 0
    done: bool = False
    decisions: list = dataclasses.field(default_factory=list)
    """Every decision: ``{"epoch", "event", "reason"}``."""
    switch_epochs: list = dataclasses.field(default_factory=list)
    best_by_level: dict = dataclasses.field(default_factory=dict)
    correlations: list = dataclasses.field(default_factory=list)
    weak_layers: list = dataclasses.field(default_factory=list)
    trainable_flags: dict = dataclasses.field(default_factory=dict)
    """``requires_grad`` of each named parameter when the grower was built (the user's choice)."""

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> GrowerState:
        """Build from ``to_dict()`` output; fields it lacks keep their defaults. Raises
        CheckpointError naming the first field of a bad type or value."""
        if not isinstance(data, Mapping):
            raise CheckpointError(f"a grower state must be a mapping; got {show(data)}")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(map(str, set(data) - known))
        if unknown:
            raise CheckpointError(f"grower state has unknown fields {show(unknown)}: it was written by "
                                  "another version of perforate; resume it with that version")
        state = cls(**copy.deepcopy(dict(data)))
        state.validate()
        return state

    def validate(self) -> None:
        """Raise CheckpointError naming the first field of a bad type or value."""
        check_fields(self, _StateError)
        if self.phase not in PHASES:
            raise _StateError(f"phase must be one of {list(PHASES)}; got {show(self.phase)}")
        if not all(isinstance(k, str) and isinstance(v, bool) for k, v in self.trainable_flags.items()):
            raise _StateError("trainable_flags must map parameter names to true/false; got "
                              f"{show(self.trainable_flags)}")
        for f in dataclasses.fields(self):  # counts and epochs: never below 0 (or their default)
            value, default = getattr(self, f.name), f.default
            low = min(0, default) if isinstance(default, int) else 0
            if isinstance(value, int) and not isinstance(value, bool) and value < low:
                raise _StateError(f"{f.name} must be >= {low}; got {value}")


class _StateError(CheckpointError):
    def __init__(self, message: str) -> None:
        super().__init__(f"grower state field {message}; the saved state is damaged: resume from "
                         "another copy or start the run again")


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
        self._set_aside = self._set_pools_aside()
        self.optimizer_factory = optimizer_factory
        self.scheduler_factory = scheduler_factory
        self.step_scheduler = step_scheduler
        self.verbose = verbose
        self.name = name
        self._log_prefix = f"[{name}] " if name else ""
        if verbose and not log.isEnabledFor(logging.INFO):
            warnings.warn("Grower(verbose=True) logs at INFO on the 'perforate' logger, which shows "
                          "nothing yet: call logging.basicConfig(level=logging.INFO, "
                          "format='%(message)s') first", stacklevel=2)
        self.out_dir = Path(out_dir) if out_dir is not None else None
        self.writer = RunWriter(self.out_dir) if self.out_dir is not None else None
        flags = {name: p.requires_grad for name, p in model.named_parameters()}
        self.state = GrowerState(trainable_flags=flags)
        self.history: list[dict[str, Any]] = []
        self.best_version = 0
        """Counts changes of the best snapshot (a writer rewrites best files only when it moved)."""
        self._best: dict[str, Any] | None = None  # snapshots.take of the best model so far
        self._trial: dict[str, Any] | None = None  # best snapshot of a growth cycle on trial
        self._before: dict[str, Any] | None = None  # snapshot of the model when growth began
        self._shadow: ShadowRun | None = None  # the un-grown model training on (trial="shadow")
        self._example: torch.Tensor | None = None
        self._capture_handle = model.register_forward_pre_hook(self._capture_example)
        self._last_time = time.perf_counter()
        self._params = count_parameters(model)
        self.optimizer: torch.optim.Optimizer
        self.scheduler = None
        self._guard = OptimizerGuard()
        self._divergence = DivergenceCheck()  # warns once when scores or weights turn non-finite
        self._rebuild_optimizer()

    # ------------------------------------------------------------------ helpers
    @property
    def layers(self):
        return dendritic_layers(self.model)

    @property
    def phase(self) -> str:
        return self.state.phase

    @property
    def done(self) -> bool:
        return self.state.done

    @property
    def best_score(self) -> float | None:
        return self.state.best_score

    @property
    def lr_scale(self) -> float:
        """The learning-rate multiplier of the current phase: ``Config.candidate_lr_scale`` in a
        pb dendrite phase, ``Config.growth_lr_scale`` after a growth step, else 1."""
        if self.state.phase == "dendrite":
            return self.config.candidate_lr_scale
        return self.config.growth_lr_scale if self.state.cycle == "growth" else 1.0

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
        if self._shadow is None:
            return None
        return self._shadow.train_step(loss_fn)

    def _start_shadow(self, score: float | None = None) -> str:
        """At the start of a growth trial (trial="shadow"): the current model and its optimizer
        and scheduler states go on training as the shadow. ``score``: this epoch's score, when
        the grower has not yet stepped the scheduler for it (the shadow's scheduler then steps).
        Returns a note for the decision's reason ("" when no shadow started)."""
        if self.config.trial != "shadow" or self._shadow is not None or self.state.phase != "neuron":
            return ""
        self._shadow = ShadowRun.start(self.model, self.optimizer, self.scheduler, self.optimizer_factory,
                                       self.scheduler_factory, self.state.epoch, keep=self)
        sched = self._shadow.scheduler
        if score is not None and self.step_scheduler and sched is not None:
            if isinstance(sched, torch.optim.lr_scheduler.ReduceLROnPlateau):
                sched.step(score)
            else:
                sched.step()
        return ("the un-grown model trains on beside it as the shadow run (trial='shadow'); the "
                "grown model is kept only if it beats it")

    def _take_shadow_score(self, shadow_score: Any) -> None:
        """Record the shadow's score of this epoch; a new best single score of the shadow (the
        accepted architecture, training on) becomes the best model."""
        shadow, s, cfg = self._shadow, self.state, self.config
        if shadow is None:
            return
        if shadow_score is None:
            self._shadow = None
            reason = ("trial='shadow' but step() got no shadow_score: the shadow run is dropped and "
                      "this growth is judged as under trial='rollback'; while grower.shadow_model is "
                      "not None, train it with grower.shadow_step and pass shadow_score=")
            warnings.warn(reason, stacklevel=3)
            self._record("shadow_dropped", reason)
            return
        try:
            score = float(shadow_score)
        except (TypeError, ValueError) as exc:
            raise GrowthError(f"step() needs a number as shadow_score; got {shadow_score!r}") from exc
        self.history[-1]["shadow_score"] = score
        if shadow.record(score, cfg, s.epoch, self.step_scheduler) and cfg.better(score, s.best_score):
            s.best_score, s.best_epoch = score, s.epoch
            self._best = snapshots.take(shadow.model, self.config.snapshot_device)
            self.best_version += 1
        if shadow.smoothed is not None and cfg.better(shadow.smoothed, s.best_smoothed):
            s.best_smoothed = shadow.smoothed

    def _continue_from_shadow(self) -> str:
        """After a growth that did not beat the shadow: the live model takes the shadow's weights,
        optimizer and scheduler states, and trains on as the un-grown run would have."""
        shadow, self._shadow, self._before = self._shadow, None, None
        if shadow.steps == 0:
            log.warning("%sshadow_step() was never called during the growth trial: the shadow did "
                        "not train, so the growth was judged against a frozen model",
                        self._log_prefix)
        self._restore(ckpt.snapshot(shadow.model))  # transient: restored at once
        self._start_cycle("continue")
        shadow.hand_over(self.model, self.optimizer, self.scheduler)
        self.state.window = list(shadow.window)
        return (f"continued from the shadow run (the un-grown model trained beside it for "
                f"{self.state.epoch - shadow.started} epochs, {shadow.steps} steps; its best "
                f"smoothed {_fmt(shadow.best_smoothed)}), with its optimizer state")

    def _set_pools_aside(self) -> dict[str, nn.Module]:
        """A new grower starts in the neuron phase: candidate pools of an unfinished dendrite phase
        (e.g. a model saved then) leave the model; ``load_state_dict`` puts them back for a state
        saved in that phase; the first ``step`` forgets them. Pools that are all the model trains
        (a copy of a model in its dendrite phase, for ``load_state_dict``) stay."""
        pools = {n: l.candidate_pool for n, l in self.layers.items() if l.candidate_pool is not None}
        pool_params = {id(p) for pool in pools.values() for p in pool.parameters()}
        if not any(p.requires_grad and id(p) not in pool_params for p in self.model.parameters()):
            return {}
        for name in pools:
            self.layers[name].candidate_pool = None
        return pools

    def _capture_example(self, module, args):
        if torch.compiler.is_compiling():  # traced as nothing: no graph break in torch.compile
            return
        if args and isinstance(args[0], torch.Tensor):
            self._example = args[0][:1].detach().clone()
        self._capture_handle.remove()

    def _generator(self) -> torch.Generator:
        self.state.attempts += 1
        return torch.Generator().manual_seed(self.config.seed * 1_000_003 + self.state.attempts)

    # ------------------------------------------------------------------ what trains now
    def apply_trainable(self) -> list[nn.Parameter]:
        """Set ``requires_grad`` for the current phase and return the parameters that train.

        In a pb dendrite phase only the candidate pools train. Otherwise every parameter takes
        the flag it had when the grower was built (new dendrite weights train), and the
        dendrites of layers whose ``dendrites_frozen`` is set (joined pb dendrites) do not.
        The grower calls this after every restructure; an integration calls it after its
        framework rebuilt or reloaded the model.
        """
        dendrite_phase = self.state.phase == "dendrite"
        flags = self.state.trainable_flags
        for name, p in self.model.named_parameters():
            p.requires_grad_(not dendrite_phase and flags.get(name, True))
        for layer in self.layers.values():
            if dendrite_phase and layer.candidate_pool is not None:
                for p in layer.candidate_pool.trainable_parameters():
                    p.requires_grad_(True)
            elif not dendrite_phase:
                layer.freeze_dendrites(layer.dendrites_frozen)
        pb.hold_norm_statistics(self.model, hold=dendrite_phase)  # the phase keeps outputs
        return [p for p in self.model.parameters() if p.requires_grad]

    def param_groups(self, groups: Iterable[Any] | None = None) -> list[dict[str, Any]]:
        """Optimizer parameter groups for the current phase.

        ``groups`` is what an optimizer takes (parameters, or group dicts such as the
        ``param_groups`` of an optimizer a framework built the user's way); None means all of
        the model's parameters. Returns new group dicts without the model's parameters that do
        not train now (other parameters are kept), with ``lr`` and ``initial_lr`` multiplied by
        :attr:`lr_scale`. The multiplier is recorded under ``LR_SCALE_KEY``, so groups passed
        through twice, or from another phase, get the current phase's rate exactly once. Fit an
        optimizer that has not stepped yet in place with
        ``optimizer.param_groups[:] = grower.param_groups(optimizer.param_groups)``.
        """
        groups = list(self.model.parameters() if groups is None else groups)
        if groups and not isinstance(groups[0], dict):
            groups = [{"params": groups}]
        idle = {id(p) for p in self.model.parameters() if not p.requires_grad}
        scale = self.lr_scale
        out = []
        for group in groups:
            new = {**group, "params": [p for p in group["params"] if id(p) not in idle],
                   LR_SCALE_KEY: scale}
            for key in ("lr", "initial_lr"):
                if key in group:
                    new[key] = group[key] * (scale / group.get(LR_SCALE_KEY, 1.0))
            out.append(new)
        if not any(group["params"] for group in out):
            raise GrowthError("no trainable parameters are left; unfreeze some before growing")
        return out

    def _rebuild_optimizer(self) -> None:
        params = [p for p in self.model.parameters() if p.requires_grad]
        if not params:
            raise GrowthError("no trainable parameters are left; unfreeze some before growing")
        self.optimizer = self.optimizer_factory(params)
        # before a scheduler records its base lrs
        self.optimizer.param_groups[:] = self.param_groups(self.optimizer.param_groups)
        self.scheduler = self.scheduler_factory(self.optimizer) if self.scheduler_factory else None
        # a dendrite phase may train candidates outside the user's optimizer steps
        self._guard.adopt(self.optimizer, self.state.epoch, watch_new=self.state.phase == "neuron")

    def rebuild_optimizer(self) -> torch.optim.Optimizer:
        """Build ``optimizer`` and ``scheduler`` afresh from the factories (e.g. after changing
        what the factories build); the same rules as after a restructure apply."""
        self._rebuild_optimizer()
        return self.optimizer

    def _remember_best(self) -> None:
        self._best = snapshots.take(self.model, self.config.snapshot_device)
        self.best_version += 1

    def _restore_best(self) -> None:
        if self._best is not None:
            self._restore(self._best)

    def _restore(self, snap: dict[str, Any]) -> None:
        """Put back a snapshot of the best architecture (the best model, or that model as it was
        when a growth began)."""
        self.model = snapshots.restore(self.model, snap)
        self.state.level = self.state.best_level
        self._params = count_parameters(self.model)

    def _resume_before_growth(self) -> None:
        """After a growth that did not pay, train on from the model as it was when the growth
        began, as the plain model would have: a failed growth costs only its own epochs, not
        also those since the best epoch. The best snapshot stays the model kept."""
        before, self._before = self._before, None
        if before is None:  # a state saved by an older version
            self._restore_best()
        else:
            self._restore(before)
        self._start_cycle("continue")

    # ------------------------------------------------------------------ growth actions
    def add_dendrites(self) -> Decision:
        """Grow now, on the current weights (no rollback). In pb mode this starts a dendrite phase."""
        if self.state.done:
            raise GrowthError("growth is done; start a new Grower to grow further")
        if self.state.phase == "dendrite":
            raise GrowthError("a dendrite phase is already running; keep calling step()")
        reason = "add_dendrites() was called"
        if self._growth_paid():  # the grown model on trial has paid: it becomes the best
            self._accept_trial()
            reason += "; the growth before it paid"
        if self.state.cycle != "growth":
            self._before = snapshots.take(self.model, self.config.snapshot_device)
        shadow_note = self._start_shadow()
        decision = self._grow("grow", f"{reason}; {shadow_note}" if shadow_note else reason)
        if self.writer is not None:
            self.writer.between_epochs(self)
        return decision

    def _grow(self, event: str, reason: str) -> Decision:
        s, cfg = self.state, self.config
        generator = self._generator()
        s.switch_epochs.append(s.epoch)
        if cfg.mode == "gd":
            gd.grow(self.layers, generator)
            s.level += 1
            reason += f"; grew dendrite {s.level}"
            self._start_cycle("growth")
        else:
            cached = cfg.candidate_training == "cached"
            pb.start_dendrite_phase(self.layers, cfg.candidates, generator, cfg.correlation_decay,
                                    cfg.candidate_cache_mb if cached else None)
            s.phase = "dendrite"
            s.dendrite_epochs = s.dendrite_stale = 0
            s.dendrite_best = None
            event = "dendrite_start" if event == "grow" else event
            reason += (f"; candidates for dendrite {s.level + 1} train while the rest of the model "
                       "is frozen")
            self.apply_trainable()
            self._rebuild_optimizer()
        self._record(event, reason)
        return Decision(True, False, s.phase, event, epoch=s.epoch, reason=reason)

    def _start_cycle(self, cycle: str) -> None:
        """A new neuron phase on a restructured (grown or restored) model."""
        s = self.state
        s.phase, s.cycle = "neuron", cycle
        # growth is function-preserving and a rollback returns to the best model, so patience
        # counts epochs that fail to beat the best smoothed score so far
        s.cycle_from = s.cycle_best = s.best_smoothed
        s.stale = 0
        s.window, s.train_window, s.train_trace = [], [], []
        s.trial_score, s.trial_epoch, self._trial = None, -1, None
        self._params = count_parameters(self.model)
        self.apply_trainable()
        self._rebuild_optimizer()

    def _join(self, why: str) -> Decision:
        s, cfg = self.state, self.config
        scores = pb.join_candidates(self.layers, cfg.min_correlation)
        s.last_dendrite_epochs = s.dendrite_epochs
        s.phase = "neuron"
        s.correlations.append({"epoch": s.epoch, "level": s.level + 1, "layers": scores})
        joined = [n for n, v in scores.items() if v["joined"]]
        weak = [n for n, v in scores.items() if v["correlation"] < cfg.correlation_floor]
        if weak:
            s.weak_layers.append({"epoch": s.epoch, "level": s.level + 1, "layers": weak})
            log.warning("dendrites in %s reached |correlation| below %.3f: they are unlikely to help",
                        ", ".join(weak), cfg.correlation_floor)
        corr = ", ".join(f"{n} {v['correlation']:.3f}" for n, v in scores.items())
        s.switch_epochs.append(s.epoch)
        if not joined:  # nothing grew: a growth step that did not pay
            self._record("join", f"{why}: no layer's candidates reached min_correlation "
                                 f"{cfg.min_correlation} (|correlation| {corr}): nothing joined")
            s.cycle = "growth"
            return self._plateau()
        s.level += 1
        skipped = sorted(set(scores) - set(joined))
        reason = f"{why}: joined dendrite {s.level} (candidates' |correlation| {corr})"
        if skipped:
            reason += f"; below min_correlation, not grown: {', '.join(skipped)}"
        self._start_cycle("growth")
        self._record("join", reason)
        return Decision(True, False, "neuron", "join", epoch=s.epoch, reason=reason)

    def _growth_paid(self) -> bool:
        """The current growth cycle beat the accepted model: smoothed and at its best epoch."""
        s, cfg = self.state, self.config
        return (s.cycle == "growth" and s.trial_score is not None
                and cfg.better(s.cycle_best, s.cycle_from) and cfg.better(s.trial_score, s.best_score)
                and (self._shadow is None or self._shadow.beaten_by(s.cycle_best, cfg)))

    def _accept_trial(self) -> None:
        s = self.state
        s.best_score, s.best_epoch, s.best_level = s.trial_score, s.trial_epoch, s.level
        s.best_smoothed = s.cycle_best
        self._best, self._trial, self._before, self._shadow = self._trial, None, None, None
        self.best_version += 1
        s.trial_score, s.trial_epoch = None, -1

    def _finish(self, reason: str) -> Decision:
        s = self.state
        if s.phase == "neuron" and self._growth_paid():
            self._accept_trial()
            reason += f"; the last growth paid (smoothed {_fmt(s.cycle_best)})"
        self._restore_best()
        self._before = self._shadow = None
        for layer in self.layers.values():
            layer.candidate_pool = None
        s.done = True
        s.cycle = "base" if s.best_level == 0 else "continue"
        self._start_cycle(s.cycle)
        reason += f"; kept the best model: epoch {s.best_epoch}, score {_fmt(s.best_score)}, " \
                  f"{s.best_level} dendrite(s) per layer"
        self._record("done", reason)
        return Decision(True, True, "neuron", "done", epoch=s.epoch, reason=reason)

    def finish(self) -> nn.Module:
        """End growth now (e.g. the epoch budget ran out): restore the best model, write outputs.

        A growth cycle still on trial is kept if it paid so far (see the module rules). When
        writing the outputs failed (:class:`CheckpointError`, e.g. disk full), call it again."""
        if not self.state.done:
            self._finish("finish() was called")
        if self.writer is not None and not self.writer.ended:
            self.writer.run_end(self)
        return self.model

    def flush(self) -> None:
        """Wait until the files of every step so far are in ``out_dir`` (``finish`` does this;
        e.g. before reading them, or resuming the run, in this process)."""
        if self.writer is not None:
            self.writer.flush(self)

    # ------------------------------------------------------------------ the epoch step
    def step(self, val_score: float, *, shadow_score: float | None = None,
             **extra_scores: float) -> Decision:
        """Record one epoch's validation score (and any extra scores) and decide what happens next.

        A training score in the validation score's direction (``train_score=``, or
        ``train_acc=`` / ``train_loss=`` for a maximised / minimised score) lets the grower
        tell over-fitting from under-fitting (``Config.overfit_gap``). ``shadow_score``: the
        validation score of :attr:`shadow_model` while it is not None (``Config.trial``).
        """
        try:
            score = float(val_score)
        except (TypeError, ValueError) as exc:
            raise GrowthError(f"step() needs a number as val_score; got {val_score!r}") from exc
        if score_problem(score, self.config.maximize):
            raise GrowthError(score_problem(score, self.config.maximize))
        extra = _extra_scores(extra_scores)
        self._set_aside = {}  # no load_state_dict came: they are stale
        s, cfg = self.state, self.config
        if s.done:
            return Decision(False, True, "neuron", "done", epoch=s.epoch)
        self._guard.check()
        self._divergence.check(s.epoch, self.model, extra, self._log_prefix)
        now = time.perf_counter()
        row = {"epoch": s.epoch, "phase": s.phase, "score": score,
               "lr": self.optimizer.param_groups[0].get("lr", float("nan")),
               "params": self._params, "dendrites": s.level,
               "seconds": round(now - self._last_time, 6), "event": ""}
        row.update(extra)
        self._last_time = now
        self.history.append(row)
        self._log_epoch(row)
        if len(self.history) == DIRECTION_EPOCHS:
            problem = direction_problem([r["score"] for r in self.history], self.config)
            if problem:
                warnings.warn(problem, ScoreDirectionWarning, stacklevel=2)
        self._take_shadow_score(shadow_score)
        if s.phase == "dendrite":
            decision = self._dendrite_step(row)
        else:
            decision = self._neuron_step(score, self._train_score(extra))
        if not decision.done and cfg.max_epochs and s.epoch + 1 >= cfg.max_epochs:
            decision = self._finish(f"the budget of {cfg.max_epochs} epochs is spent")
        if self.step_scheduler and self.scheduler is not None and not decision.restructured:
            if isinstance(self.scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
                self.scheduler.step(score)
            else:
                self.scheduler.step()
        s.epoch += 1
        if self.writer is not None:
            self.writer.epoch_end(self, decision)
        return decision

    def _train_score(self, extra: Mapping[str, float]) -> float | None:
        names = ("train_score", "train_acc") if self.config.maximize else ("train_score", "train_loss")
        for name in names:
            value = extra.get(name)  # a float (see _extra_scores)
            if value is not None and value == value:  # not NaN
                return value
        return None

    def _neuron_step(self, score: float, train: float | None) -> Decision:
        s, cfg = self.state, self.config
        s.window = (s.window + [score])[-cfg.smoothing:]
        if train is not None:
            s.train_window = (s.train_window + [train])[-cfg.smoothing:]
            s.train_trace = (s.train_trace + [_mean(s.train_window)])[-(cfg.patience + 1):]
        smoothed = _mean(s.window)
        improved = cfg.better(score, s.best_score)
        if s.cycle == "growth":  # a grown model is on trial: its best is kept aside
            if cfg.better(score, s.trial_score):
                s.trial_score, s.trial_epoch = score, s.epoch
                self._trial = snapshots.take(self.model, self.config.snapshot_device)
        elif improved:
            s.best_score, s.best_epoch, s.best_level = score, s.epoch, s.level
            self._remember_best()
        key = str(s.level)
        if key not in s.best_by_level or cfg.better(score, s.best_by_level[key]["score"]):
            s.best_by_level[key] = {"score": score, "epoch": s.epoch, "params": self._params}
        if cfg.better(smoothed, s.cycle_best):
            s.cycle_best, s.stale = smoothed, 0
            if s.cycle != "growth" and cfg.better(smoothed, s.best_smoothed):
                s.best_smoothed = smoothed
        else:
            s.stale += 1
        if s.stale < cfg.patience:
            return Decision(False, False, "neuron", improved=improved, epoch=s.epoch)
        return self._plateau(improved)

    def _plateau(self, improved: bool = False) -> Decision:
        """``patience`` epochs without a smoothed gain: grow, roll back, hold or finish."""
        s, cfg = self.state, self.config
        gained = s.cycle_from is None or cfg.better(s.cycle_best, s.cycle_from)
        notes = []
        failed = False
        if s.cycle == "growth":
            if self._growth_paid():
                notes.append(f"growth paid: smoothed {_fmt(s.cycle_best)} > {_fmt(s.cycle_from)} "
                             f"before it, best {_fmt(s.trial_score)}")
                self._accept_trial()
                s.failures = 0
            else:
                failed = True
                s.failures += 1
                notes.append(f"growth did not pay: smoothed best {_fmt(s.cycle_best)} vs "
                             f"{_fmt(s.cycle_from)} before it")
                if self._shadow is not None:
                    notes.append(f"shadow's smoothed best {_fmt(self._shadow.best_smoothed)}")
                    notes.append(self._continue_from_shadow())
        elif s.cycle == "continue" and gained:
            s.failures = 0  # the best architecture had more to give: growth may be tried again
        blocked = self._growth_blocker()
        if not blocked:
            event = "retry" if s.failures else "grow"
            notes.append(f"{self._plateau_note()}: {event}{self._capacity_note()}")
            if s.cycle != "growth":  # a retry keeps the first growth's starting point
                self._before = snapshots.take(self.model, self.config.snapshot_device)
            shadow_note = self._start_shadow(self.history[-1]["score"] if self.history else None)
            self._restore_best()
            return self._grow(event, "; ".join(notes + ([shadow_note] if shadow_note else [])))
        notes.append(f"{self._plateau_note()}; no growth: {blocked}")
        if not cfg.max_epochs:
            if self.budget_warning:
                budget_log.warning("%sno max_epochs: ended at a plateau at epoch %d; pass "
                                   "max_epochs=N (your loop's epoch count) to train on to your "
                                   "budget", self._log_prefix, s.epoch)
            return self._finish("; ".join(notes))
        if failed and s.cycle == "continue":  # on from the shadow (trial="shadow")
            reason = "; ".join(notes)
            self._record("continue", reason)
            return Decision(True, False, "neuron", "continue", improved, s.epoch, reason)
        if failed:  # back to where training was when growth began, and on from there
            self._resume_before_growth()
            notes.append("rolled back to the model as it was when growth began, training on")
            reason = "; ".join(notes)
            self._record("continue", reason)
            return Decision(True, False, "neuron", "continue", improved, s.epoch, reason)
        s.cycle, s.cycle_from, s.stale = "continue", s.best_smoothed, 0
        notes.append("training on to the budget")
        reason = "; ".join(notes)
        self._record("hold", reason)
        return Decision(False, False, "neuron", "hold", improved, s.epoch, reason)

    def _growth_blocker(self) -> str:
        """Why the model should not grow now ("" when it may)."""
        s, cfg = self.state, self.config
        if s.best_level >= cfg.max_dendrites:
            return f"max_dendrites ({cfg.max_dendrites}) reached"
        if s.failures > cfg.max_growth_retries:
            return f"{s.failures} growth step(s) in a row did not pay (max_growth_retries " \
                   f"{cfg.max_growth_retries})"
        if cfg.max_epochs:
            left, need = cfg.max_epochs - s.epoch - 1, self.cycle_epochs()
            if left < need:
                return f"budget: {left} epoch(s) left, a growth cycle needs about {need}"
        gap = self.overfit_gap()
        if gap is not None and gap > cfg.overfit_gap:
            return (f"over-fitting: training {_mean(s.train_window):.4g} vs validation "
                    f"{_mean(s.window):.4g} (gap {gap:.2f} > overfit_gap {cfg.overfit_gap}); more "
                    "capacity would fit the training set harder")
        rise = self.train_rise()
        if rise is not None and rise > cfg.train_rise:
            return (f"still learning: the training score rose from {s.train_trace[0]:.4g} to "
                    f"{s.train_trace[-1]:.4g} ({rise:.1%} > train_rise {cfg.train_rise:.0%}) over "
                    f"the last {len(s.train_trace) - 1} epochs")
        return ""

    def train_rise(self) -> float | None:
        """How much the smoothed training score improved over the last ``patience`` epochs, as a
        share of where it started (negative: it got worse); None without ``patience + 1``
        training scores in this cycle."""
        trace = self.state.train_trace
        if len(trace) <= self.config.patience:
            return None
        change = trace[-1] - trace[0] if self.config.maximize else trace[0] - trace[-1]
        return change / max(abs(trace[0]), 1e-12)

    def _plateau_note(self) -> str:
        smoothed = " (smoothed)" if self.config.smoothing > 1 else ""
        return f"no improvement on {_fmt(self.state.cycle_best)}{smoothed} for {self.config.patience} epochs"

    def _capacity_note(self) -> str:
        gap = self.overfit_gap()
        if gap is None:
            return " (no training score given: over-fitting not checked)"
        rise = self.train_rise()
        rose = "" if rise is None else f", training {rise:+.1%} over {self.config.patience} epochs"
        return (f" (training {_mean(self.state.train_window):.4g} vs validation "
                f"{_mean(self.state.window):.4g}: gap {gap:.2f}{rose}; capacity-limited)")

    def overfit_gap(self) -> float | None:
        """``|train - val| / max(|train|, |val|)`` of the smoothed scores when training beats
        validation (0 when it does not); None without a training score."""
        s = self.state
        if not s.train_window or not s.window:
            return None
        train, val = _mean(s.train_window), _mean(s.window)
        if not self.config.better(train, val):
            return 0.0
        return abs(train - val) / max(abs(train), abs(val), 1e-12)

    def cycle_epochs(self) -> int:
        """Epochs a growth cycle needs to show it paid: its dendrite phase (pb) and twice the
        patience (a gain, then a plateau)."""
        cfg = self.config
        dendrite = 0
        if cfg.mode == "pb":
            if cfg.candidate_training == "cached":
                dendrite = 1
            else:
                dendrite = self.state.last_dendrite_epochs or cfg.dendrite_max_epochs
        return dendrite + 2 * cfg.patience

    def _dendrite_step(self, row: dict[str, Any]) -> Decision:
        s, cfg = self.state, self.config
        s.dendrite_epochs += 1
        if cfg.candidate_training == "cached":
            auto = cfg.candidate_steps == "auto"  # flat layers: 20 full-batch steps at 5 x lr
            pb.fit_cached(self.layers, CANDIDATE_SLICED_STEPS if auto else cfg.candidate_steps,
                          cfg.candidate_lr, cfg.candidate_passes, CANDIDATE_FLAT_STEPS if auto else None,
                          cfg.candidate_lr * CANDIDATE_FLAT_LR_SCALE if auto else None)
            for name, layer in self.layers.items():
                row[f"corr/{name}"] = round(layer.candidate_pool.layer_correlation(), 6)
            steps = (f"{CANDIDATE_FLAT_STEPS} full-batch steps (flat layers) or {CANDIDATE_SLICED_STEPS}"
                     if auto else f"{cfg.candidate_steps}")
            return self._join(f"candidates trained on the cached epoch ({steps} steps at most), "
                              "scored on the whole epoch")
        total = 0.0
        for name, layer in self.layers.items():
            pool = layer.candidate_pool
            pool.remember_best()
            total += pool.layer_score()
            row[f"corr/{name}"] = round(pool.layer_correlation(), 6)
        if s.dendrite_best is None or total > s.dendrite_best * (1 + cfg.correlation_improvement):
            s.dendrite_best, s.dendrite_stale = total, 0
        else:
            s.dendrite_stale += 1
        if s.dendrite_stale >= cfg.dendrite_patience or s.dendrite_epochs >= cfg.dendrite_max_epochs:
            return self._join(f"candidates stopped improving for {cfg.dendrite_patience} epochs"
                              if s.dendrite_stale >= cfg.dendrite_patience
                              else f"dendrite_max_epochs ({cfg.dendrite_max_epochs}) reached")
        return Decision(False, False, "dendrite", epoch=s.epoch)

    # ------------------------------------------------------------------ outputs
    def _record(self, event: str, reason: str) -> None:
        """Mark this epoch's history row with the event and its reason, keep it, log it."""
        s = self.state
        if self.history:
            row = self.history[-1]
            row["event"] = f"{row['event']}+{event}" if row["event"] else event
            row["reason"] = f"{row['reason']}; {reason}" if row.get("reason") else reason
        s.decisions.append({"epoch": s.epoch, "event": event, "reason": reason})
        log.info("%sepoch %d: %s: %s", self._log_prefix, s.epoch, event, reason)

    def _log_epoch(self, row: dict[str, Any]) -> None:
        """One line per epoch: at INFO with ``verbose``, else at DEBUG."""
        level = logging.INFO if self.verbose else logging.DEBUG
        if not log.isEnabledFor(level):
            return
        s, cfg = self.state, self.config
        best = ("new best" if cfg.better(row["score"], s.best_score) and s.phase == "neuron"
                else f"best {_fmt(s.best_score)} at epoch {s.best_epoch}")
        log.log(level, "%sepoch %d [%s] %s %s (%s), %d dendrite(s), %s params, %.2f s",
                self._log_prefix, row["epoch"], row["phase"], cfg.score_name, _fmt(row["score"]),
                best, row["dendrites"], f"{row['params']:,}", row["seconds"])

    def summary(self) -> dict[str, Any]:
        """Best score per architecture, parameters, FLOPs, switch epochs, correlations, config."""
        s = self.state
        flops = None
        if self._example is not None:
            try:
                flops = flops_per_sample(self.model, self._example)
            except Exception:  # a model whose forward needs more than one tensor
                flops = None
        return {
            "best_score": s.best_score, "best_epoch": s.best_epoch, "best_dendrites": s.best_level,
            "epochs": s.epoch, "done": s.done, "phase": s.phase,
            "params": count_parameters(self.model), "flops_per_sample": flops,
            "dendrites_by_layer": {n: l.num_dendrites for n, l in self.layers.items()},
            "best_by_dendrites": s.best_by_level, "switch_epochs": s.switch_epochs,
            "correlations": s.correlations, "weak_layers": s.weak_layers,
            "decisions": s.decisions, "config": self.config.to_dict(),
        }

    # ------------------------------------------------------------------ state and resume
    def state_dict(self, model: bool = True, optimizer: bool = True) -> dict[str, Any]:
        """The grower's state: what :meth:`load_state_dict` needs to continue the run.

        Always: ``"config"``, ``"state"`` (:class:`GrowerState` as a dict), ``"history"``,
        ``"structure"`` (the live model's wrapping), all JSON-able, and ``"best"`` (the best
        model's structure and tensors, or None) with ``"best_version"``, ``"trial"`` (the best
        grown model of a growth cycle on trial) and ``"before"`` (the model when that growth
        began), each None outside a growth cycle. With ``model``:
        ``"model"``, the live model's state dict. With ``optimizer``: ``"optimizer"`` and
        ``"scheduler"`` state dicts and ``"optimizer_params"``, the optimizer's parameter names
        by group (its state is loaded by name). As in ``nn.Module.state_dict``, tensors are references, not
        copies. A framework that checkpoints the model and optimizer itself passes
        ``model=False, optimizer=False``.
        """
        out: dict[str, Any] = {
            "format": STATE_FORMAT, "config": self.config.to_dict(), "state": self.state.to_dict(),
            "history": [dict(row) for row in self.history], "structure": ckpt.structure(self.model),
            "best": snapshots.in_memory(self._best), "best_version": self.best_version,
            "trial": snapshots.in_memory(self._trial), "before": snapshots.in_memory(self._before),
        }
        if model:
            out["model"] = self.model.state_dict()
        if optimizer:
            out["optimizer"] = self.optimizer.state_dict()
            out["optimizer_params"] = ckpt.optimizer_param_names(self.optimizer, self.model)
            out["scheduler"] = self.scheduler.state_dict() if self.scheduler is not None else None
        return out

    def load_state_dict(self, state_dict: Mapping[str, Any]) -> None:
        """Continue from :meth:`state_dict` output (its model and optimizer parts are optional).

        Restores the decisions, history and best snapshot; when present, the model's structure
        and weights. Then applies the saved phase's trainable set (:meth:`apply_trainable`),
        rebuilds the optimizer and scheduler for it and, when present, loads their states
        (matched to the parameters by name): from here ``step`` decides as the saved grower
        would have. Without a model part, a state saved in a pb dendrite phase needs the model's
        candidate pools (loaded into the model before this grower was built). The config is not
        replaced; build the grower with ``Config.from_dict(state_dict["config"])`` (as
        :meth:`resume` does). A malformed state raises :class:`CheckpointError`.
        """
        _check_state_dict(state_dict)
        source = "the grower state"
        if "model" in state_dict:
            self.model = ckpt.apply_structure(self.model, state_dict["structure"], state_dict["model"], source)
            ckpt.load_state(self.model, state_dict["model"], source)
        state = GrowerState.from_dict(state_dict["state"])
        best, trial, before = state_dict["best"], state_dict.get("trial"), state_dict.get("before")
        if best is not None:
            ckpt.check_snapshot(self.model, best, f"{source}'s best model")
        if trial is not None:
            ckpt.check_snapshot(self.model, trial, f"{source}'s grown model on trial")
        if before is not None:
            ckpt.check_snapshot(self.model, before, f"{source}'s model from before the growth")
        self._place_pools(state.phase)
        self.state = state
        self._shadow = None
        if self.config.trial == "shadow" and state.cycle == "growth":
            log.info("%sthe shadow run of the growth trial is not saved with the grower state: this "
                     "trial is judged as under trial='rollback'", self._log_prefix)
        if state.phase == "dendrite" and self.config.candidate_training == "cached":
            for layer in self.layers.values():  # the cached epoch starts again
                if layer.candidate_pool is not None:
                    layer.candidate_pool.start_caching(self.config.candidate_cache_mb)
        self.history = [dict(row) for row in state_dict["history"]]
        self._best, self.best_version = best, state_dict["best_version"]
        self._trial, self._before = trial, before
        self._params = count_parameters(self.model)
        self.apply_trainable()
        self._rebuild_optimizer()
        if state_dict.get("optimizer") is not None:
            factory_lrs = resuming.learning_rates(self.optimizer)
            saved = ckpt.match_optimizer_state(state_dict["optimizer"], state_dict.get("optimizer_params"),
                                               self.optimizer, self.model)
            try:
                self.optimizer.load_state_dict(saved)
            except (ValueError, KeyError, TypeError, RuntimeError) as exc:
                raise CheckpointError(f"the saved optimizer state does not fit the optimizer: {exc}; "
                                      "build it with the same factory") from exc
            resuming.note_learning_rates(factory_lrs, self.optimizer, f"{self._log_prefix}epoch {state.epoch}: ")
        if self.scheduler is not None and state_dict.get("scheduler") is not None:
            self.scheduler.load_state_dict(ckpt.match_scheduler_state(state_dict["scheduler"], self.scheduler))
        if self.writer is not None:
            self.writer.restart(self)

    def _place_pools(self, phase: str) -> None:
        """Give the layers candidate pools exactly when ``phase`` is a dendrite phase."""
        layers = self.layers
        for name, pool in self._set_aside.items():
            if name in layers and layers[name].candidate_pool is None:
                layers[name].candidate_pool = pool
        self._set_aside = {}
        if phase == "neuron":
            for layer in layers.values():
                layer.candidate_pool = None
        elif any(layer.candidate_pool is None for layer in layers.values()):
            raise CheckpointError("the grower state was saved in a pb dendrite phase but the model "
                                  "has no candidate pools; load the weights saved with that state "
                                  "into the model first, or pass the state with its model part")

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
        folder = Path(out_dir) / "state"
        if not (folder / f"{RESUME_STEM}.safetensors").is_file():
            raise CheckpointError(f"no resumable run in {out_dir} (no state/{RESUME_STEM}.safetensors); "
                                  "was it started with out_dir set and checkpoint_every > 0?")
        state_dict = load_grower_state(folder)
        _check_state_dict(state_dict)
        saved_state = state_dict["state"]
        prefix = f"{f'[{name}] ' if name else ''}epoch {saved_state.get('epoch')}: "
        config = resuming.resumed_config(state_dict["config"], config, saved_state.get("phase"),
                                         out_dir, prefix)
        model = ckpt.apply_structure(base_model, state_dict["structure"], state_dict.get("model"), folder)
        grower = cls(model, config, optimizer_factory, scheduler_factory, out_dir, step_scheduler,
                     verbose=verbose, name=name)
        grower.load_state_dict(state_dict)
        return grower


def _extra_scores(scores: Mapping[str, Any]) -> dict[str, float]:
    """The extra scores given to ``step`` as numbers; names must not be history columns."""
    out = {}
    for name, value in scores.items():
        if name in BASE_COLUMNS or name.startswith("corr/"):
            raise GrowthError(f"step() got an extra score named '{name}', which is a history "
                              f"column; give it another name, e.g. 'val_{name}'")
        try:
            out[name] = float(value)
        except (TypeError, ValueError) as exc:
            raise GrowthError(f"step() needs numbers as extra scores; got {name}={show(value)}") from exc
    return out


def _is_scalar(value: Any) -> bool:
    return value is None or isinstance(value, (bool, int, float, str))


def _tensors(value: Any) -> bool:
    return isinstance(value, dict) and all(isinstance(k, str) and isinstance(v, torch.Tensor)
                                           for k, v in value.items())


def _check_state_dict(sd: Any) -> None:
    """Raise CheckpointError unless ``sd`` has the parts and types of a ``Grower.state_dict()``
    (the values inside are checked where they are used)."""
    if not isinstance(sd, Mapping) or sd.get("format") != STATE_FORMAT:
        found = sd.get("format") if isinstance(sd, Mapping) else sd
        raise CheckpointError(f"not a grower state (format {show(found)}); pass what "
                              "Grower.state_dict() returned")
    checks = {
        "config": lambda v: isinstance(v, dict), "state": lambda v: isinstance(v, dict),
        "structure": lambda v: isinstance(v, dict),
        "history": lambda v: isinstance(v, list) and all(
            isinstance(row, dict) and all(isinstance(k, str) and _is_scalar(x) for k, x in row.items())
            for row in v),
        "best": lambda v: v is None or (isinstance(v, dict) and isinstance(v.get("structure"), dict)
                                        and _tensors(v.get("state"))),
        "best_version": lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= 0,
    }
    optional = {"model": _tensors, "optimizer": lambda v: v is None or isinstance(v, dict),
                "scheduler": lambda v: v is None or isinstance(v, dict)}
    for key, ok in [*checks.items(), *((k, f) for k, f in optional.items() if k in sd)]:
        if not ok(sd.get(key)):
            raise CheckpointError(f"the grower state's {key} is {show(sd.get(key))}, not what "
                                  "Grower.state_dict() writes; the saved state is damaged")
