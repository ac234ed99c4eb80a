"""Hugging Face Transformers: dendritic growth inside ``Trainer.train()``.

Add to an existing script (2 lines)::

    from perforate.integrations.transformers import DendriteTrainerCallback
    trainer = Trainer(model=model, args=args, ...)        # unchanged
    DendriteTrainerCallback(trainer, pf.Config(patience=3))
    trainer.train()

``TrainingArguments`` must evaluate (``eval_strategy="epoch"`` or ``"steps"``); the grower is fed
``metric_for_best_model`` (default: the eval loss) and ``greater_is_better`` sets the direction.
Every Linear of the model is wrapped (``Config.include``/``exclude`` narrow it), attention and
MLP projections included (GPT-2's ``Conv1D`` too): their outputs are ``[B, T, C]`` and the
neurons sit on the last axis. The output head (``model.get_output_embeddings()``, e.g.
``lm_head``) follows the rule of ``pf.perforate``: left out unless ``Config(output_head=True)``.

Saving and loading back (identical logits, a tied ``lm_head`` included)::

    model.save_pretrained("out")                  # or trainer.save_model("out")
    fresh = load_checkpoint(GPT2LMHeadModel(GPT2Config.from_pretrained("out")), "out", config=cfg)

``config`` is the :class:`perforate.Config` the model was wrapped with (its ``include``,
``exclude`` and ``output_head`` choose the same layers again); the dendrite counts come from
the saved shapes. A *tied* head wrapped with ``output_head=True`` shares its weight with the
input embeddings under another name, which ``save_pretrained`` refuses: save it with
``pf.save``.

Why a callback bound to its trainer rather than a ``Trainer`` subclass: growth replaces the
optimizer and the LR scheduler, and the training loop reads ``trainer.optimizer`` /
``trainer.lr_scheduler`` at every step, but ``TrainerCallback`` hooks only receive those
objects, not the trainer, so a plain callback cannot swap them. Taking the trainer in the
constructor fixes that while staying composable: it works with any ``Trainer`` subclass
(``Seq2SeqTrainer``, TRL's trainers) where a subclass would force one base class.

The callback takes over ``trainer.create_optimizer`` (on this trainer only): every optimizer,
the first one of ``train()`` included, is the trainer's own (weight-decay groups, ``optim``
choice) fitted to the grower's phase with ``Grower.param_groups`` (in a pb dendrite phase the
learning rate times ``Config.candidate_lr_scale``). The grower is built there, when ``train()``
creates its optimizer. After each restructure the optimizer is rebuilt that way and prepared by
Accelerate; the new scheduler continues the old one's step count and LR
(``schedule="continue"``) so a run-long warm-up/decay is not restarted. When growth is done, training stops with the best model restored; when
``num_train_epochs`` runs out first, ``on_train_end`` restores it. ``EarlyStoppingCallback``
counters restart at each restructure.

Checkpoints: each ``checkpoint-N`` folder gets ``perforate.safetensors`` (the grower's state
without model and optimizer: config, structure, decisions, history; see
``perforate.integration_api.save_grower_state``) and ``perforate.best-<n>.safetensors`` (the best
snapshot). The model's own ``load_state_dict`` accepts states of any dendrite count, so
``load_best_model_at_end`` and ``resume_from_checkpoint`` work. On resume the grower loads its
state from the checkpoint folder of the resumed step (``Grower.load_state_dict``: the saved
phase's trainable set, in a pb dendrite phase too) before the trainer restores the optimizer.
:func:`load_checkpoint` loads a checkpoint folder into a fresh model without pickle.

Not supported yet: multi-process training (DDP/FSDP/DeepSpeed through the Trainer) and
optimizer/scheduler *instances* passed as ``Trainer(optimizers=...)`` (use ``optim`` /
``optimizer_cls_and_kwargs`` so the optimizer can be rebuilt).
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Sequence

import torch
from torch import nn

from .. import (CheckpointError, Config, ConfigError, Grower, GrowthError, count_parameters, dendritic_layers,
                perforate, read_checkpoint_meta)
from ..integration_api import (HISTORY_BASE_COLUMNS, load_grower_state, load_weights, rebuild_structure,
                               require_extra, save_grower_state)
from .common import carry_schedule, install_resize_hook, refuse_shadow_trials, resize_to_state

transformers = require_extra("transformers", "transformers")

STATE_STEM = "perforate"
STATE_FILE = STATE_STEM + ".safetensors"


def _with_budget(config: Config, trainer) -> Config:
    """``config`` with the evaluations ``train()`` will run as its budget when it has none:
    ``num_train_epochs`` (as the trainer resolved it) or, evaluating every ``eval_steps``,
    ``max_steps // eval_steps``."""
    args, state = trainer.args, trainer.state
    if config.max_epochs:
        return config
    strategy = str(getattr(args.eval_strategy, "value", args.eval_strategy))
    budget = 0
    if strategy == "epoch":
        budget = state.num_train_epochs or 0
    elif strategy == "steps" and state.eval_steps and state.max_steps:
        budget = state.max_steps // state.eval_steps
    return config.replace(max_epochs=int(budget)) if budget >= 1 else config


class DendriteTrainerCallback(transformers.TrainerCallback):
    """Grows dendrites on ``trainer.model`` from the evaluation metric; registers itself.

    Args:
        trainer: the ``transformers.Trainer`` (any subclass), built as usual.
        config: the :class:`perforate.Config`; ``score_mode`` is set from ``greater_is_better``
            and ``score_name``, when left at its default, from ``metric_for_best_model``.
        out_dir: where the grower writes history.csv, summary.json, growth.png, best.pt
            (main process only); None writes nothing.
        blocks: module-name globs or classes to wrap as one unit (see ``pf.perforate``).
        schedule: "continue" or "restart" the LR schedule after a restructure.
        log_prefix: prefix of the values added to the trainer's logs.
        budget: when ``config`` has no ``max_epochs``, the grower's budget is the number of
            evaluations ``train()`` runs (``num_train_epochs`` as the trainer resolved it, or
            ``max_steps // eval_steps``), so growth is planned in it and training goes on to
            it. False: no budget (the run ends at the first plateau where growth cannot help).
    """

    def __init__(self, trainer, config: Config | None = None, out_dir: str | Path | None = None,
                 blocks: Sequence[Any] = (), schedule: str = "continue",
                 log_prefix: str = "perforate/", budget: bool = True) -> None:
        args = trainer.args
        if getattr(args, "eval_strategy", "no") == "no":
            raise ConfigError("growth is driven by evaluation: set TrainingArguments(eval_strategy="
                              "'epoch' or 'steps') and pass an eval_dataset")
        if args.world_size > 1:
            raise GrowthError("DendriteTrainerCallback does not support multi-process training yet; "
                              "use perforate.integrations.ddp with your own loop")
        if trainer.optimizer is not None or trainer.lr_scheduler is not None:
            raise GrowthError("Trainer(optimizers=(...)) instances cannot be rebuilt after growth; "
                              "choose the optimizer with TrainingArguments(optim=...) or "
                              "Trainer(optimizer_cls_and_kwargs=...)")
        if schedule not in ("continue", "restart"):
            raise ConfigError(f"schedule must be 'continue' or 'restart'; got {schedule!r}")
        metric = args.metric_for_best_model or "loss"
        self.metric_key = metric if metric.startswith("eval_") else f"eval_{metric}"
        greater = args.greater_is_better
        if greater is None:
            greater = not metric.endswith("loss")
        config = (config or Config()).replace(score_mode="max" if greater else "min")
        refuse_shadow_trials(config, "DendriteTrainerCallback")
        if config.score_name == Config.score_name:  # the default: name the metric
            config = config.replace(score_name=self.metric_key)
        model = trainer.model
        if not dendritic_layers(model):
            perforate(model, config, blocks=blocks)
        install_resize_hook(model)
        self.trainer = trainer
        self.config = config
        self.out_dir = out_dir
        self.schedule = schedule
        self.log_prefix = log_prefix
        self.budget = budget
        self.grower: Grower | None = None
        self._training = False
        self._last_step = -1
        self._trainer_create_optimizer = trainer.create_optimizer
        trainer.create_optimizer = self._create_optimizer
        trainer.add_callback(self)

    # ------------------------------------------------------------------ optimizer
    def _create_optimizer(self, model=None) -> torch.optim.Optimizer:
        """``trainer.create_optimizer``: ``train()`` asks for its first optimizer here, after it
        loaded a resumed checkpoint's weights and before it loads the optimizer state."""
        t = self.trainer
        if self._training:  # as the trainer's own: the current optimizer, once it exists
            return t.optimizer
        self.grower = None  # a new grower per train() call; it builds the optimizer
        self.grower = Grower(t.model, _with_budget(self.config, t) if self.budget else self.config,
                             optimizer_factory=lambda params: self._phase_optimizer(),
                             out_dir=self.out_dir if t.is_world_process_zero() else None,
                             step_scheduler=False)
        folder = Path(t.args.output_dir) / f"checkpoint-{t.state.global_step}"
        if t.state.global_step > 0 and (folder / STATE_FILE).is_file():
            self.grower.load_state_dict(load_grower_state(folder, STATE_STEM))
        t.optimizer = self.grower.optimizer
        return t.optimizer

    def _phase_optimizer(self) -> torch.optim.Optimizer:
        """The trainer's own optimizer, fitted to the grower's phase (``trainer.optimizer`` is
        left as it was: :meth:`_rebuild_optimizer` swaps it)."""
        t = self.trainer
        current, t.optimizer = t.optimizer, None  # create_optimizer builds only when there is none
        optimizer = self._trainer_create_optimizer()
        t.optimizer = current
        if self.grower is not None:  # the grower fits the first optimizer itself when it is built
            optimizer.param_groups[:] = self.grower.param_groups(optimizer.param_groups)
        return optimizer

    def _rebuild_optimizer(self) -> None:
        """After a restructure: a new optimizer and scheduler, prepared as the trainer would."""
        t = self.trainer
        old_opt, old_sched = t.optimizer, t.lr_scheduler
        registered = getattr(t.accelerator, "_optimizers", None)
        if isinstance(registered, list) and old_opt in registered:
            registered.remove(old_opt)  # let the old optimizer (and its state) be freed
        t.optimizer = t.accelerator.prepare(self.grower.optimizer)
        t.lr_scheduler = None
        t.create_scheduler(num_training_steps=t.state.max_steps, optimizer=t.optimizer)
        carry_schedule(old_sched if self.schedule == "continue" else None, t.lr_scheduler,
                       old_opt, t.optimizer)
        t.callback_handler.optimizer = t.optimizer
        t.callback_handler.lr_scheduler = t.lr_scheduler

    # ------------------------------------------------------------------ hooks
    def on_train_begin(self, args, state, control, **kwargs):
        if self.grower is None:
            raise GrowthError("the trainer built no optimizer through create_optimizer; "
                              "DendriteTrainerCallback needs it to (re)build optimizers")
        self._training = True
        self._last_step = state.global_step

    def on_evaluate(self, args, state, control, metrics=None, **kwargs):
        grower = self.grower
        if grower is None or grower.done or not self._training or state.global_step == self._last_step:
            return  # outside train(), or no training since the last decision (eval_on_start)
        self._last_step = state.global_step
        metrics = metrics or {}
        if self.metric_key not in metrics:
            raise GrowthError(f"metric_for_best_model gives '{self.metric_key}', which evaluation did not "
                              f"return (got {sorted(metrics)}); fix TrainingArguments."
                              "metric_for_best_model or compute_metrics")
        extras = {k: float(v) for k, v in metrics.items()
                  if k != self.metric_key and k not in HISTORY_BASE_COLUMNS
                  and isinstance(v, (int, float)) and not isinstance(v, bool)}
        decision = grower.step(float(metrics[self.metric_key]), **extras)
        if decision.restructured:
            self._rebuild_optimizer()
            for cb in self.trainer.callback_handler.callbacks:
                if isinstance(cb, transformers.EarlyStoppingCallback):
                    cb.early_stopping_patience_counter = 0
        if decision.done:
            control.should_training_stop = True
        p = self.log_prefix
        logs = {p + "dendrites": grower.state.dendrites, p + "dendrite_phase": int(grower.phase == "dendrite"),
                p + "params": count_parameters(grower.model)}
        if grower.best_score is not None:
            logs[p + "best_score"] = grower.best_score
        self.trainer.log(logs)

    def on_train_end(self, args, state, control, **kwargs):
        if self.grower is not None and not self.grower.done:
            self.grower.finish()
        self._training = False

    def on_save(self, args, state, control, **kwargs):
        folder = Path(args.output_dir) / f"checkpoint-{state.global_step}"
        if self.grower is None or not state.is_world_process_zero or not folder.is_dir():
            return
        # the trainer saves the model and the optimizer itself
        save_grower_state(folder, self.grower.state_dict(model=False, optimizer=False), STATE_STEM)


def _read_safetensors_folder(folder: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    index = folder / "model.safetensors.index.json"
    if index.is_file():
        files = sorted(set(json.loads(index.read_text())["weight_map"].values()))
    elif (folder / "model.safetensors").is_file():
        files = ["model.safetensors"]
    else:
        raise CheckpointError(f"{folder} holds no model.safetensors; save with safe_serialization "
                              "(the default) or use pf.save")
    state: dict[str, torch.Tensor] = {}
    for name in files:
        state.update(load_file(str(folder / name)))
    return state


def load_checkpoint(model: nn.Module, folder: str | Path, config: Config | None = None,
                    blocks: Sequence[Any] = ()) -> nn.Module:
    """Load a Trainer checkpoint folder (or a ``save_model`` folder) into a fresh model.

    ``model`` is a new, un-perforated instance (e.g. ``AutoModelFor...from_config``). The
    structure comes from the folder's ``perforate.safetensors``; a ``trainer.save_model`` or
    ``save_pretrained`` folder lacks it, so pass the ``config`` used in training (the same
    layers are wrapped: ``include``, ``exclude``, ``output_head``) and the dendrite counts are
    read from the tensor shapes. Tied weights that the folder holds once (GPT-2's ``lm_head``)
    are loaded into every name. Reads safetensors only (no pickle). Returns the model.
    """
    folder = Path(folder)
    state = _read_safetensors_folder(folder)
    info = folder / STATE_FILE
    if info.is_file():
        model = rebuild_structure(model, read_checkpoint_meta(info)["structure"])
    else:
        if config is None:
            raise CheckpointError(f"{folder} has no {STATE_FILE}; pass the config used in training: "
                                  "load_checkpoint(model, folder, config=cfg)")
        if not dendritic_layers(model):
            model = perforate(model, config, blocks=blocks)
        resize_to_state(model, state)
    _add_tied_names(model, state)
    load_weights(model, state, folder)
    return model


def _add_tied_names(model: nn.Module, state: dict[str, torch.Tensor]) -> None:
    """``save_pretrained`` writes a tied tensor once (GPT-2's ``lm_head.weight`` is
    ``transformer.wte.weight``): give the model's other names for it the saved tensor."""
    live = model.state_dict(keep_vars=True)
    saved = {(t.data_ptr(), t.shape): k for k, t in live.items() if k in state and t.numel()}
    for key, tensor in live.items():
        if key not in state and tensor.numel():
            source = saved.get((tensor.data_ptr(), tensor.shape))
            if source is not None:
                state[key] = state[source]
