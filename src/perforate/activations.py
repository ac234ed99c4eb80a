"""The one registry of dendrite activations: the forward and the derivative pb needs.

Each entry gives ``forward(z)`` and ``backward(grad, a, z)``, the gradient with respect to
``z`` given the gradient with respect to ``a = forward(z)``. Activations whose derivative
follows from the output alone (``from_output=True``) let the pb candidate tap keep only ``a``;
the others keep ``z`` as well. Adding an activation is one entry here (and its test).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

from .errors import ConfigError


@dataclass(frozen=True)
class Activation:
    """A dendrite activation: ``forward(z)`` and ``backward(grad, a, z) = grad * f'(z)``."""

    name: str
    forward: Callable[[torch.Tensor], torch.Tensor]
    backward: Callable[[torch.Tensor, torch.Tensor, torch.Tensor | None], torch.Tensor]
    from_output: bool = True
    """True when ``backward`` needs only ``a`` (``z`` is then passed as None)."""
    forward_: Callable[[torch.Tensor], torch.Tensor] | None = None
    """``forward`` in place, and ``backward_(grad, a)``: the derivative written into ``grad``
    (for fused paths that own their buffers; one op and no new tensor each). None: none."""
    backward_: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None


def _gelu_backward(grad: torch.Tensor, a: torch.Tensor, z: torch.Tensor | None) -> torch.Tensor:
    return torch.ops.aten.gelu_backward(grad, z)


_SIGMOID_BACKWARD_ = torch.ops.aten.sigmoid_backward.grad_input
_TANH_BACKWARD_ = torch.ops.aten.tanh_backward.grad_input
_THRESHOLD_BACKWARD_ = torch.ops.aten.threshold_backward.grad_input

ACTIVATIONS: dict[str, Activation] = {
    a.name: a for a in (
        Activation("sigmoid", torch.sigmoid, lambda g, a, z: torch.ops.aten.sigmoid_backward(g, a),
                   forward_=torch.sigmoid_,
                   backward_=lambda g, a: _SIGMOID_BACKWARD_(g, a, grad_input=g)),
        Activation("tanh", torch.tanh, lambda g, a, z: torch.ops.aten.tanh_backward(g, a),
                   forward_=torch.tanh_,
                   backward_=lambda g, a: _TANH_BACKWARD_(g, a, grad_input=g)),
        Activation("relu", torch.relu, lambda g, a, z: torch.ops.aten.threshold_backward(g, a, 0.0),
                   forward_=torch.relu_,
                   backward_=lambda g, a: _THRESHOLD_BACKWARD_(g, a, 0.0, grad_input=g)),
        Activation("gelu", torch.nn.functional.gelu, _gelu_backward, from_output=False),
    )
}
"""Name -> :class:`Activation`; ``Config.dendrite_activation`` takes these names."""


def get(name: str) -> Activation:
    """The activation called ``name``; ConfigError lists the known names otherwise."""
    try:
        return ACTIVATIONS[name]
    except KeyError:
        raise ConfigError(f"dendrite activation must be one of {sorted(ACTIVATIONS)}; got {name!r}") from None
