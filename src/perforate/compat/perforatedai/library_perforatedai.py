"""``LPA``: the reference's processors and model helpers, for scripts that register or build them.

Processors tell perforatedai which tensor of a tuple output gets dendrites. perforate's recurrent
layers already put dendrites on the hidden outputs of ``nn.RNN``/``LSTM``/``GRU`` and keep their
return format, so registering a processor for one of them is honoured by that kind (see
:mod:`.modules_perforatedai` for what each processor maps to); the classes here also work on
their own, as plain splitters and joiners of tuple outputs.

``ResNetPAI`` and ``ResNetPAIPreFC`` rebuild a torchvision-style ResNet (``conv1``, ``bn1``,
``relu``, ``maxpool``, ``layer1``..``layer4``, ``avgpool``, ``fc``) for conversion: the first one
groups the stem convolution with its norm (``GPA.PAISequential``, a block for perforate's conv
kind); the second keeps the stem and adds a fresh square ``pre_fc`` Linear (and a ReLU) before
``fc``, a layer that dendrites can grow on. Neither imports torchvision. Typical use::

    GPA.pc.append_modules_to_replace([torchvision.models.resnet.ResNet])
    GPA.pc.append_replacement_modules([LPA.ResNetPAIPreFC])
"""
from __future__ import annotations

import abc
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from . import globals_perforatedai as GPA
from .errors import CompatUsageError

__all__ = ["LSTMCellProcessor", "LSTMProcessor", "LSTMProcessorLastHidden", "MultiOutputProcessor",
           "PAIProcessor", "ResNetPAI", "ResNetPAIPreFC"]


class PAIProcessor(abc.ABC):
    """What a processor provides: ``post_n1`` picks the tensor the dendrites join from the
    layer's output, ``post_n2`` rebuilds the output around the joined tensor, ``pre_d`` and
    ``post_d`` do the same for a dendrite's call, ``clear_processor`` drops what was kept."""

    @abc.abstractmethod
    def post_n1(self, *args: Any, **kwargs: Any) -> Any: ...

    @abc.abstractmethod
    def post_n2(self, *args: Any, **kwargs: Any) -> Any: ...

    @abc.abstractmethod
    def pre_d(self, *args: Any, **kwargs: Any) -> Any: ...

    @abc.abstractmethod
    def post_d(self, *args: Any, **kwargs: Any) -> Any: ...

    @abc.abstractmethod
    def clear_processor(self) -> None: ...


class MultiOutputProcessor(PAIProcessor):
    """Dendrites join the first element of a tuple output; the rest passes through."""

    def post_n1(self, *args: Any, **kwargs: Any) -> torch.Tensor:
        self.kept = tuple(args[0][1:])
        return args[0][0]

    def post_n2(self, *args: Any, **kwargs: Any) -> tuple:
        return (args[0], *self.kept)

    def pre_d(self, *args: Any, **kwargs: Any) -> tuple[tuple, dict]:
        return args, kwargs

    def post_d(self, *args: Any, **kwargs: Any) -> torch.Tensor:
        return args[0][0]

    def clear_processor(self) -> None:
        self.__dict__.pop("kept", None)


class LSTMProcessor(MultiOutputProcessor):
    """``nn.LSTM``: dendrites join the output sequence; ``(h_n, c_n)`` is passed on."""


class LSTMProcessorLastHidden(PAIProcessor):
    """Recurrent layers whose model reads only the final state: the layer returns
    ``(None, last)``, ``last`` holding the dendrites (see :mod:`.modules_perforatedai`)."""

    def post_n1(self, *args: Any, **kwargs: Any) -> torch.Tensor:
        return args[0][1][-1]

    def post_n2(self, *args: Any, **kwargs: Any) -> tuple:
        return None, args[0]

    def pre_d(self, *args: Any, **kwargs: Any) -> tuple[tuple, dict]:
        return args, kwargs

    def post_d(self, *args: Any, **kwargs: Any) -> torch.Tensor:
        return args[0][1][-1]

    def clear_processor(self) -> None:
        pass


class LSTMCellProcessor(PAIProcessor):
    """``nn.LSTMCell`` run step by step: dendrites join ``h``, ``c`` passes through. perforate
    has no dendrites for cells; converting a cell registered with it raises CompatUsageError."""

    def post_n1(self, *args: Any, **kwargs: Any) -> torch.Tensor:
        self.cell = args[0][1]
        return args[0][0]

    def post_n2(self, *args: Any, **kwargs: Any) -> tuple:
        return args[0], self.cell

    def pre_d(self, *args: Any, **kwargs: Any) -> tuple[tuple, dict]:
        if "dendrite_state" not in self.__dict__ or float(args[1][0].abs().sum()) == 0:
            return args, kwargs
        return (args[0], self.dendrite_state), kwargs

    def post_d(self, *args: Any, **kwargs: Any) -> torch.Tensor:
        self.dendrite_state = (args[0][0], args[0][1])
        return args[0][0]

    def clear_processor(self) -> None:
        for key in ("cell", "dendrite_state"):
            self.__dict__.pop(key, None)


# ---------------------------------------------------------------------- ResNet helpers
_RESNET_PARTS = ("conv1", "bn1", "relu", "maxpool", "layer1", "layer2", "layer3", "layer4",
                 "avgpool", "fc")


class _ResNetBase(nn.Module):
    def __init__(self, other_resnet: nn.Module) -> None:
        super().__init__()
        missing = [p for p in _RESNET_PARTS if not hasattr(other_resnet, p)]
        if missing:
            raise CompatUsageError(f"{type(self).__name__} rebuilds a torchvision-style ResNet; "
                                   f"{type(other_resnet).__name__} lacks {missing}")
        for attr in ("_norm_layer", "inplanes", "dilation", "groups", "base_width"):
            if hasattr(other_resnet, attr):
                setattr(self, attr, getattr(other_resnet, attr))
        self.relu = other_resnet.relu
        self.maxpool = other_resnet.maxpool
        for i in range(1, 5):  # the blocks are kept as they are, in a plain Sequential
            setattr(self, f"layer{i}", nn.Sequential(*getattr(other_resnet, f"layer{i}")))
        self.avgpool = other_resnet.avgpool

    def _stem(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def _head(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(F.relu(self._stem(x)))
        for i in range(1, 5):
            x = getattr(self, f"layer{i}")(x)
        return self._head(torch.flatten(self.avgpool(x), 1))


class ResNetPAI(_ResNetBase):
    """A ResNet whose stem convolution and norm are one unit (``b1``, a ``GPA.PAISequential``)."""

    def __init__(self, other_resnet: nn.Module) -> None:
        super().__init__(other_resnet)
        self.b1 = GPA.PAISequential([other_resnet.conv1, other_resnet.bn1])
        self.fc = other_resnet.fc

    def _stem(self, x: torch.Tensor) -> torch.Tensor:
        return self.b1(x)

    def _head(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(x)


class ResNetPAIPreFC(_ResNetBase):
    """A ResNet with a new square Linear ``pre_fc`` (then ReLU) before ``fc``."""

    def __init__(self, other_resnet: nn.Module) -> None:
        super().__init__(other_resnet)
        self.conv1 = other_resnet.conv1
        self.bn1 = other_resnet.bn1
        width = other_resnet.fc.in_features
        ref = other_resnet.fc.weight
        self.pre_fc = nn.Linear(width, width, device=ref.device, dtype=ref.dtype)
        self.fc = other_resnet.fc

    def _stem(self, x: torch.Tensor) -> torch.Tensor:
        return self.bn1(self.conv1(x))

    def _head(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(F.relu(self.pre_fc(x)))
