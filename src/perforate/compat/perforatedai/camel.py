"""The oldest API generation's camelCase names (``pb_globals``, ``initializePB``, ...) as 3.x names."""
from __future__ import annotations

import re

SPECIAL = {
    "pbTracker": "pai_tracker", "PBSequential": "PAISequential",
    "retainAllPB": "retain_all_dendrites", "PBForwardFunction": "pai_forward_function",
    "pbImprovementThreshold": "pai_improvement_threshold",
    "pbImprovementThresholdRaw": "pai_improvement_threshold_raw",
    "checkedSkippedLayers": "checked_skipped_modules", "findBestLR": "find_best_lr",
    "learnPBLive": "learn_dendrites_live", "moduleIDsToTrack": "module_ids_to_track",
    "moduleIDsToConvert": "module_ids_to_convert", "doingPB": "doing_pai",
    "initializePB": "initialize_pai", "deepCopyPAI": "deep_copy_pai",
    "doingSwitchEveryTime": "DOING_SWITCH_EVERY_TIME", "doingHistory": "DOING_HISTORY",
    "doingFixedSwitch": "DOING_FIXED_SWITCH", "doingNoSwitch": "DOING_NO_SWITCH",
    "paramValsByTotalEpoch": "PARAM_VALS_BY_TOTAL_EPOCH",
    "paramValsByUpdateEpoch": "PARAM_VALS_BY_UPDATE_EPOCH",
    "paramValsByNormalEpochStart": "PARAM_VALS_BY_NEURON_EPOCH_START",
}


def snake(name: str) -> str:
    """``nEpochsToSwitch`` -> ``n_epochs_to_switch``; the irregular names come from a table."""
    if name in SPECIAL:
        return SPECIAL[name]
    return re.sub(r"(?<=[a-z0-9])([A-Z])", r"_\1", name).lower()


def snake_kwargs(kwargs: dict) -> dict:
    return {snake(k): v for k, v in kwargs.items()}
