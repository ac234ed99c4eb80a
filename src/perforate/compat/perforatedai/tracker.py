"""``GPA.pai_tracker``: the reference's tracker API, deciding with a :class:`perforate.Grower`.

One ``add_validation_score`` call is one epoch. The grower decides when to grow (patience of
``n_epochs_to_switch`` epochs, roll back to the best model, retries, completion); the tracker
adds the reference's other switch modes (fixed interval, every epoch, the dendrite capacity test),
rebuilds the script's optimizer and scheduler, keeps the scores, and writes ``<save_name>/``.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ... import Config, Decision, Grower, count_parameters, dendritic_layers
from ...integration_api import HISTORY_BASE_COLUMNS, invalid_score_reason
from . import knobs
from .camel import snake
from .errors import CompatUsageError
from .outputs import GRAPH_EVERY, RunFiles, is_switch, param_counts
from .recipe import OptimizerRecipe
from .settings import PAIConfig

NEVER = 2**31 - 1
"""Patience that never runs out: growth is then timed by the tracker, not the grower."""
CAPACITY_DENDRITES = 3


def _number(value: Any, what: str, finite: bool = False) -> float:
    try:
        number = float(value.item() if isinstance(value, torch.Tensor) else value)
    except (TypeError, ValueError, RuntimeError) as exc:
        raise CompatUsageError(f"{what} needs a number (float, int or one-element tensor); "
                               f"got {value!r}") from exc
    if math.isnan(number):
        raise CompatUsageError(f"{what} got NaN; check the training loop (diverged loss?)")
    if finite and invalid_score_reason(number, None):  # an infinity would poison the running average
        raise CompatUsageError(invalid_score_reason(number, None, what))
    return number


class PAITracker:
    """The tracker of one converted model (``UPA.initialize_pai`` / ``UPA.perforate_model`` make it).

    A tracker made with no model only explains, on any call, that the model must be converted first.
    """

    def __init__(self, pc: PAIConfig, model: nn.Module | None = None, config: Config | None = None, *,
                 generation: str = "3.2", save_name: str = "PAI", doing_pai: bool = True,
                 making_graphs: bool = True) -> None:
        self.pc = pc
        self.model = model
        self.config = config
        self.generation = generation
        self.doing_pai = doing_pai
        self.files = RunFiles(pc, generation, making_graphs)
        self._first_folder = Path(save_name)  # where conversion put the run
        self.recipe = OptimizerRecipe()
        self.grower: Grower | None = None
        self.rows: list[dict[str, Any]] = []
        self._scores: list[float] = []  # the values decided on, one per epoch
        self._pending: dict[str, float] = {}
        self._pending_hidden: dict[str, float] = {}
        self._extra_names: dict[str, None] = {}
        self._hidden_names: dict[str, None] = {}
        self._test_names: dict[str, None] = {}
        self._cycle_start = 0
        self._running: float | None = None
        self._stepping = False
        self._awaiting_optimizer = False
        self._last_improved = -1
        self.complete = False

    # ------------------------------------------------------------------ state users read
    @property
    def num_dendrites_added(self) -> int:
        if self.model is None:
            return 0
        return max((layer.num_dendrites for layer in dendritic_layers(self.model).values()), default=0)

    @property
    def member_vars(self) -> dict[str, Any]:
        """A read-only snapshot of the reference's ``member_vars`` keys that scripts read."""
        rows, grower = self.rows, self.grower
        switches = [r["epoch"] for r in rows if is_switch(r)]
        cycle = self._scores[self._cycle_start:]
        pick = max if self.config is None or self.config.maximize else min
        tries = 0  # retries since the last growth that paid
        for row in rows:
            if "retry" in row["event"]:
                tries += 1
            elif is_switch(row) and "join" not in row["event"]:
                tries = 0
        return {
            "mode": "p" if grower is not None and grower.phase == "dendrite" else "n",
            "num_dendrites_added": self.num_dendrites_added,
            "num_epochs_run": len(cycle), "total_epochs_run": len(self._scores),
            "switch_epochs": switches, "num_cycles": len(switches),
            "last_switch": switches[-1] if switches else 0,
            "param_counts": param_counts(rows),
            "accuracies": [r["score"] for r in rows],
            "running_accuracies": [r["running"] for r in rows], "running_accuracy": self._running,
            "extra_scores": self._series(self._extra_names),
            "extra_scores_without_graphing": self._series(self._hidden_names),
            "test_scores": [r[n] for r in rows for n in self._test_names if n in r],
            "training_learning_rates": [r["lr"] for r in rows],
            "current_best_validation_score": pick(cycle) if cycle else 0,
            "global_best_validation_score": grower.best_score if grower is not None else None,
            "epoch_last_improved": self._last_improved, "num_dendrite_tries": tries,
            "optimizer": self.recipe.optimizer_class, "scheduler": self.recipe.scheduler_class,
            "optimizer_instance": grower.optimizer if grower is not None else None,
            "scheduler_instance": grower.scheduler if grower is not None else None,
            "maximizing_score": self.config.maximize if self.config is not None else None,
            "doing_pai": self.doing_pai, "switch_mode": self.pc.value("switch_mode"),
            "param_vals_setting": self.pc.value("param_vals_setting"),
        }

    def _series(self, names: dict[str, None]) -> dict[str, list[float]]:
        return {n: [r[n] for r in self.rows if n in r] for n in names}

    # ------------------------------------------------------------------ optimizer and scheduler
    def set_optimizer(self, optimizer_class: type) -> None:
        """The optimizer class ``setup_optimizer`` builds (e.g. ``torch.optim.Adam``)."""
        self._model("set_optimizer")
        if isinstance(optimizer_class, torch.optim.Optimizer) or not callable(optimizer_class):
            raise CompatUsageError("set_optimizer takes the optimizer class, e.g. torch.optim.Adam; "
                                   "for an optimizer you built yourself use set_optimizer_instance")
        self.recipe.optimizer_class = optimizer_class

    def set_scheduler(self, scheduler_class: type | None) -> None:
        """The LR scheduler class ``setup_optimizer`` builds (or None). The tracker steps it."""
        self._model("set_scheduler")
        self.recipe.scheduler_class = scheduler_class

    def setup_optimizer(self, net: nn.Module, opt_args: dict[str, Any],
                        sched_args: dict[str, Any] | None = None, parameters=None):
        """Build the optimizer (and scheduler) for ``net``'s trainable parameters.

        Returns ``(optimizer, scheduler)``; under the 3.0/3.1 API with no scheduler class, just
        the optimizer. The scheduler is stepped inside ``add_validation_score``: drop the
        script's own ``scheduler.step()``. A fresh scheduler replays the epochs since the last
        restructure (``param_vals_setting`` 1, the default) or all epochs (0).
        """
        self._check_net(net, "setup_optimizer")
        self.recipe.use_arguments(opt_args, sched_args, parameters)
        grower = self._registered()
        if self.generation != "3.2" and grower.scheduler is None:
            return grower.optimizer
        return grower.optimizer, grower.scheduler

    def set_optimizer_instance(self, optimizer: torch.optim.Optimizer, additional_optimizers=None) -> None:
        """Register an optimizer the script built; after each restructure, build and register a new one.
        Its scheduler is the script's to step."""
        self._model("set_optimizer_instance")
        if additional_optimizers:
            self.pc.note("additional_optimizers", "set_optimizer_instance: perforate rebuilds one "
                         "optimizer; rebuild additional_optimizers yourself after a restructure")
        self.recipe.use_instance(optimizer)
        self._registered()

    def clear_optimizer_and_scheduler(self) -> None:
        """Forget the registered optimizer recipe."""
        self.recipe = OptimizerRecipe()

    def _registered(self) -> Grower:
        self._awaiting_optimizer = False
        if self.grower is None:
            self.grower = Grower(self.model, self._grower_config(), self.recipe.build_optimizer,
                                 self._build_scheduler, out_dir=None)
            self.grower.budget_warning = False  # training_complete at a plateau is this API's end
        else:
            self.grower.rebuild_optimizer()
        return self.grower

    def _build_scheduler(self, optimizer: torch.optim.Optimizer):
        total = self.pc.value("param_vals_setting") == PAIConfig.PARAM_VALS_BY_TOTAL_EPOCH
        if total:
            replay = list(self._scores)
        else:  # a restructure happening now starts a new cycle
            replay = [] if self._stepping else self._scores[self._cycle_start:]
        return self.recipe.build_scheduler(optimizer, replay)

    # ------------------------------------------------------------------ scores
    def add_extra_score(self, score: Any, name: str) -> None:
        """A score for this epoch, graphed and written to the CSVs (call before add_validation_score)."""
        self._pending[self._column(name, self._extra_names)] = _number(score, "add_extra_score")

    def add_test_score(self, score: Any, name: str = "Test Score") -> None:
        """This epoch's test score: graphed, and reported at each architecture's best validation epoch."""
        column = self._column(name, self._test_names)
        self._extra_names.setdefault(column, None)
        self._pending[column] = _number(score, "add_test_score")

    def add_extra_score_without_graphing(self, score: Any, name: str) -> None:
        """A score written to the CSVs only."""
        self._pending_hidden[self._column(name, self._hidden_names)] = _number(
            score, "add_extra_score_without_graphing")

    @staticmethod
    def _column(name: str, names: dict[str, None]) -> str:
        column = f"{name} (extra)" if name in HISTORY_BASE_COLUMNS or name == "running" else str(name)
        names.setdefault(column, None)
        return column

    def add_validation_score(self, score: Any, net: nn.Module, force_switch: bool = False, *_: Any):
        """Record one epoch's validation score; returns ``(net, restructured, training_complete)``.

        When ``restructured`` is true, ``net`` may hold new or restored parameters: rebuild the
        optimizer (``setup_optimizer``) before training on. ``restructured`` is 0 or 1 on
        ordinary epochs and True when training completes with the best model restored.
        """
        self._check_net(net, "add_validation_score")
        value = _number(score, "add_validation_score", finite=True)
        if self.complete:
            return net, False, True
        if self._awaiting_optimizer:
            self.pc.note("awaiting", "the last add_validation_score restructured the model but no "
                         "optimizer was set up since: rebuild it with GPA.pai_tracker.setup_optimizer "
                         "(or set_optimizer_instance) whenever restructured is true")
        grower = self.grower
        if grower is None:
            self.pc.note("no-optimizer", "GPA.pai_tracker has no optimizer: call setup_optimizer or "
                         "set_optimizer_instance so it can be rebuilt after each restructure")
            grower = self._registered()
        if self._capacity_test():  # said when it is in force, not at conversion
            self.pc.note("capacity", "perforate: testing_dendrite_capacity is on (the perforatedai "
                         "default): a dendrite is added every epoch and training completes after "
                         f"{CAPACITY_DENDRITES}; call GPA.pc.set_testing_dendrite_capacity(False) "
                         "for a real run")
        lookback = max(1, int(self.pc.value("history_lookback")))
        self._running = value if self._running is None else self._running + (value - self._running) / lookback
        self._scores.append(self._running)
        self._configure(grower, force_switch)
        self._stepping = True
        try:
            decision = grower.step(self._running, **self._pending)
            decision = self._timed_switch(grower, decision, force_switch)
        finally:
            self._stepping = False
        self.model = grower.model
        restructured, complete = self._outcome(decision)
        self._record(grower, value)
        if restructured:
            self._cycle_start = len(self._scores)
            self._awaiting_optimizer = self.recipe.registered  # else "no optimizer" was said already
        self._write(decision, complete)
        compiled = net is not self.model and getattr(net, "_orig_mod", None) is self.model
        return (net if compiled else self.model), restructured, complete

    def _configure(self, grower: Grower, force: bool = False) -> None:
        """Put this epoch's settings (this dendrite count's schedule entries) on the grower's config."""
        fields = self._fields(force)
        fields.pop("mode")
        updated = knobs.validated(grower.config, fields)
        for name in fields:
            setattr(grower.config, name, getattr(updated, name))

    def _fields(self, force: bool = False) -> dict[str, Any]:
        level = self.num_dendrites_added
        fields = knobs.config_fields(lambda n: self.pc.value(n, level), self.pc.is_set)
        if self._capacity_test():
            fields.update(patience=NEVER, max_dendrites=NEVER, dendrite_max_epochs=1)
        elif force or self._switch_due(level):
            fields["patience"] = 1  # one epoch without improvement is enough now
        elif self.pc.value("switch_mode", level) != PAIConfig.DOING_HISTORY:
            fields["patience"] = NEVER
        elif self._last_improved <= max(0, self._cycle_start - 1):
            # perforatedai also needs n_epochs_to_switch + 1 epochs since the last switch (or the
            # start): while none improved, one more stale epoch than patience alone would ask
            fields["patience"] += 1
        if not self.doing_pai:
            fields["max_dendrites"] = 0
        first = next((r["epoch"] for r in self.rows if is_switch(r)), None)
        if self.pc.value("cap_at_n", level) and first is not None:
            fields["dendrite_max_epochs"] = first + 1  # the first neuron phase's length
        return fields

    def _switch_due(self, level: int) -> bool:
        """This epoch switches by the clock: every epoch, or on the fixed interval."""
        mode = self.pc.value("switch_mode", level)
        if mode == PAIConfig.DOING_SWITCH_EVERY_TIME:
            return True
        epoch, fixed = len(self._scores) - 1, self.pc.value("fixed_switch_num", level)
        return (mode == PAIConfig.DOING_FIXED_SWITCH and epoch % fixed == fixed - 1
                and epoch >= self.pc.value("first_fixed_switch_num", level) - 1)

    def _grower_config(self) -> Config:
        return knobs.validated(self.config, self._fields())

    def _capacity_test(self) -> bool:
        return bool(self.pc.value("testing_dendrite_capacity")) and self.doing_pai

    def _timed_switch(self, grower: Grower, decision: Decision, force: bool) -> Decision:
        """Switches the clock asks for (and the capacity test) on an epoch that improved, which
        the grower's patience therefore did not act on: grow now; the current model is the best."""
        if decision.improved:
            self._last_improved = len(self._scores) - 1
        if decision.restructured or decision.done or grower.phase != "neuron" or not self.doing_pai:
            return decision
        level = self.num_dendrites_added
        capacity = self._capacity_test()
        if capacity and level >= CAPACITY_DENDRITES:
            return decision  # the test is over: _outcome completes
        if not (capacity or (decision.improved and (force or self._switch_due(level)))):
            return decision
        if not capacity and level >= grower.config.max_dendrites:
            grower.finish()
            return Decision(restructured=True, done=True, phase="neuron", event="done",
                            improved=decision.improved, epoch=decision.epoch)
        return grower.add_dendrites()

    def _outcome(self, decision: Decision) -> tuple[Any, bool]:
        if self._capacity_test() and self.num_dendrites_added >= CAPACITY_DENDRITES and \
                not decision.restructured:
            self.complete = True
            self.pc.note("capacity-done", f"perforate: the dendrite capacity test added {CAPACITY_DENDRITES} "
                         "dendrites and completes; call GPA.pc.set_testing_dendrite_capacity(False) "
                         "for a real run")
            return False, True
        if decision.done:
            self.complete = True
            return True, True
        return int(decision.restructured), False

    # ------------------------------------------------------------------ records and files
    def _record(self, grower: Grower, value: float) -> None:
        row = dict(grower.history[-1])  # the grower's row for this epoch: phase, lr, params, event
        row.update(score=value, running=self._running, **self._pending_hidden)
        if is_switch(row):
            row["params_after"] = count_parameters(self.model)
        self.rows.append(row)
        self._pending, self._pending_hidden = {}, {}

    def _write(self, decision: Decision, complete: bool) -> None:
        epoch = len(self._scores) - 1
        folder = self.files.folder
        if folder != self._first_folder:
            self.pc.note("save-name", f"perforate: GPA.pc.set_save_name({str(folder)!r}) came after "
                         f"conversion: this run's files go to {folder}/ from now on (perforatedai "
                         f"moves only its checkpoints there and keeps its graph and CSVs in "
                         f"{self._first_folder}/)")
        if self.files.checkpoints:
            history = self.grower.history
            self.files.checkpoint(self.model, "latest", history, self.state_dict())
            if decision.improved:
                self.files.checkpoint(self.model, "best_model", history)
        due = decision.event or complete or (epoch + 1) % GRAPH_EVERY == 0
        if due:
            self.save_graphs()
        if due or epoch == 0:  # the settings in force (ones changed after conversion included)
            self.pc.save_config(folder / f"{self.files.prefix}_config.json")

    def _tables(self, suffix: str = "") -> None:
        self.files.tables(self.rows, [*self._extra_names, *self._hidden_names], list(self._test_names),
                          self.config.maximize, suffix)

    def save_graphs(self, extra_string: str = "") -> None:
        """Draw ``<save_name>/<save_name><extra_string>.png`` and write the CSVs now."""
        if self.grower is not None:
            # once complete, the parameter panel ends at the model kept (the best one restored)
            final = count_parameters(self.model) if self.complete else None
            self.files.graph(self.grower.history, f"perforate ({self.grower.config.mode})", extra_string,
                             final_params=final, best_epoch=self.grower.state.best_epoch)
            self._tables(extra_string)

    # ------------------------------------------------------------------ continuing a saved run
    _RECORD = ("rows", "_scores", "_cycle_start", "_running", "_last_improved", "complete",
               "_awaiting_optimizer")
    _NAMES = ("_extra_names", "_hidden_names", "_test_names")

    def state_dict(self) -> dict[str, Any] | None:
        """The grower's decisions (``Grower.state_dict`` without model and optimizer) plus this
        tracker's scores; None before the first epoch."""
        if self.grower is None:
            return None
        state = self.grower.state_dict(model=False, optimizer=False)
        state["compat"] = {**{k: getattr(self, k) for k in self._RECORD},
                           **{k: list(getattr(self, k)) for k in self._NAMES}}
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue from :meth:`state_dict` output; the model must already hold the saved weights."""
        for key in self._RECORD:
            setattr(self, key, state["compat"][key])
        for key in self._NAMES:
            setattr(self, key, dict.fromkeys(state["compat"][key]))
        grower = self.grower or self._registered()
        grower.load_state_dict(state)
        self._awaiting_optimizer = state["compat"]["_awaiting_optimizer"]

    # ------------------------------------------------------------------ calls perforate needs not
    def save_tracker_settings(self) -> None:
        """Not needed: perforate keeps no per-process tracker files (nothing to do before DataParallel)."""

    def initialize_tracker_settings(self) -> None:
        """Not needed (see :meth:`save_tracker_settings`)."""

    def start_epoch(self, *args: Any, **kwargs: Any) -> None:
        """Not needed: epoch times come from the calls to add_validation_score."""

    def stop_epoch(self, *args: Any, **kwargs: Any) -> None:
        """Not needed (see :meth:`start_epoch`)."""

    # ------------------------------------------------------------------ helpers
    def _model(self, what: str) -> nn.Module:
        if self.model is None:
            raise CompatUsageError(f"GPA.pai_tracker.{what} needs a converted model: call "
                                   "model = UPA.initialize_pai(model) (3.0/3.1) or "
                                   "model = UPA.perforate_model(model) (3.2) first")
        return self.model

    def _check_net(self, net: nn.Module, what: str) -> nn.Module:
        model = self._model(what)
        if isinstance(net, (nn.DataParallel, nn.parallel.DistributedDataParallel)):
            raise CompatUsageError(f"{what}: pass the model inside the DataParallel/DDP wrapper "
                                   "(net.module) and wrap the returned model again")
        if getattr(net, "_orig_mod", net) is not model:
            raise CompatUsageError(f"{what} got a different model than the converted one; pass the "
                                   "model that UPA.initialize_pai / perforate_model (or the last "
                                   "add_validation_score) returned")
        return net

    def __getattr__(self, name: str) -> Any:
        translated = snake(name)  # the camelCase API: addValidationScore, memberVars, ...
        if translated != name and not name.startswith("_"):
            return getattr(self, translated)
        raise AttributeError(f"GPA.pai_tracker has no attribute {name!r}")
