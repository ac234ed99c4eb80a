"""perforate: open, fast dendritic optimization (Perforated Backpropagation) for PyTorch."""
from .checkpoint import load, read_checkpoint_meta, save
from .config import Config
from .connectivity import restrict as restrict_inputs
from .convert import dendritic_layers, perforate
from .errors import (BypassError, CheckpointError, ConfigError, ExperimentError, GrowthError,
                     MissingExtraError, PerforateError, RunLockedError, WrapError)
from .export import ExportedDendriticLayer, export
from .grower import Decision, Grower, GrowerState
from .health import DivergenceWarning
from .layers import DendriticLayer
from .loop_warnings import PerforateWarning, ScoreDirectionWarning, StaleOptimizerWarning
from .measure import (count_parameters, flops_per_sample, parameter_breakdown, peak_training_memory,
                      remaining_error_reduction)

__version__ = "0.1.0"

__all__ = [
    "BypassError", "CheckpointError", "Config", "ConfigError", "Decision", "DendriticLayer", "DivergenceWarning",
    "Grower", "GrowthError", "MissingExtraError", "PerforateError", "PerforateWarning", "RunLockedError",
    "ScoreDirectionWarning", "StaleOptimizerWarning", "WrapError", "count_parameters", "dendritic_layers",
    "export", "flops_per_sample", "load", "parameter_breakdown", "peak_training_memory",
    "perforate", "read_checkpoint_meta", "remaining_error_reduction", "restrict_inputs", "save",
]
# Importable as attributes but left out of ``__all__`` (no script needs them; docs/architecture.md
# lists them): ExperimentError (the experiment harness's error), ExportedDendriticLayer (the layer
# class ``export`` builds; perforate.inference), GrowerState (``grower.state``'s type).
