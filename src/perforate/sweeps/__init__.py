"""Hyperparameter sweeps of dendritic optimization, each trial paired with its baseline.

- :mod:`.space`: the sweep config (W&B-sweep-shaped YAML/TOML/JSON) as typed dataclasses;
- :mod:`.trial`: one trial = baseline (cached) + dendritic run; the shared results format;
- :mod:`.optuna_backend`: one machine, TPE + MedianPruner, resumable SQLite storage;
- :mod:`.ray_backend`: Ray Tune (local or ``--address`` cluster), ASHA, Tune's own restore;
- :mod:`.report`: ``report.md`` and plots; :mod:`.cli`: ``perforate sweep``.

Optuna and Ray are imported only when a backend runs.
"""
from .run import run_sweep
from .space import (DENDRITE_PARAMETERS, MODEL_PARAMETERS, EarlyTerminate, Experiment, Parameter,
                    SweepSpace, load_space, space_from_dict)
from .trial import TrialRecord, read_results

__all__ = [
    "DENDRITE_PARAMETERS", "MODEL_PARAMETERS", "EarlyTerminate", "Experiment", "Parameter",
    "SweepSpace", "TrialRecord", "load_space", "read_results", "run_sweep", "space_from_dict",
]
