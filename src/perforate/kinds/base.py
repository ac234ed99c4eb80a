"""What every layer kind answers: the adapter interface :class:`DendriticLayer` delegates to.

A *kind* is a stateless adapter for one family of modules (Linear, ConvNd, declared blocks,
recurrent layers, graph layers). It knows the family's neuron axis and output channels, how to
make dendrite units, how to run them (stacked where it can), how a pb candidate pool computes
its candidates, and how the dendrites fold for export. The layer holds the tensors; the kind
holds no state, so one instance serves every layer of its kind.
"""
from __future__ import annotations

from typing import Any, Callable

import torch
from torch import nn

from ..errors import WrapError

Rebuild = Callable[[torch.Tensor], Any]

KINDS: dict[str, "Kind"] = {}
"""Every kind by name, filled by :mod:`perforate.kinds` as it imports the kind modules."""


class Kind:
    """Base adapter. Subclasses override what differs; the defaults suit single-tensor layers."""

    name = ""
    stacked = False
    """True when the dendrites are stored as one wide weight and run in one call."""

    # kinds are stateless singletons: copies and pickles of a layer refer to the same one
    def __deepcopy__(self, memo: dict) -> Kind:
        return self

    def __reduce__(self):
        return _by_name, (self.name,)

    # ------------------------------------------------------------------ selection and shape
    def matches(self, module: nn.Module) -> bool:
        """True when ``pf.perforate`` should wrap ``module`` with this kind without being asked."""
        return False

    def natural_axis(self, module: nn.Module) -> int:
        """The neuron axis of ``module``'s output."""
        raise NotImplementedError

    def resolve_axis(self, module: nn.Module, requested: int | None) -> int:
        """The axis to use given a user's override (None: the natural one)."""
        natural = self.natural_axis(module)
        if requested is None or requested == natural:
            return natural
        raise WrapError(
            f"a {type(module).__name__} always puts its neurons on axis {natural}; a different "
            "neuron_axis needs the layer wrapped inside a block (pf.perforate(..., blocks=...))")

    def channels(self, module: nn.Module) -> int:
        """The number of neurons (output channels)."""
        raise NotImplementedError

    def axis(self, layer: nn.Module, ndim: int) -> int:
        """The non-negative neuron axis of an output with ``ndim`` dimensions."""
        axis = layer.neuron_axis
        return axis + ndim if axis < 0 else axis

    # ------------------------------------------------------------------ forward plumbing
    def neurons(self, main: nn.Module, out: Any) -> tuple[torch.Tensor, Rebuild | None]:
        """From ``main``'s output ``out``: the tensor dendrites join (neurons on the layer's
        axis) and how to rebuild the module's output from the joined tensor (None: the tensor
        is the output)."""
        return out, None

    def fused_forward(self, layer: nn.Module, x: Any, args: tuple, kwargs: dict) -> Any:
        """The output of ``layer`` (with dendrites, no candidate pool) computed by a faster path
        of the kind, or None to take the generic one."""
        return None

    def detach(self, x: Any) -> Any:
        """``x`` cut from the graph (the perforated dendrite input)."""
        return x.detach()

    # ------------------------------------------------------------------ dendrite units
    def new_units(self, layer: nn.Module, n: int, generator: torch.Generator | None) -> Any:
        """Fresh weights for ``n`` dendrite units; uses ``generator``, never the global RNG."""
        raise NotImplementedError

    def placeholder_units(self, layer: nn.Module, n: int) -> Any:
        """``n`` units of the right shapes and any values (to be overwritten by a load)."""
        raise NotImplementedError

    def append_units(self, layer: nn.Module, units: Any) -> None:
        raise NotImplementedError

    def clear_units(self, layer: nn.Module) -> None:
        raise NotImplementedError

    def unit_parameters(self, layer: nn.Module) -> list[nn.Parameter]:
        raise NotImplementedError

    def unit_numel(self, main: nn.Module) -> int:
        """Tensor elements one dendrite unit of ``main`` holds in a state dict (a checkpoint's
        tensors must hold this many per dendrite and candidate before loading allocates them)."""
        return sum(t.numel() for t in main.state_dict().values())

    def preactivations(self, layer: nn.Module, x: Any, args: tuple, kwargs: dict) -> list[torch.Tensor]:
        """``z_k`` for every dendrite, each shaped like the neuron tensor."""
        raise NotImplementedError

    def reference_preactivations(self, layer: nn.Module, x: Any, args: tuple,
                                 kwargs: dict) -> list[torch.Tensor]:
        """The same as :meth:`preactivations`, one plain call per dendrite (a test reference)."""
        return self.preactivations(layer, x, args, kwargs)

    # ------------------------------------------------------------------ pb candidates
    def init_pool(self, pool: nn.Module, layer: nn.Module, units: Any) -> None:
        """Register ``units`` (from :meth:`new_units`) on ``pool`` with their remembered best."""
        raise NotImplementedError

    def pool_preactivations(self, pool: nn.Module, layer: nn.Module, x: Any, args: tuple,
                            kwargs: dict) -> tuple[torch.Tensor, int]:
        """The candidates' ``z`` laid out ``[..., P, C, ...]`` (candidates just before the neuron
        axis of the neuron tensor) and that neuron axis."""
        raise NotImplementedError

    def cat_samples(self, layer: nn.Module, xs: list[Any]) -> torch.Tensor | None:
        """One input holding the samples of the inputs ``xs`` (calls without other arguments),
        such that the candidates' ``z`` on it, in rows ``[samples x positions, P, C]``, is
        those of the ``xs`` one after another; None where the kind cannot (pb cached
        training then runs one call per batch)."""
        return None

    def remember(self, pool: nn.Module, improved: torch.Tensor) -> torch.Tensor:
        """Keep the weights of the (candidate, channel) pairs in ``improved`` [P, C]; returns the
        mask actually kept (a kind whose channels share weights keeps whole candidates)."""
        raise NotImplementedError

    def winners(self, pool: nn.Module) -> torch.Tensor:
        """``[C]``: for each neuron, the candidate that becomes its dendrite."""
        raise NotImplementedError

    def select(self, pool: nn.Module, winners: torch.Tensor) -> Any:
        """The winners' remembered weights as one dendrite, as :meth:`append_units` takes them."""
        raise NotImplementedError

    # ------------------------------------------------------------------ export
    def export_layer(self, layer: nn.Module, fold_main: bool = True) -> nn.Module:
        """The inference form of a layer with at least one dendrite (``pf.export`` calls this on
        its own copy of the model, so the layer's modules are reused, not copied)."""
        from ..inference import ExportedDendriticLayer

        return ExportedDendriticLayer(layer, share=True, fold_main=fold_main)

    def units_per_call(self, main: nn.Module) -> bool:
        """Stacked kinds: False when one call cannot compute several units."""
        return False


def first_parameter(module: nn.Module) -> torch.Tensor:
    """The first parameter of ``module``: where new dendrite tensors take device and dtype."""
    for p in module.parameters():
        return p
    raise WrapError(f"{type(module).__name__} has no parameters to give dendrites to")


def _by_name(name: str) -> Kind:
    return KINDS[name]
