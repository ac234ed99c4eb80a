"""The names an integration (``perforate.integrations``, ``perforate.compat``, or one you write
for another framework) may use beyond ``perforate.__all__``. They are kept stable like the
public API; anything else in the package's modules may change without notice
(``tests/test_integration_surface.py`` holds the package's own integrations to this list).

Checkpoints (a framework's own checkpoint holds a perforated model):

- ``dendrite_structure(model)``: per wrapped layer, its settings and dendrite counts; a
  JSON-able dict to store beside the weights.
- ``rebuild_structure(model, structure, state=None)``: wrap (if needed) and resize a fresh
  model's layers to a stored ``dendrite_structure``, checked against ``state`` when given;
  returns the model.
- ``load_weights(model, state, source)``: ``model.load_state_dict(state)`` that raises
  ``CheckpointError`` (naming ``source``) on any missing or unexpected key.
- ``CHECKPOINT_DOC_KEY``: the safetensors metadata key that holds perforate's JSON document
  (its presence marks a file written by ``pf.save``).

Grower state and optimizers:

- ``save_grower_state(folder, state_dict)`` / ``load_grower_state(folder)``: a
  ``grower.state_dict()`` as safetensors files and JSON, no pickle (what ``Grower.resume``
  reads).
- ``LR_SCALE_KEY``: the optimizer param-group key where ``grower.param_groups`` records the
  phase's learning-rate multiplier (so fitting groups twice scales once).
- ``OptimizerFactory`` / ``SchedulerFactory``: the types of ``Grower``'s factory arguments.

History and graphs:

- ``HISTORY_BASE_COLUMNS``: the history.csv columns every run has; any other column is an
  extra score passed to ``grower.step``.
- ``plot_growth(history, path, ...)``: draw growth.png from history rows.
- ``plot_grower(grower, path)``: draw growth.png for a live grower.
- ``invalid_score_reason(score, maximize, what)``: why a number cannot be a validation score
  ("" when it can): NaN, or an infinity no later score could beat.

Model surgery and settings:

- ``replace_module(model, module, replacement)``: put ``replacement`` where ``module`` sits in
  ``model`` (every place it is registered).
- ``kind_of(module)``: the layer-kind adapter ``pf.perforate`` would use for ``module`` (None:
  not wrappable).
- ``RecurrentStack``: the per-layer form ``pf.perforate`` gives a multi-layer RNN/LSTM/GRU.
- ``DENDRITE_ACTIVATIONS``: the dendrite activations ``Config.activation`` accepts, by name.
- ``require_extra(module, extra)``: import an optional dependency or raise
  ``pf.MissingExtraError`` naming ``pip install perforate[extra]``.

Errors are the public ones (``pf.PerforateError`` and its subclasses in ``perforate.__all__``).
"""
from __future__ import annotations

from .activations import ACTIVATIONS as DENDRITE_ACTIVATIONS
from .checkpoint import DOC_KEY as CHECKPOINT_DOC_KEY
from .checkpoint import apply_structure as rebuild_structure
from .checkpoint import load_state as load_weights
from .checkpoint import structure as dendrite_structure
from .errors import require_extra
from .growth_plot import plot_grower, plot_growth
from .kinds import kind_of
from .kinds.recurrent import RecurrentStack
from .modules import replace_module
from .records import BASE_COLUMNS as HISTORY_BASE_COLUMNS
from .trainable import LR_SCALE_KEY, OptimizerFactory, SchedulerFactory
from .validation import score_problem as invalid_score_reason
from .writer import load_grower_state, save_grower_state

__all__ = [
    "CHECKPOINT_DOC_KEY", "DENDRITE_ACTIVATIONS", "HISTORY_BASE_COLUMNS", "LR_SCALE_KEY",
    "OptimizerFactory", "RecurrentStack", "SchedulerFactory", "dendrite_structure",
    "invalid_score_reason", "kind_of", "load_grower_state", "load_weights", "plot_grower",
    "plot_growth", "rebuild_structure", "replace_module", "require_extra", "save_grower_state",
]
