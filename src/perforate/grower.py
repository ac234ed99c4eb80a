"""The growth controller: one validation score per epoch decides when and how the model grows.

Rules (both modes):
- A score counts as an improvement when ``Config.better`` says so (relative and absolute
  thresholds). The best model so far is snapshotted in memory.
- After ``patience`` epochs without improvement in the current cycle the model is rolled back to
  the best snapshot and grows (``gd``: one trainable dendrite per layer; ``pb``: a dendrite
  phase trains candidate dendrites, then the best are joined).
- A growth cycle that did not beat the best score from before it is retried with fresh
  dendrites up to ``max_growth_retries`` times, each from the pre-growth best model.
- Growth stops at ``max_dendrites`` or when retries run out; the best model is restored and
  ``Decision.done`` is True.
The grower rebuilds ``grower.optimizer`` (and scheduler) after every restructure from the
factories, holding exactly the parameters that train in the new phase.
"""
from __future__ import annotations

import dataclasses
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable

import torch
from torch import nn

from . import checkpoint as ckpt
from .config import Config
from .convert import dendritic_layers, perforate
from .errors import CheckpointError, GrowthError
from .measure import count_parameters, flops_per_sample
from .report import HistoryWriter, plot_growth, write_json
from .training import gd, pb

log = logging.getLogger("perforate")

RESUME_FILE = "resume.safetensors"

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
    """"grow", "retry", "dendrite_start", "join", "done" or ""."""
    improved: bool = False
    epoch: int = 0


@dataclass
class _State:
    """Everything the controller decides from; JSON-serialisable for resume."""

    epoch: int = 0
    phase: str = "neuron"
    best_score: float | None = None
    best_epoch: int = -1
    cycle_best: float | None = None
    stale: int = 0
    level: int = 0  # dendrite generations in the live model
    best_level: int = 0
    score_before_growth: float | None = None
    improved_since_growth: bool = False
    retries_left: int = 0
    attempts: int = 0
    dendrite_epochs: int = 0
    dendrite_stale: int = 0
    dendrite_best: float | None = None
    done: bool = False
    switch_epochs: list = dataclasses.field(default_factory=list)
    best_by_level: dict = dataclasses.field(default_factory=dict)
    correlations: list = dataclasses.field(default_factory=list)
    weak_layers: list = dataclasses.field(default_factory=list)
    trainable_flags: dict = dataclasses.field(default_factory=dict)


class Grower:
    """Grows dendrites on a perforated model, driven by one validation score per epoch.

    Args:
        model: a model from :func:`pf.perforate` (an un-wrapped model is perforated here).
        config: the :class:`Config`.
        optimizer_factory: builds an optimizer from an iterable of parameters.
        scheduler_factory: optional, builds an LR scheduler from the optimizer.
        out_dir: folder for history.csv, summary.json, growth.png, best.pt and resume state;
            None writes nothing.
        step_scheduler: call ``scheduler.step()`` once per ``step`` (with the score for
            ReduceLROnPlateau). Set False to step a per-batch scheduler yourself.
    """

    def __init__(self, model: nn.Module, config: Config | None = None,
                 optimizer_factory: OptimizerFactory | None = None,
                 scheduler_factory: SchedulerFactory | None = None,
                 out_dir: str | Path | None = None, step_scheduler: bool = True,
                 *, _resume: bool = False) -> None:
        self.config = config or Config()
        if optimizer_factory is None:
            raise GrowthError("Grower needs optimizer_factory, e.g. "
                              "lambda params: torch.optim.Adam(params, lr=1e-3)")
        if not dendritic_layers(model):
            model = perforate(model, self.config)
        for layer in dendritic_layers(model).values():
            layer.perforated = self.config.mode == "pb"  # the grower's mode decides
        self.model = model
        self.optimizer_factory = optimizer_factory
        self.scheduler_factory = scheduler_factory
        self.step_scheduler = step_scheduler
        self.out_dir = Path(out_dir) if out_dir is not None else None
        self.state = _State(retries_left=self.config.max_growth_retries)
        self.history: list[dict[str, Any]] = []
        self._best_snapshot: dict[str, Any] | None = None
        self._best_dirty = self._resume_best_dirty = False
        self._example: torch.Tensor | None = None
        self._capture_handle = model.register_forward_pre_hook(self._capture_example)
        self._last_time = time.perf_counter()
        self._params = count_parameters(model)
        self._history_writer = None
        if self.out_dir is not None:
            try:
                (self.out_dir / "state").mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise GrowthError(f"cannot create out_dir {self.out_dir}: {exc}; "
                                  "pass a writable folder or out_dir=None") from exc
            self._history_writer = HistoryWriter(self.out_dir / "history.csv")
        self.optimizer: torch.optim.Optimizer
        self.scheduler = None
        if not _resume:
            self.state.trainable_flags = {n: p.requires_grad for n, p in model.named_parameters()}
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

    def _capture_example(self, module, args):
        if args and isinstance(args[0], torch.Tensor):
            self._example = args[0][:1].detach().clone()
        self._capture_handle.remove()

    def _generator(self) -> torch.Generator:
        self.state.attempts += 1
        return torch.Generator().manual_seed(self.config.seed * 1_000_003 + self.state.attempts)

    def _rebuild_optimizer(self) -> None:
        params = [p for p in self.model.parameters() if p.requires_grad]
        if not params:
            raise GrowthError("no trainable parameters are left; unfreeze some before growing")
        self.optimizer = self.optimizer_factory(params)
        if self.state.phase == "dendrite":  # before a scheduler records its base lrs
            for group in self.optimizer.param_groups:
                group["lr"] *= self.config.candidate_lr_scale
        self.scheduler = self.scheduler_factory(self.optimizer) if self.scheduler_factory else None

    def rebuild_optimizer(self) -> torch.optim.Optimizer:
        """Build ``optimizer`` and ``scheduler`` afresh from the factories (e.g. after changing
        what the factories build); the same rules as after a restructure apply."""
        self._rebuild_optimizer()
        return self.optimizer

    def _restore_best(self) -> None:
        if self._best_snapshot is not None:
            self.model = ckpt.restore(self.model, self._best_snapshot)
            self.state.level = self.state.best_level

    def _set_trainable(self, trainable: bool | None) -> None:
        """Freeze everything (True->False) for a dendrite phase, or restore the user's flags."""
        for name, p in self.model.named_parameters():
            if trainable is None:
                p.requires_grad_(self.state.trainable_flags.get(name, True))
            else:
                p.requires_grad_(trainable)
        if trainable is None:
            for layer in self.layers.values():
                layer.freeze_dendrites(layer.dendrites_frozen)
        pb.hold_norm_statistics(self.model, hold=trainable is False)  # the phase keeps outputs

    # ------------------------------------------------------------------ growth actions
    def add_dendrites(self) -> Decision:
        """Grow now, on the current weights (no rollback). In pb mode this starts a dendrite phase."""
        if self.state.done:
            raise GrowthError("growth is done; start a new Grower to grow further")
        if self.state.phase == "dendrite":
            raise GrowthError("a dendrite phase is already running; keep calling step()")
        self.state.score_before_growth = self.state.best_score
        self.state.improved_since_growth = False
        return self._grow(event="grow")

    def _grow(self, event: str) -> Decision:
        s = self.state
        generator = self._generator()
        if self.config.mode == "gd":
            gd.grow(self.layers, generator)
            s.level += 1
            self._after_restructure()
        else:
            self._set_trainable(False)
            pb.start_dendrite_phase(self.layers, self.config.candidates, generator,
                                    self.config.correlation_decay)
            s.phase = "dendrite"
            s.dendrite_epochs = s.dendrite_stale = 0
            s.dendrite_best = None
            event = "dendrite_start" if event == "grow" else event
            self._rebuild_optimizer()
        s.switch_epochs.append(s.epoch)
        self._mark_event(event)
        return Decision(True, False, s.phase, event, epoch=s.epoch)

    def _after_restructure(self) -> None:
        s = self.state
        # growth is function-preserving, so a new cycle starts from the best score it rolled
        # back to: patience counts epochs that fail to beat it
        s.cycle_best = s.best_score
        s.stale = 0
        self._params = count_parameters(self.model)
        self._rebuild_optimizer()

    def _join(self) -> None:
        s = self.state
        scores = pb.join_candidates(self.layers)
        self._set_trainable(None)
        s.level += 1
        s.phase = "neuron"
        weak = [n for n, v in scores.items() if v["correlation"] < self.config.correlation_floor]
        s.correlations.append({"epoch": s.epoch, "level": s.level, "layers": scores})
        if weak:
            s.weak_layers.append({"epoch": s.epoch, "level": s.level, "layers": weak})
            log.warning("dendrites in %s reached |correlation| below %.3f: they are unlikely to help",
                        ", ".join(weak), self.config.correlation_floor)
        self._after_restructure()
        s.switch_epochs.append(s.epoch)

    def _finish(self) -> Decision:
        s = self.state
        self._restore_best()
        for layer in self.layers.values():
            layer.candidate_pool = None
        if self.config.mode == "pb":
            self._set_trainable(None)
        s.done = True
        s.phase = "neuron"
        self._after_restructure()
        self._mark_event("done")
        return Decision(True, True, "neuron", "done", epoch=s.epoch)

    def finish(self) -> nn.Module:
        """End growth now (e.g. the epoch budget ran out): restore the best model, write outputs."""
        if not self.state.done:
            self._finish()
            if self._history_writer is not None:  # "done" was marked on a row already written
                self._history_writer.write(self.history, rewrite=True)
            self._write_outputs(final=True)
        return self.model

    # ------------------------------------------------------------------ the epoch step
    def step(self, val_score: float, **extra_scores: float) -> Decision:
        """Record one epoch's validation score (and any extra scores) and decide what happens next."""
        try:
            score = float(val_score)
        except (TypeError, ValueError) as exc:
            raise GrowthError(f"step() needs a number as val_score; got {val_score!r}") from exc
        if score != score:
            raise GrowthError("val_score is NaN; check the training loop (diverged loss?)")
        s = self.state
        if s.done:
            return Decision(False, True, "neuron", "done", epoch=s.epoch)
        now = time.perf_counter()
        row = {"epoch": s.epoch, "phase": s.phase, "score": score,
               "lr": self.optimizer.param_groups[0].get("lr", float("nan")),
               "params": self._params, "dendrites": s.level,
               "seconds": round(now - self._last_time, 6), "event": ""}
        row.update({k: float(v) for k, v in extra_scores.items()})
        self._last_time = now
        self.history.append(row)
        if s.phase == "dendrite":
            decision = self._dendrite_step(row)
        else:
            decision = self._neuron_step(score)
        if self.step_scheduler and self.scheduler is not None and not decision.restructured:
            if isinstance(self.scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
                self.scheduler.step(score)
            else:
                self.scheduler.step()
        s.epoch += 1
        self._write_outputs(final=decision.done, event=bool(decision.event))
        return decision

    def _neuron_step(self, score: float) -> Decision:
        s, cfg = self.state, self.config
        improved = False
        if cfg.better(score, s.best_score):
            s.best_score, s.best_epoch, s.best_level = score, s.epoch, s.level
            self._best_snapshot = ckpt.snapshot(self.model)
            self._best_dirty = self._resume_best_dirty = True
            improved = True
            if s.attempts and cfg.better(score, s.score_before_growth):
                s.improved_since_growth = True
        key = str(s.level)
        if key not in s.best_by_level or cfg.better(score, s.best_by_level[key]["score"]):
            s.best_by_level[key] = {"score": score, "epoch": s.epoch, "params": self._params}
        if cfg.better(score, s.cycle_best):
            s.cycle_best, s.stale = score, 0
        else:
            s.stale += 1
        if s.stale < cfg.patience:
            return Decision(False, False, "neuron", improved=improved, epoch=s.epoch)
        # plateau: decide how to go on
        # before any growth the initial network has simply converged
        growth_paid = s.attempts == 0 or s.improved_since_growth
        if growth_paid:
            s.retries_left = cfg.max_growth_retries
            if s.best_level >= cfg.max_dendrites:
                return self._finish()
            event = "grow"
        elif s.retries_left > 0:
            s.retries_left -= 1
            event = "retry"
        else:
            return self._finish()
        self._restore_best()
        s.score_before_growth = s.best_score
        s.improved_since_growth = False
        return self._grow(event)

    def _dendrite_step(self, row: dict[str, Any]) -> Decision:
        s, cfg = self.state, self.config
        total = 0.0
        for name, layer in self.layers.items():
            pool = layer.candidate_pool
            pool.remember_best()
            total += pool.layer_score()
            row[f"corr/{name}"] = round(pool.layer_correlation(), 6)
        s.dendrite_epochs += 1
        if s.dendrite_best is None or total > s.dendrite_best * (1 + cfg.correlation_improvement):
            s.dendrite_best, s.dendrite_stale = total, 0
        else:
            s.dendrite_stale += 1
        if s.dendrite_stale >= cfg.dendrite_patience or s.dendrite_epochs >= cfg.dendrite_max_epochs:
            self._join()
            self._mark_event("join")
            return Decision(True, False, "neuron", "join", epoch=s.epoch)
        return Decision(False, False, "dendrite", epoch=s.epoch)

    # ------------------------------------------------------------------ outputs
    def _mark_event(self, event: str) -> None:
        if self.history:
            row = self.history[-1]
            row["event"] = f"{row['event']}+{event}" if row["event"] else event

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
            "config": self.config.to_dict(),
        }

    def _write_outputs(self, final: bool = False, event: bool = False) -> None:
        if self.out_dir is None:
            return
        self._history_writer.write(self.history)
        if self.config.checkpoint_best == "disk" and self._best_dirty:
            self._write_best()
        if event or final:
            self._write_best()
            write_json(self.out_dir / "summary.json", self.summary())
            plot_growth(self.history, self.out_dir / "growth.png",
                        title=f"perforate ({self.config.mode})")
        every = self.config.checkpoint_every
        if every and (self.state.epoch % every == 0 or event or final):
            self._write_resume_state()

    def _write_best(self) -> None:
        if self._best_snapshot is None:
            return
        snap = self._best_snapshot
        ckpt.write_tensors(self.out_dir / "best.pt", snap["state"],
                           {"structure": snap["structure"], "history": self.history,
                            "extra": {"best_score": self.state.best_score}})
        self._best_dirty = False

    def _write_resume_state(self) -> None:
        """One file per epoch: model and optimizer tensors, controller state as JSON metadata.
        The best snapshot goes to its own file, rewritten only when the best changed."""
        folder = self.out_dir / "state"
        if self._best_snapshot is not None and self._resume_best_dirty:
            self._resume_best_dirty = False
            ckpt.write_tensors(folder / "best.safetensors", self._best_snapshot["state"],
                               {"structure": self._best_snapshot["structure"]})
        optim_tensors, optim_doc = ckpt.optimizer_state_to_tensors({
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict() if self.scheduler is not None else None,
        })
        tensors = {f"model/{k}": v for k, v in self.model.state_dict().items()}
        tensors.update({f"optim/{k}": v for k, v in optim_tensors.items()})
        ckpt.write_tensors(folder / RESUME_FILE, tensors, {
            "structure": ckpt.structure(self.model), "optimizer": optim_doc,
            "config": self.config.to_dict(), "state": dataclasses.asdict(self.state),
            "history": self.history})

    # ------------------------------------------------------------------ resume
    @classmethod
    def resume(cls, out_dir: str | Path, base_model: nn.Module, optimizer_factory: OptimizerFactory,
               scheduler_factory: SchedulerFactory | None = None,
               step_scheduler: bool = True) -> "Grower":
        """Continue an interrupted run from the last state written to ``out_dir``.

        ``base_model`` is a fresh, un-wrapped instance of the architecture. The returned grower
        holds the model, optimizer and scheduler as they were after the last saved epoch and
        makes the same decisions an uninterrupted run would. ``grower.state.epoch`` is the
        next epoch to run.
        """
        folder = Path(out_dir) / "state"
        if not (folder / RESUME_FILE).is_file():
            raise CheckpointError(f"no resumable run in {out_dir} (no state/{RESUME_FILE}); was it "
                                  "started with out_dir set and checkpoint_every > 0?")
        tensors, doc = ckpt.read_tensors(folder / RESUME_FILE)
        config = Config.from_dict(doc["config"])
        model = ckpt.apply_structure(base_model, doc["structure"])
        ckpt.load_state(model, {k[6:]: v for k, v in tensors.items() if k.startswith("model/")},
                        folder / RESUME_FILE)
        grower = cls(model, config, optimizer_factory, scheduler_factory, out_dir,
                     step_scheduler, _resume=True)
        grower.state = _State(**doc["state"])
        if grower.state.phase == "dendrite":  # only the candidate pools train in a dendrite phase
            grower._set_trainable(False)
            for p in pb.candidate_parameters(grower.layers):
                p.requires_grad_(True)
        grower.history = doc["history"]
        grower._history_writer.write(grower.history)
        if (folder / "best.safetensors").exists():
            state, meta = ckpt.read_tensors(folder / "best.safetensors")
            grower._best_snapshot = {"structure": meta["structure"], "state": state}
        grower._rebuild_optimizer()
        optim_tensors = {k[6:]: v for k, v in tensors.items() if k.startswith("optim/")}
        saved = ckpt.optimizer_state_from_tensors(optim_tensors, doc["optimizer"])
        grower.optimizer.load_state_dict(saved["optimizer"])
        if grower.scheduler is not None and saved["scheduler"] is not None:
            grower.scheduler.load_state_dict({k: v for k, v in saved["scheduler"].items() if v is not None})
        return grower
