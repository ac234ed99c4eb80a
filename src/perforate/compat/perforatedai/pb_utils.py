"""``PBU``: the oldest (camelCase) utils module: ``initializePB``, ``loadSystem``, ``countParams``, ..."""
from __future__ import annotations

from torch import nn

from . import utils_perforatedai as UPA
from .camel import snake
from .errors import CompatUsageError


def initializePB(model: nn.Module, doingPB: bool = True, saveName: str = "PB",  # noqa: N802, N803
                 makingGraphs: bool = True, maximizingScore: bool | None = None,  # noqa: N803
                 num_classes: float = 1e10, values_per_train_epoch: int = -1,
                 values_per_val_epoch: int = -1, zoomingGraph: bool = True,  # noqa: N803
                 layerName: str | None = None) -> nn.Module:  # noqa: N803
    """Convert ``model`` and start its tracker (the camelCase generation's entry point)."""
    if layerName is not None:
        raise CompatUsageError("initializePB(layer, layerName=...) converts a single layer; perforate "
                               "converts whole models: call initializePB(model) and choose the layer "
                               "with PBG.moduleIDsToConvert.append('.<layer id>')")
    return UPA.start(model, "A", doingPB, saveName, makingGraphs, maximizingScore)


def __getattr__(name: str):
    """``convertNetwork``, ``saveSystem``, ``loadSystem``, ``countParams``, ``deepCopyPAI``, ... are UPA's."""
    target = snake(name)
    if target != name and hasattr(UPA, target):
        return getattr(UPA, target)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
