"""PyTorch Lightning: dendritic growth from one callback.

Add to an existing Lightning script (2 lines)::

    from perforate.integrations.lightning import DendriteCallback
    trainer = L.Trainer(..., callbacks=[DendriteCallback(pf.Config(patience=5), monitor="val_acc")])

What the callback does:

- ``setup``: perforates the LightningModule (all of it, filtered by ``Config.include`` /
  ``exclude``; or only ``pl_module.<attribute>`` when ``attribute`` is given) before Lightning
  builds the optimizers, and lets the module load state dicts of any dendrite count.
- once per training epoch in which validation ran (``on_train_epoch_end``, after the
  validation loop; without a validation loop: every epoch), it passes
  ``trainer.callback_metrics[monitor]`` to a :class:`perforate.Grower`. Other scalar metrics go
  into the grower's history as extra columns.
- after a restructure it rebuilds the optimizers and LR schedulers by calling the module's own
  ``configure_optimizers`` (``trainer.strategy.setup_optimizers``) and fits them to the new
  phase with ``Grower.param_groups`` (only the parameters that train; in a pb dendrite phase
  the learning rate times ``Config.candidate_lr_scale``). With
  ``schedule="continue"`` (default) each new scheduler continues the old one's progress (step
  count and current LR), so a run-long schedule is not restarted by growth; ``"restart"``
  starts each schedule afresh. ``EarlyStopping`` counters restart at each restructure
  (growth is progress): give ``EarlyStopping`` a patience larger than ``Config.patience``.
- when growth is done it restores the best model and sets ``trainer.should_stop``; when
  training ends otherwise (``max_epochs``, early stopping) ``on_fit_end`` restores the best
  model. ``callback.grower`` holds the controller (history, summary).
- logs ``perforate/dendrites``, ``perforate/dendrite_phase`` (1 during a pb dendrite phase),
  ``perforate/params`` and ``perforate/best_score`` with ``pl_module.log`` when the trainer
  has a logger.

Checkpoints: Lightning's checkpoints hold the perforated state dict (dendrite tensors
included) and the optimizer states. ``on_save_checkpoint`` adds ``checkpoint["perforate"]``
(JSON-able: config, structure, attribute) and the callback state, ``Grower.state_dict(model=False,
optimizer=False)`` (decisions, history, best snapshot), goes into ``checkpoint["callbacks"]``.
Lightning loads model weights *before* callbacks see the checkpoint, so the reload works
through a ``load_state_dict`` pre-hook that sizes each dendritic layer from the incoming tensor
shapes. On ``trainer.fit(..., ckpt_path=...)`` the grower built in ``on_fit_start`` loads the
callback state with ``Grower.load_state_dict`` (the saved phase's trainable set, optimizers
rebuilt for it) before Lightning restores the optimizer states, so growth resumes, in a pb
dendrite phase too. ``trainer.test(ckpt_path="best")`` works. Outside a Trainer use
:func:`load_checkpoint`.

DDP (``strategy="ddp"``): the score is averaged over ranks, weights are broadcast from rank 0
before each decision and the DDP wrapper is rebuilt after each restructure; only rank 0 writes
``out_dir``. Other strategies (FSDP, DeepSpeed) are refused. Lightning leaves the process
group up after ``fit``: end a CPU (gloo) DDP script with
``torch.distributed.destroy_process_group()``, or a rank may abort at exit after the last
collective ("terminate called without an active exception"; seen in 1 of 3-8 runs of our test).
"""
from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any, Mapping, Sequence

import torch
from torch import nn

from .. import CheckpointError, Config, ConfigError, Grower, GrowthError, count_parameters, dendritic_layers, perforate
from ..integration_api import (HISTORY_BASE_COLUMNS, dendrite_structure, load_weights, rebuild_structure,
                               require_extra)
from .common import carry_schedule, install_resize_hook, refuse_shadow_trials, resize_to_state
from .ddp import broadcast_module_state, reduce_score

pl = require_extra("lightning.pytorch", "lightning")

FORMAT = "perforate-lightning/2"


def _distributed() -> bool:
    return torch.distributed.is_available() and torch.distributed.is_initialized() \
        and torch.distributed.get_world_size() > 1


def _with_budget(config: Config, trainer) -> Config:
    """``config`` with the trainer's ``max_epochs`` as its budget when it has none."""
    epochs = trainer.max_epochs
    if config.max_epochs or not isinstance(epochs, int) or epochs <= 0:
        return config
    return config.replace(max_epochs=epochs)


def _target(pl_module: nn.Module, attribute: str | None) -> nn.Module:
    if attribute is None:
        return pl_module
    try:
        return pl_module.get_submodule(attribute)
    except AttributeError as exc:
        raise ConfigError(f"DendriteCallback(attribute={attribute!r}): the LightningModule has no "
                          "submodule of that name; pass the attribute holding the network, or None "
                          "for the whole module") from exc


class DendriteCallback(pl.Callback):
    """Grows dendrites on a LightningModule, driven by a logged validation metric.

    Args:
        config: the :class:`perforate.Config` (``score_mode`` is set from ``mode``, and
            ``score_name``, when left at its default, from ``monitor``).
        monitor: the logged metric fed to the grower once per validated epoch.
        mode: "max" or "min"; None takes ``config.score_mode``.
        attribute: perforate only ``pl_module.<attribute>`` (e.g. "model"); None perforates the
            whole LightningModule.
        out_dir: where the grower writes history.csv, summary.json, growth.png, best.pt
            (rank 0 only); None writes nothing.
        blocks: module-name globs or classes to wrap as one unit (see ``pf.perforate``).
        schedule: "continue" or "restart" the LR schedule after a restructure.
        log_prefix: prefix of the logged metric names.
        budget: when ``config`` has no ``max_epochs``, the grower's budget is the trainer's
            ``max_epochs``, so growth is planned in it and training goes on to it. False: no
            budget (the run ends at the first plateau where growth cannot help).
    """

    def __init__(self, config: Config | None = None, monitor: str = "val_acc", mode: str | None = None,
                 attribute: str | None = None, out_dir: str | Path | None = None,
                 blocks: Sequence[Any] = (), schedule: str = "continue",
                 log_prefix: str = "perforate/", budget: bool = True) -> None:
        config = config or Config()
        if mode is not None:
            if mode not in ("max", "min"):
                raise ConfigError(f"mode must be 'max' or 'min'; got {mode!r}")
            config = config.replace(score_mode=mode)
        if config.score_name == Config.score_name:  # the default: name the monitored metric
            config = config.replace(score_name=monitor)
        if schedule not in ("continue", "restart"):
            raise ConfigError(f"schedule must be 'continue' or 'restart'; got {schedule!r}")
        refuse_shadow_trials(config, "DendriteCallback")
        self.config = config
        self.monitor = monitor
        self.attribute = attribute
        self.out_dir = out_dir
        self.blocks = tuple(blocks)
        self.schedule = schedule
        self.log_prefix = log_prefix
        self.budget = budget
        self.grower: Grower | None = None
        self._trainer = None
        self._pending: dict[str, Any] | None = None  # a grower state loaded before on_fit_start
        self._val_ran = self._val_seen = False

    @property
    def state_key(self) -> str:
        return self._generate_state_key(monitor=self.monitor, attribute=self.attribute)

    # ------------------------------------------------------------------ setup
    def setup(self, trainer, pl_module, stage: str) -> None:
        strategy = type(trainer.strategy).__name__
        if stage == "fit" and strategy not in ("SingleDeviceStrategy", "DDPStrategy"):
            raise GrowthError(f"DendriteCallback supports single-device and DDP training; the "
                              f"{strategy} strategy is not supported yet")
        self._trainer = trainer
        target = _target(pl_module, self.attribute)
        if not dendritic_layers(target):
            wrapped = perforate(target, self.config, blocks=self.blocks)
            if wrapped is not target:  # the attribute was a single layer
                parent, _, child = self.attribute.rpartition(".")
                setattr(pl_module.get_submodule(parent) if parent else pl_module, child, wrapped)
        install_resize_hook(_target(pl_module, self.attribute))

    def on_fit_start(self, trainer, pl_module) -> None:
        # after Lightning built the optimizers, before it restores their states from a checkpoint
        self._trainer = trainer
        self.grower = None  # a new grower per fit
        target = _target(pl_module, self.attribute)
        config = _with_budget(self.config, trainer) if self.budget else self.config
        self.grower = Grower(target, config,
                             optimizer_factory=self._rebuild_optimizers,
                             out_dir=self.out_dir if trainer.is_global_zero else None,
                             step_scheduler=False)
        if self._pending is not None:
            self.grower.load_state_dict(self._pending)
            self._pending = None
            _rewrap_ddp(trainer)  # the saved phase may train another parameter set

    # ------------------------------------------------------------------ optimizers
    def _rebuild_optimizers(self, params) -> torch.optim.Optimizer:
        """The grower's optimizer factory: the module's own optimizers, fitted to the phase."""
        from lightning.fabric.utilities.optimizer import _optimizers_to_device

        trainer = self._trainer
        strategy = trainer.strategy
        old_schedulers = list(strategy.lr_scheduler_configs)
        strategy.setup_optimizers(trainer)
        _optimizers_to_device(strategy.optimizers, strategy.root_device)
        if not strategy.optimizers:
            raise GrowthError("configure_optimizers returned no optimizer; DendriteCallback needs one")
        if self.grower is not None:  # the grower fits the first optimizer itself when it is built
            for optimizer in strategy.optimizers:
                optimizer.param_groups[:] = self.grower.param_groups(optimizer.param_groups)
        carry = self.schedule == "continue"
        for i, after in enumerate(strategy.lr_scheduler_configs):
            before = old_schedulers[i].scheduler if carry and i < len(old_schedulers) else None
            carry_schedule(before, after.scheduler, getattr(before, "optimizer", None),
                           after.scheduler.optimizer)
        return strategy.optimizers[0]

    def _after_restructure(self, trainer) -> None:
        from lightning.pytorch.callbacks import EarlyStopping

        for cb in trainer.callbacks:
            if isinstance(cb, EarlyStopping):
                cb.wait_count = 0
        _rewrap_ddp(trainer)

    # ------------------------------------------------------------------ the epoch step
    def on_validation_end(self, trainer, pl_module) -> None:
        if not trainer.sanity_checking and trainer.state.fn == "fit":
            self._val_ran = True

    def _metrics(self, trainer) -> tuple[float, dict[str, float]]:
        metrics = trainer.callback_metrics
        if self.monitor not in metrics:
            raise GrowthError(f"DendriteCallback monitors '{self.monitor}', which was not logged; "
                              f"logged metrics: {sorted(metrics)}. Log it with self.log("
                              f"'{self.monitor}', ...) in validation_step or pass monitor=...")
        score = float(metrics[self.monitor])
        extras = {}
        for key, value in metrics.items():
            if key == self.monitor or key.startswith(self.log_prefix) or key in HISTORY_BASE_COLUMNS:
                continue
            if isinstance(value, torch.Tensor) and value.numel() == 1:
                extras[key] = float(value)
            elif isinstance(value, (int, float)):
                extras[key] = float(value)
        return score, extras

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        grower = self.grower
        if grower is None or grower.done:
            return
        if not self._val_ran and self._val_seen:
            return  # validation runs every n epochs: step only on validated epochs
        self._val_seen |= self._val_ran
        self._val_ran = False
        score, extras = self._metrics(trainer)
        if _distributed():
            score = reduce_score(score, "mean")
            extras = {k: reduce_score(v, "mean") for k, v in sorted(extras.items())}
            broadcast_module_state(grower.model)
        decision = grower.step(score, **extras)
        if decision.restructured:
            self._after_restructure(trainer)
        if decision.done:
            trainer.should_stop = True
        if trainer.loggers:
            self._log(pl_module)

    def _log(self, pl_module) -> None:
        grower = self.grower
        p = self.log_prefix
        values = {
            p + "dendrites": float(grower.state.dendrites),
            p + "dendrite_phase": 1.0 if grower.phase == "dendrite" else 0.0,
            p + "params": float(count_parameters(grower.model)),
        }
        if grower.best_score is not None:
            values[p + "best_score"] = float(grower.best_score)
        pl_module.log_dict(values, on_step=False, on_epoch=True, prog_bar=False, logger=True)

    def on_fit_end(self, trainer, pl_module) -> None:
        if self.grower is not None and not self.grower.done:
            if _distributed():
                broadcast_module_state(self.grower.model)
            self.grower.finish()

    # ------------------------------------------------------------------ checkpoints
    def state_dict(self) -> dict[str, Any]:
        if self.grower is None:
            return {}
        # Lightning checkpoints the model and the optimizers itself
        return {"format": FORMAT, "grower": self.grower.state_dict(model=False, optimizer=False)}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        if state_dict.get("format") != FORMAT:
            return
        if self.grower is not None:
            self.grower.load_state_dict(state_dict["grower"])
        else:
            self._pending = state_dict["grower"]

    def on_save_checkpoint(self, trainer, pl_module, checkpoint: dict[str, Any]) -> None:
        checkpoint["perforate"] = {
            "format": FORMAT, "config": self.config.to_dict(), "attribute": self.attribute,
            "structure": dendrite_structure(_target(pl_module, self.attribute)),
        }


def _rewrap_ddp(trainer) -> None:
    """DDP reduces only the parameters it saw when built: wrap the new trainable set afresh."""
    if isinstance(trainer.strategy.model, nn.parallel.DistributedDataParallel):
        trainer.strategy.model = trainer.strategy.lightning_module
        trainer.strategy.configure_ddp()


def load_checkpoint(module: nn.Module, checkpoint: str | Path | Mapping[str, Any],
                    config: Config | None = None, attribute: str | None = None,
                    blocks: Sequence[Any] = ()) -> nn.Module:
    """Load a Lightning checkpoint written with :class:`DendriteCallback` into ``module``.

    ``module`` is a fresh instance of the LightningModule (not perforated). ``checkpoint`` is a
    path, read with ``torch.load(weights_only=True)`` (no arbitrary unpickling), or a checkpoint
    dict you loaded yourself. The structure comes from ``checkpoint["perforate"]``; for
    weights-only checkpoints (which lack it) pass the ``config`` (and ``attribute``/``blocks``)
    used in training and the dendrite counts are read from the tensor shapes. Returns ``module``.
    """
    if isinstance(checkpoint, (str, Path)):
        try:
            checkpoint = torch.load(checkpoint, map_location="cpu", weights_only=True)
        except (pickle.UnpicklingError, RuntimeError, OSError) as exc:
            raise CheckpointError(f"cannot read {checkpoint} with torch.load(weights_only=True): {exc}. "
                                  "If you trust the file, load it yourself and pass the dict") from exc
    if "state_dict" not in checkpoint:
        raise CheckpointError("not a Lightning checkpoint: it has no 'state_dict'")
    state = checkpoint["state_dict"]
    info = checkpoint.get("perforate")
    if info is not None:
        attribute = info.get("attribute", attribute)
    target = _target(module, attribute)
    prefix = f"{attribute}." if attribute else ""
    if info is not None:
        wrapped = rebuild_structure(target, info["structure"])
    else:
        if config is None:
            raise CheckpointError("this checkpoint has no 'perforate' entry (saved weights-only?); "
                                  "pass the config used in training: load_checkpoint(module, path, config=cfg)")
        wrapped = target if dendritic_layers(target) else perforate(target, config, blocks=blocks)
        resize_to_state(wrapped, state, prefix)
    if wrapped is not target:
        parent, _, child = attribute.rpartition(".")
        setattr(module.get_submodule(parent) if parent else module, child, wrapped)
    load_weights(module, state, "the Lightning checkpoint")
    return module
