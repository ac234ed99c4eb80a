"""The growth policy: at a plateau, what the grower does next, and why.

Pure functions of the :class:`~perforate.grower_state.GrowerState` numbers and the
:class:`~perforate.config.Config`: no model, no optimizer, no files, no logging. The grower
(:mod:`perforate.grower`) counts the plateau (:class:`perforate.plateau.Plateau`), asks
:func:`judge_trial` whether a growth on trial paid, carries that out, then asks :func:`decide`
and carries out the action::

    plateau ──> judge_trial ──> "paid" | "failed" | ""  (the grower accepts or rolls back)
            └─> decide ──> ("grow" | "retry" | "finish" | "continue" | "hold", reason)
    pb dendrite phase epoch ──> dendrite_phase_end | cached_phase_end ──> reason | ""  (join?)
    after every epoch ──> budget_spent ──> reason | ""  (the grower finishes)

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
"""
from __future__ import annotations

from .config import CANDIDATE_FLAT_STEPS, CANDIDATE_SLICED_STEPS, Config
from .grower_state import DendritePhase, GrowerState
from .plateau import Plateau

NO_SHADOW = object()
"""``shadow_best`` of :func:`trial_paid` when no shadow run trains beside the growth."""


def mean(values: list) -> float:
    """The arithmetic mean of a non-empty list (a smoothed score)."""
    return sum(values) / len(values)


def fmt(value: float | None) -> str:
    """A score as reasons show it: 4 significant digits, "none" for None."""
    return "none" if value is None else f"{value:.4g}"


def at_plateau(plateau: Plateau, cfg: Config) -> bool:
    """``patience`` epochs without a smoothed improvement (the grower's rule and the plain
    arms' early stopper's)."""
    return plateau.stale >= cfg.patience


def trial_paid(s: GrowerState, cfg: Config, shadow_best: object = NO_SHADOW) -> bool:
    """The growth on trial beat the accepted model, smoothed and at its best epoch, and (with a
    shadow run) beat the shadow's best smoothed score ``shadow_best`` over the same epochs."""
    return (s.cycle == "growth" and s.trial_score is not None
            and cfg.better(s.cycle_best, s.cycle_from) and cfg.better(s.trial_score, s.best_score)
            and (shadow_best is NO_SHADOW or (s.cycle_best is not None
                                              and cfg.better(s.cycle_best, shadow_best))))


def judge_trial(s: GrowerState, cfg: Config, shadow_best: object = NO_SHADOW) -> tuple[str, int, str]:
    """At a plateau: ``(verdict, failures, note)``; verdict "paid" or "failed" for a growth on
    trial ("" otherwise), ``failures`` the count of growths in a row that did not pay after it."""
    if s.cycle == "growth":
        if trial_paid(s, cfg, shadow_best):
            return "paid", 0, (f"growth paid: smoothed {fmt(s.cycle_best)} > {fmt(s.cycle_from)} "
                               f"before it, best {fmt(s.trial_score)}")
        note = f"growth did not pay: smoothed best {fmt(s.cycle_best)} vs {fmt(s.cycle_from)} before it"
        if shadow_best is not NO_SHADOW:
            note += f"; shadow's smoothed best {fmt(shadow_best)}"
        return "failed", s.failures + 1, note
    gained = s.cycle_from is None or cfg.better(s.cycle_best, s.cycle_from)
    # the best architecture had more to give: growth may be tried again
    return "", 0 if s.cycle == "continue" and gained else s.failures, ""


def decide(s: GrowerState, cfg: Config, *, failed: bool = False, shadowed: bool = False) -> tuple[str, str]:
    """After :func:`judge_trial` was carried out: ``(action, reason)``. ``failed``: a growth
    did not pay; ``shadowed``: training already went on from its shadow run."""
    smoothed = " (smoothed)" if cfg.smoothing > 1 else ""
    note = f"no improvement on {fmt(s.cycle_best)}{smoothed} for {cfg.patience} epochs"
    capacity = overfit_gap(s, cfg), train_rise(s, cfg)
    blocked = blocker(s, cfg, capacity)
    if not blocked:
        action = "retry" if s.failures else "grow"
        return action, f"{note}: {action}{capacity_note(s, cfg, capacity)}"
    reason = f"{note}; no growth: {blocked}"
    if not cfg.max_epochs:
        return "finish", reason
    if failed:
        rolled = "" if shadowed else "; rolled back to the model as it was when growth began, training on"
        return "continue", reason + rolled
    return "hold", reason + "; training on to the budget"


def blocker(s: GrowerState, cfg: Config, capacity: tuple[float | None, float | None] | None = None) -> str:
    """Why the model should not grow now ("" when it may). ``capacity``: ``(overfit_gap,
    train_rise)`` of ``s`` when the caller already has them."""
    if s.best_dendrites >= cfg.max_dendrites:
        return f"max_dendrites ({cfg.max_dendrites}) reached"
    if s.failures > cfg.max_growth_retries:
        return f"{s.failures} growth step(s) in a row did not pay (max_growth_retries " \
               f"{cfg.max_growth_retries})"
    if cfg.max_epochs:
        left, need = cfg.max_epochs - s.epoch - 1, cycle_epochs(s, cfg)
        if left < need:
            return f"budget: {left} epoch(s) left, a growth cycle needs about {need}"
    gap, rise = capacity if capacity is not None else (overfit_gap(s, cfg), train_rise(s, cfg))
    if gap is not None and gap > cfg.overfit_gap:
        return (f"over-fitting: training {mean(s.train_window):.4g} vs validation "
                f"{mean(s.window):.4g} (gap {gap:.2f} > overfit_gap {cfg.overfit_gap}); more "
                "capacity would fit the training set harder")
    if rise is not None and rise > cfg.train_rise:
        return (f"still learning: the training score rose from {s.train_trace[0]:.4g} to "
                f"{s.train_trace[-1]:.4g} ({rise:.1%} > train_rise {cfg.train_rise:.0%}) over "
                f"the last {len(s.train_trace) - 1} epochs")
    return ""


def capacity_note(s: GrowerState, cfg: Config, capacity: tuple[float | None, float | None]) -> str:
    """The grow decision's note on over-fitting and learning; ``capacity``: ``(overfit_gap,
    train_rise)`` of ``s``."""
    gap, rise = capacity
    if gap is None:
        return " (no training score given: over-fitting not checked)"
    rose = "" if rise is None else f", training {rise:+.1%} over {cfg.patience} epochs"
    return (f" (training {mean(s.train_window):.4g} vs validation "
            f"{mean(s.window):.4g}: gap {gap:.2f}{rose}; capacity-limited)")


def overfit_gap(s: GrowerState, cfg: Config) -> float | None:
    """``|train - val| / max(|train|, |val|)`` of the smoothed scores when training beats
    validation (0 when it does not); None without a training score."""
    if not s.train_window or not s.window:
        return None
    train, val = mean(s.train_window), mean(s.window)
    if not cfg.better(train, val):
        return 0.0
    return abs(train - val) / max(abs(train), abs(val), 1e-12)


def train_rise(s: GrowerState, cfg: Config) -> float | None:
    """How much the smoothed training score improved over the last ``patience`` epochs, as a
    share of where it started (negative: it got worse); None without ``patience + 1`` training
    scores in this cycle."""
    trace = s.train_trace
    if len(trace) <= cfg.patience:
        return None
    change = trace[-1] - trace[0] if cfg.maximize else trace[0] - trace[-1]
    return change / max(abs(trace[0]), 1e-12)


def dendrite_phase_end(phase: DendritePhase, cfg: Config) -> str:
    """Why a pb dendrite phase ends now: its candidates stopped improving for
    ``dendrite_patience`` epochs or it reached ``dendrite_max_epochs`` ("" = it goes on)."""
    if phase.stale >= cfg.dendrite_patience:
        return f"candidates stopped improving for {cfg.dendrite_patience} epochs"
    if phase.epochs >= cfg.dendrite_max_epochs:
        return f"dendrite_max_epochs ({cfg.dendrite_max_epochs}) reached"
    return ""


def candidates_improved(new: float, best: float | None, threshold: float) -> bool:
    """A dendrite phase's summed candidate score ``new`` beat ``best`` by more than the share
    ``threshold`` (``Config.dendrite_improvement_threshold``; the first score always does)."""
    return best is None or new > best * (1 + threshold)


def cached_phase_end(cfg: Config) -> str:
    """Why a cached pb dendrite phase (``candidate_training="cached"``) ends after its one
    epoch: the candidates were fitted on the cached epoch."""
    auto = cfg.candidate_steps == "auto"  # flat layers: 20 full-batch steps at 5 x lr
    steps = (f"{CANDIDATE_FLAT_STEPS} full-batch steps (flat layers) or {CANDIDATE_SLICED_STEPS}"
             if auto else f"{cfg.candidate_steps}")
    return f"candidates trained on the cached epoch ({steps} steps at most), scored on the whole epoch"


def budget_spent(s: GrowerState, cfg: Config) -> str:
    """Why the run finishes after this epoch: ``Config.max_epochs`` is spent ("" = it goes on)."""
    if cfg.max_epochs and s.epoch + 1 >= cfg.max_epochs:
        return f"the budget of {cfg.max_epochs} epochs is spent"
    return ""


def cycle_epochs(s: GrowerState, cfg: Config) -> int:
    """Epochs a growth cycle needs to show it paid: its dendrite phase (pb) and twice the
    patience (a gain, then a plateau)."""
    dendrite = 0
    if cfg.mode == "pb":
        dendrite = 1 if cfg.candidate_training == "cached" else (s.dendrite.last_epochs
                                                                  or cfg.dendrite_max_epochs)
    return dendrite + 2 * cfg.patience
