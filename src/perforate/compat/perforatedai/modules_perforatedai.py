"""``PA``: wrapped layers as perforatedai scripts see them, and the processors mapped onto them.

A layer the compat layer wraps is a :class:`perforate.DendriticLayer` whose class is
:class:`PAINeuronModule`: the same tensors, forward and checkpoints, plus the reference's
``set_this_output_dimensions``. A multi-layer ``nn.RNN``/``LSTM``/``GRU`` is opened by perforate
into a stack of single-layer wrapped layers; the stack answers ``set_this_output_dimensions``
too (:class:`PAIRecurrentStack`).

Processors (``GPA.pc.append_module_names_with_processing(['LSTM'])`` with
``append_module_by_name_processing_classes([LPA.LSTMProcessor])``, or the by-type pair) are
mapped at conversion onto perforate's recurrent kind, which already joins dendrites to the
hidden outputs of RNN/LSTM/GRU layers and keeps their return format:

- ``LSTMProcessor`` and ``MultiOutputProcessor``: nothing more to do (the output sequence gets
  the dendrites; the final state is returned as the layer returns it);
- ``LSTMProcessorLastHidden``: the layer returns ``(None, last)`` as it does in perforatedai,
  ``last`` being the final hidden state with the dendrites joined (``h_n`` for an LSTM, whose
  shape matches the ``c_n`` perforatedai returns; ``h_n[-1]`` for an RNN or GRU);
- any other processor on a recurrent layer: the recurrent kind is used and a note says that
  the processor's methods are not called;
- a processor on any other module (``nn.LSTMCell``, a block returning a tuple): a
  :class:`CompatUsageError` at conversion, since perforate has no dendrites for such outputs.
"""
from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ... import DendriticLayer, dendritic_layers
from ...integration_api import RecurrentStack, replace_module
from .errors import CompatConfigError, CompatUsageError
from .settings import PAIConfig

__all__ = ["LastHiddenOutput", "PAILastHiddenModule", "PAINeuronModule", "PAIRecurrentStack", "adopt",
           "check_processors", "keep_forms"]


def _dimensions(new_output_dimensions: Any, where: str) -> list[int]:
    dims = new_output_dimensions.tolist() if isinstance(new_output_dimensions, torch.Tensor) \
        else list(new_output_dimensions)
    if [int(d) for d in dims].count(0) != 1:
        raise CompatConfigError(f"{where}.set_this_output_dimensions needs exactly one 0 (the neuron "
                                f"axis) among -1s, e.g. [-1, -1, 0] for [batch, tokens, features]; "
                                f"got {dims}")
    return [int(d) for d in dims]


class PAINeuronModule(DendriticLayer):
    """A wrapped layer (perforate's :class:`~perforate.DendriticLayer`) with perforatedai's
    ``set_this_output_dimensions``."""

    def set_this_output_dimensions(self, new_output_dimensions: Any) -> None:
        """Mark this layer's neuron axis with the 0 of ``new_output_dimensions`` (a list or tensor
        as long as the layer's output has dimensions).

        Linear, convolutional and recurrent layers have a fixed neuron axis that perforate found
        when it wrapped them: a list that marks it is accepted and changes nothing, and one that
        marks another axis raises :class:`CompatUsageError`. A wrapped block
        (``GPA.PAISequential``, a class chosen by name) takes the new axis while it has no dendrites.
        """
        where = self.path or type(self.main).__name__
        dims = _dimensions(new_output_dimensions, where)
        wanted = dims.index(0) - len(dims)
        if self.adapter.axis(self, len(dims)) - len(dims) == wanted:
            return
        if self.adapter.name != "block":
            raise CompatUsageError(
                f"{where}: a {type(self.main).__name__} has its neurons on axis "
                f"{self.adapter.axis(self, len(dims))} of a {len(dims)}-dimensional output, and "
                f"{dims} marks axis {dims.index(0)}; perforate put the dendrites on the layer's own "
                "neuron axis already, so drop this call, or wrap the layer in "
                "GPA.PAISequential([layer]) to choose another axis")
        if self.num_dendrites or self.candidate_pool is not None:
            raise CompatUsageError(
                f"{where}: set_this_output_dimensions changes the neuron axis, which cannot change "
                "once the block has dendrites; call it right after converting the model")
        self.neuron_axis = wanted


class PAILastHiddenModule(PAINeuronModule):
    """A recurrent layer registered with ``LPA.LSTMProcessorLastHidden``: returns
    ``(None, final hidden state with dendrites)``."""

    def forward(self, x: Any, *args: Any, **kwargs: Any) -> Any:
        return None, _last_hidden(super().forward(x, *args, **kwargs))


def _last_hidden(out: Any) -> torch.Tensor:
    _, state = out
    return state[0] if isinstance(state, tuple) else state[-1]


class PAIRecurrentStack(RecurrentStack):
    """A multi-layer RNN/LSTM/GRU opened into wrapped single layers, with
    ``set_this_output_dimensions`` applied to each of them."""

    def set_this_output_dimensions(self, new_output_dimensions: Any) -> None:
        """See :meth:`PAINeuronModule.set_this_output_dimensions`."""
        for layer in self.layers:
            if isinstance(layer, PAINeuronModule):
                layer.set_this_output_dimensions(new_output_dimensions)


class PAILastHiddenStack(PAIRecurrentStack):
    """A multi-layer recurrent module registered with ``LPA.LSTMProcessorLastHidden``."""

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        return None, _last_hidden(super().forward(*args, **kwargs))


class LastHiddenOutput(nn.Module):
    """An exported recurrent layer (``UPA.prepare_final_model``) that keeps the ``(None, last)``
    return of a layer registered with ``LSTMProcessorLastHidden``."""

    def __init__(self, layer: nn.Module) -> None:
        super().__init__()
        self.layer = layer

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        return None, _last_hidden(self.layer(*args, **kwargs))


def keep_forms(live: nn.Module, exported: nn.Module) -> nn.Module:
    """``exported`` (:func:`perforate.export` of ``live``) with the ``(None, last)`` return kept
    where ``live`` had it."""
    for name, module in live.named_modules():
        if not isinstance(module, (PAILastHiddenModule, PAILastHiddenStack)):
            continue
        now = exported.get_submodule(name) if name else exported
        if isinstance(now, PAILastHiddenStack):  # still opened (it has dendrites): keeps its class
            continue
        if not name:
            exported = LastHiddenOutput(now)
        else:
            replace_module(exported, now, LastHiddenOutput(now))
    return exported


# ---------------------------------------------------------------------- processors
def _pairs(pc: PAIConfig) -> list[tuple[str, Any, type]]:
    """``(how, key, processor class)`` for every registration; the lists must pair up."""
    pairs = []
    for keys, classes, how in (("modules_with_processing", "modules_processing_classes", "type"),
                               ("module_names_with_processing", "module_by_name_processing_classes",
                                "name")):
        left, right = pc.value(keys), pc.value(classes)
        if len(left) != len(right):
            raise CompatConfigError(f"{keys} has {len(left)} entries but {classes} has {len(right)}; "
                                    f"append them in pairs (GPA.pc.append_{keys}([...]) with "
                                    f"GPA.pc.append_{classes}([...]))")
        pairs += [(how, key, cls) for key, cls in zip(left, right)]
    return pairs


def processor_for(module: nn.Module, pc: PAIConfig) -> type | None:
    """The processor class registered for ``module`` (by exact type first, then by class name,
    as perforatedai looks it up), or None."""
    stock = getattr(module, "stock", None) if isinstance(module, RecurrentStack) else None
    cls = stock or type(module)
    for how, key, processor in _pairs(pc):
        if how == "type" and cls is key:
            return processor
    for how, key, processor in _pairs(pc):
        if how == "name" and cls.__name__ == key:
            return processor
    return None


def _last_hidden_processor(processor: type) -> bool:
    from .library_perforatedai import LSTMProcessorLastHidden
    return isinstance(processor, type) and issubclass(processor, LSTMProcessorLastHidden)


def check_processors(model: nn.Module, chosen: list[str], pc: PAIConfig) -> None:
    """Before wrapping: every chosen module with a processor must be one perforate's recurrent
    kind handles (else :class:`CompatUsageError`); processors it does not run are noted."""
    from .library_perforatedai import LSTMProcessor, LSTMProcessorLastHidden, MultiOutputProcessor

    native = (LSTMProcessor, LSTMProcessorLastHidden, MultiOutputProcessor)
    for name in chosen:
        module = model.get_submodule(name) if name else model
        processor = processor_for(module, pc)
        if processor is None:
            continue
        label = getattr(processor, "__name__", repr(processor))
        if not isinstance(module, nn.RNNBase):
            raise CompatUsageError(
                f"{name or 'the model'} ({type(module).__name__}) is registered with the processor "
                f"{label}: perforate maps processors onto its recurrent layers only (nn.RNN, nn.LSTM, "
                f"nn.GRU) and has no dendrites for a {type(module).__name__} with a tuple output; leave "
                f"it out with GPA.pc.append_module_ids_to_track(['.{name}']) (a step-by-step cell: run "
                "nn.LSTM over the sequence instead)")
        if not (isinstance(processor, type) and issubclass(processor, native)):
            pc.note(f"processor:{label}", f"perforate: {name} gets dendrites on its hidden outputs "
                    f"(perforate's recurrent layers); the processor {label} is not called")


def adopt(model: nn.Module, pc: PAIConfig) -> nn.Module:
    """Give the wrapped layers of ``model`` (after conversion or loading) the classes above, the
    recurrent ones registered with ``LSTMProcessorLastHidden`` the ``(None, last)`` return."""
    stacks = [m for m in model.modules() if isinstance(m, RecurrentStack)]
    inner = {id(layer) for stack in stacks for layer in stack.layers}
    for stack in stacks:
        last = _last_hidden_processor(processor_for(stack, pc))
        stack.__class__ = PAILastHiddenStack if last else PAIRecurrentStack
    for layer in dendritic_layers(model).values():
        last = id(layer) not in inner and isinstance(layer.main, nn.RNNBase) and \
            _last_hidden_processor(processor_for(layer.main, pc))
        layer.__class__ = PAILastHiddenModule if last else PAINeuronModule
    return model
