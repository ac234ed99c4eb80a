"""The grower's actions: what :class:`perforate.Grower` carries out once the policy
(:mod:`perforate.policy`) has decided. Each function takes the grower and changes its model,
snapshots, shadow run and state; none decides whether to grow.
"""
from __future__ import annotations

import logging
import warnings
from functools import partial
from typing import TYPE_CHECKING, Any

import torch

from . import checkpoint as ckpt
from . import policy, snapshots
from .config import CANDIDATE_FLAT_LR_SCALE, CANDIDATE_FLAT_STEPS, CANDIDATE_SLICED_STEPS
from .errors import GrowthError
from .grower_state import Decision
from .growth import gd, pb
from .loop_warnings import DIRECTION_EPOCHS, ScoreDirectionWarning, direction_problem
from .measure import count_parameters
from .policy import fmt
from .shadow import ShadowRun
from .trainable import step_scheduler

if TYPE_CHECKING:
    from .grower import Grower

log = logging.getLogger("perforate")
budget_log = logging.getLogger("perforate.budget")
"""The warning that a run without ``Config.max_epochs`` ended at a plateau (its own name, so a
script that wants it silent can say so)."""


# ------------------------------------------------------------------ one epoch
def check_direction(g: Grower, score: float) -> None:
    """Warn once, at the epoch ``DIRECTION_EPOCHS``, when the scores so far move steadily the
    way the config calls worse."""
    if len(g.history) + 1 == DIRECTION_EPOCHS:
        problem = direction_problem([r["score"] for r in g.history] + [score], g.config)
        if problem:
            warnings.warn(problem, ScoreDirectionWarning, stacklevel=3)


def neuron_step(g: Grower, score: float, train: float | None) -> Decision:
    """Count the epoch's score (best, trial best, plateau); at a plateau, act on the policy."""
    s, cfg = g.state, g.config
    if train is not None:
        s.train_window = (s.train_window + [train])[-cfg.smoothing:]
        s.train_trace = (s.train_trace + [policy.mean(s.train_window)])[-(cfg.patience + 1):]
    improved = cfg.better(score, s.best_score)
    if s.cycle == "growth":  # a grown model is on trial: its best is kept aside
        if cfg.better(score, s.trial_score):
            s.trial_score, s.trial_epoch = score, s.epoch
            g.snaps.trial = snapshots.take(g.model, cfg.snapshot_device)
    elif improved:
        s.best_score, s.best_epoch, s.best_dendrites = score, s.epoch, s.dendrites
        g.snaps.set_best(snapshots.take(g.model, cfg.snapshot_device))
    key = str(s.dendrites)
    if key not in s.best_by_dendrites or cfg.better(score, s.best_by_dendrites[key]["score"]):
        s.best_by_dendrites[key] = {"score": score, "epoch": s.epoch, "params": g._params}
    if (s.plateau.update(score, cfg.smoothing, cfg.better) and s.cycle != "growth"
            and cfg.better(s.plateau.best, s.best_smoothed)):
        s.best_smoothed = s.plateau.best
    if not policy.at_plateau(s.plateau, cfg):
        return Decision(restructured=False, done=False, phase="neuron", improved=improved, epoch=s.epoch)
    return on_plateau(g, score, improved)


def on_plateau(g: Grower, score: float | None, improved: bool = False) -> Decision:
    """``patience`` epochs without a smoothed gain: judge the trial, then grow, roll back, hold
    or finish as :func:`perforate.policy.decide` says. ``score``: this epoch's (for the shadow's
    scheduler)."""
    s, cfg = g.state, g.config
    verdict, s.failures, note = policy.judge_trial(s, cfg, shadow_best(g))
    notes = [note] if note else []
    shadowed = verdict == "failed" and g._shadow is not None
    if verdict == "paid":
        accept_trial(g)
    elif shadowed:
        notes.append(continue_from_shadow(g))
    action, why = policy.decide(s, cfg, failed=verdict == "failed", shadowed=shadowed)
    reason = "; ".join(notes + [why])
    if action in ("grow", "retry"):
        if s.cycle != "growth":  # a retry keeps the first growth's starting point
            g.snaps.before = snapshots.take(g.model, cfg.snapshot_device)
        shadow_note = start_shadow(g, score)
        restore_best(g)
        return grow(g, action, f"{reason}; {shadow_note}" if shadow_note else reason, improved)
    if action == "finish":
        if g.budget_warning:
            budget_log.warning("%sno max_epochs: ended at a plateau at epoch %d; pass max_epochs=N "
                               "(your loop's epoch count) to train on to your budget",
                               g._log_prefix, s.epoch)
        return finish(g, reason, improved)
    if action == "continue" and not shadowed:  # back to where training was when growth began
        resume_before_growth(g)
    elif action == "hold":
        s.cycle, s.cycle_from, s.stale = "continue", s.best_smoothed, 0
    record(g, action, reason)
    return Decision(restructured=action == "continue", done=False, phase="neuron", event=action,
                    improved=improved, epoch=s.epoch, reason=reason)


def dendrite_step(g: Grower, row: dict[str, Any]) -> Decision:
    """A pb dendrite phase epoch: the candidates' scores; join them when they stopped improving."""
    s, cfg = g.state, g.config
    s.dendrite.epochs += 1
    if cfg.candidate_training == "cached":
        auto = cfg.candidate_steps == "auto"  # flat layers: 20 full-batch steps at 5 x lr
        pb.fit_cached(g.layers, CANDIDATE_SLICED_STEPS if auto else cfg.candidate_steps,
                      cfg.candidate_lr, cfg.candidate_passes, CANDIDATE_FLAT_STEPS if auto else None,
                      cfg.candidate_lr * CANDIDATE_FLAT_LR_SCALE if auto else None)
        for name, layer in g.layers.items():
            row[f"corr/{name}"] = round(layer.candidate_pool.layer_correlation(), 6)
        return join(g, policy.cached_phase_end(cfg), row["score"])
    total = 0.0
    for name, layer in g.layers.items():
        pool = layer.candidate_pool
        pool.remember_best()
        total += pool.layer_score()
        row[f"corr/{name}"] = round(pool.layer_correlation(), 6)
    s.dendrite.update_candidates(total, partial(policy.candidates_improved,
                                                threshold=cfg.dendrite_improvement_threshold))
    ended = policy.dendrite_phase_end(s.dendrite, cfg)
    if ended:
        return join(g, ended, row["score"])
    return Decision(restructured=False, done=False, phase="dendrite", epoch=s.epoch)


# ------------------------------------------------------------------ structure changes
def add_dendrites(g: Grower) -> Decision:
    """See :meth:`perforate.Grower.add_dendrites`."""
    if g.state.done:
        raise GrowthError("growth is done; start a new Grower to grow further")
    if g.state.phase == "dendrite":
        raise GrowthError("a dendrite phase is already running; keep calling step()")
    reason = "add_dendrites() was called"
    if growth_paid(g):  # the grown model on trial has paid: it becomes the best
        accept_trial(g)
        reason += "; the growth before it paid"
    if g.state.cycle != "growth":
        g.snaps.before = snapshots.take(g.model, g.config.snapshot_device)
    shadow_note = start_shadow(g)
    return grow(g, "grow", f"{reason}; {shadow_note}" if shadow_note else reason)


def grow(g: Grower, event: str, reason: str, improved: bool = False) -> Decision:
    """Add a dendrite (gd) or start a dendrite phase (pb)."""
    s, cfg = g.state, g.config
    s.seed_draws += 1
    generator = torch.Generator().manual_seed(cfg.seed * 1_000_003 + s.seed_draws)
    s.switch_epochs.append(s.epoch)
    if cfg.mode == "gd":
        gd.grow(g.layers, generator)
        s.dendrites += 1
        reason += f"; grew dendrite {s.dendrites}"
        start_cycle(g, "growth")
    else:
        cached = cfg.candidate_training == "cached"
        pb.start_dendrite_phase(g.layers, cfg.candidates, generator, cfg.correlation_decay,
                                cfg.candidate_cache_mb if cached else None)
        s.phase = "dendrite"
        s.dendrite.start()
        event = "dendrite_start" if event == "grow" else event
        reason += (f"; candidates for dendrite {s.dendrites + 1} train while the rest of the model "
                   "is frozen")
        g._retrain()
    record(g, event, reason)
    return Decision(restructured=True, done=False, phase=s.phase, event=event, improved=improved,
                    epoch=s.epoch, reason=reason)


def join(g: Grower, why: str, score: float | None = None) -> Decision:
    """End a dendrite phase: join the candidates that reached ``Config.join_min_correlation``
    (``score``: this epoch's, for :func:`on_plateau` when none did)."""
    s, cfg = g.state, g.config
    scores = pb.join_candidates(g.layers, cfg.join_min_correlation)
    s.dendrite.last_epochs = s.dendrite.epochs
    s.phase = "neuron"
    s.correlations.append({"epoch": s.epoch, "level": s.dendrites + 1, "layers": scores})
    joined = [n for n, v in scores.items() if v["joined"]]
    weak = [n for n, v in scores.items() if v["correlation"] < cfg.warn_min_correlation]
    if weak:
        s.weak_layers.append({"epoch": s.epoch, "level": s.dendrites + 1, "layers": weak})
        log.warning("dendrites in %s reached |correlation| below %.3f: they are unlikely to help",
                    ", ".join(weak), cfg.warn_min_correlation)
    corr = ", ".join(f"{n} {v['correlation']:.3f}" for n, v in scores.items())
    s.switch_epochs.append(s.epoch)
    if not joined:  # nothing grew: a growth step that did not pay
        record(g, "join", f"{why}: no layer's candidates reached min_correlation "
                          f"{cfg.join_min_correlation} (|correlation| {corr}): nothing joined")
        s.cycle = "growth"
        return on_plateau(g, score)
    s.dendrites += 1
    skipped = sorted(set(scores) - set(joined))
    reason = f"{why}: joined dendrite {s.dendrites} (candidates' |correlation| {corr})"
    if skipped:
        reason += f"; below min_correlation, not grown: {', '.join(skipped)}"
    start_cycle(g, "growth")
    record(g, "join", reason)
    return Decision(restructured=True, done=False, phase="neuron", event="join", epoch=s.epoch,
                    reason=reason)


def start_cycle(g: Grower, cycle: str) -> None:
    """A new neuron phase on a restructured (grown or restored) model."""
    s = g.state
    s.phase, s.cycle = "neuron", cycle
    # growth is function-preserving and a rollback returns to the best model, so patience
    # counts epochs that fail to beat the best smoothed score so far
    s.cycle_from = s.best_smoothed
    s.plateau.reset(s.best_smoothed)
    s.train_window, s.train_trace = [], []
    s.trial_score, s.trial_epoch, g.snaps.trial = None, -1, None
    g._params = count_parameters(g.model)
    g._retrain()


def accept_trial(g: Grower) -> None:
    """The grown model on trial paid: it becomes the best."""
    s = g.state
    s.best_score, s.best_epoch, s.best_dendrites = s.trial_score, s.trial_epoch, s.dendrites
    s.best_smoothed = s.cycle_best
    g.snaps.accept_trial()
    g._shadow = None
    s.trial_score, s.trial_epoch = None, -1


def growth_paid(g: Grower) -> bool:
    """:func:`perforate.policy.trial_paid` for the grower now (with its shadow's best)."""
    return policy.trial_paid(g.state, g.config, shadow_best(g))


def shadow_best(g: Grower) -> object:
    """The shadow run's best smoothed score, or :data:`perforate.policy.NO_SHADOW`."""
    return g._shadow.best_smoothed if g._shadow is not None else policy.NO_SHADOW


def finish(g: Grower, reason: str, improved: bool = False) -> Decision:
    """End growth: keep a growth on trial that paid, restore the best model."""
    s = g.state
    if s.phase == "neuron" and growth_paid(g):
        accept_trial(g)
        reason += f"; the last growth paid (smoothed {fmt(s.cycle_best)})"
    restore_best(g)
    g.snaps.before, g._shadow = None, None
    for layer in g.layers.values():
        layer.candidate_pool = None
    s.done = True
    s.cycle = "base" if s.best_dendrites == 0 else "continue"
    start_cycle(g, s.cycle)
    reason += f"; kept the best model: epoch {s.best_epoch}, score {fmt(s.best_score)}, " \
              f"{s.best_dendrites} dendrite(s) per layer"
    record(g, "done", reason)
    return Decision(restructured=True, done=True, phase="neuron", event="done", improved=improved,
                    epoch=s.epoch, reason=reason)


def restore(g: Grower, snap: dict[str, Any]) -> None:
    """Put back a snapshot of the best architecture (the best model, or that model as it was
    when a growth began)."""
    g.model = snapshots.restore(g.model, snap)
    g.state.dendrites = g.state.best_dendrites
    g._params = count_parameters(g.model)


def restore_best(g: Grower) -> None:
    """Put back the best model (when there is a snapshot of it)."""
    if g.snaps.best is not None:
        restore(g, g.snaps.best)


def resume_before_growth(g: Grower) -> None:
    """After a growth that did not pay, train on from the model as it was when the growth
    began, as the plain model would have: a failed growth costs only its own epochs, not
    also those since the best epoch. The best snapshot stays the model kept."""
    before, g.snaps.before = g.snaps.before, None
    if before is None:  # a state saved by an older version
        restore_best(g)
    else:
        restore(g, before)
    start_cycle(g, "continue")


# ------------------------------------------------------------------ the shadow run
def start_shadow(g: Grower, score: float | None = None) -> str:
    """At the start of a growth trial (trial="shadow"): the current model and its optimizer
    and scheduler states go on training as the shadow. ``score``: this epoch's score, when
    the grower has not yet stepped the scheduler for it (the shadow's scheduler then steps).
    Returns a note for the decision's reason ("" when no shadow started)."""
    if g.config.trial != "shadow" or g._shadow is not None or g.state.phase != "neuron":
        return ""
    g._shadow = ShadowRun.start(g.model, g.optimizer, g.scheduler, g.optimizer_factory,
                                g.scheduler_factory, g.state.epoch, keep=g)
    if score is not None and g.step_scheduler and g._shadow.scheduler is not None:
        step_scheduler(g._shadow.scheduler, score)
    return ("the un-grown model trains on beside it as the shadow run (trial='shadow'); the "
            "grown model is kept only if it beats it")


def take_shadow_score(g: Grower, shadow_score: Any) -> None:
    """Record the shadow's score of this epoch; a new best single score of the shadow (the
    accepted architecture, training on) becomes the best model."""
    shadow, s, cfg = g._shadow, g.state, g.config
    if shadow is None:
        return
    if shadow_score is None:
        g._shadow = None
        reason = ("trial='shadow' but step() got no shadow_score: the shadow run is dropped and "
                  "this growth is judged as under trial='rollback'; while grower.shadow_model is "
                  "not None, train it with grower.shadow_step and pass shadow_score=")
        warnings.warn(reason, stacklevel=3)
        record(g, "shadow_dropped", reason)
        return
    try:
        score = float(shadow_score)
    except (TypeError, ValueError) as exc:
        raise GrowthError(f"step() needs a number as shadow_score; got {shadow_score!r}") from exc
    g._row["shadow_score"] = score
    if shadow.record(score, cfg, g.step_scheduler) and cfg.better(score, s.best_score):
        s.best_score, s.best_epoch = score, s.epoch
        g.snaps.set_best(snapshots.take(shadow.model, cfg.snapshot_device))
    if shadow.smoothed is not None and cfg.better(shadow.smoothed, s.best_smoothed):
        s.best_smoothed = shadow.smoothed


def continue_from_shadow(g: Grower) -> str:
    """After a growth that did not beat the shadow: the live model takes the shadow's weights,
    optimizer and scheduler states, and trains on as the un-grown run would have."""
    shadow, g._shadow, g.snaps.before = g._shadow, None, None
    if shadow.steps == 0:
        log.warning("%sshadow_step() was never called during the growth trial: the shadow did "
                    "not train, so the growth was judged against a frozen model", g._log_prefix)
    restore(g, ckpt.snapshot(shadow.model))  # transient: restored at once
    start_cycle(g, "continue")
    shadow.hand_over(g.model, g.optimizer, g.scheduler)
    g.state.plateau.window = list(shadow.window)
    return (f"continued from the shadow run (the un-grown model trained beside it for "
            f"{g.state.epoch - shadow.started} epochs, {shadow.steps} steps; its best "
            f"smoothed {fmt(shadow.best_smoothed)}), with its optimizer state")


# ------------------------------------------------------------------ history and log
def record(g: Grower, event: str, reason: str) -> None:
    """Mark this epoch's history row with the event and its reason (the row being built in
    ``step``, or a new copy of the last row between epochs), keep the decision, log it."""
    s = g.state
    row = g._row if g._row is not None else (dict(g.history[-1]) if g.history else None)
    if row is not None:
        row["event"] = f"{row['event']}+{event}" if row["event"] else event
        row["reason"] = f"{row['reason']}; {reason}" if row.get("reason") else reason
        if g._row is None:
            g.history[-1] = row
    s.decisions.append({"epoch": s.epoch, "event": event, "reason": reason})
    log.info("%sepoch %d: %s: %s", g._log_prefix, s.epoch, event, reason)


def log_epoch(g: Grower, row: dict[str, Any]) -> None:
    """One line per epoch: at INFO with ``verbose``, else at DEBUG."""
    level = logging.INFO if g.verbose else logging.DEBUG
    if not log.isEnabledFor(level):
        return
    s, cfg = g.state, g.config
    best = ("new best" if cfg.better(row["score"], s.best_score) and s.phase == "neuron"
            else f"best {fmt(s.best_score)} at epoch {s.best_epoch}")
    log.log(level, "%sepoch %d [%s] %s %s (%s), %d dendrite(s), %s params, %.2f s",
            g._log_prefix, row["epoch"], row["phase"], cfg.score_name, fmt(row["score"]),
            best, row["dendrites"], f"{row['params']:,}", row["seconds"])
