"""Opening modules whose layers are not reachable as sub-modules, so the kinds can wrap them.

``nn.MultiheadAttention`` computes its projections from raw weight tensors and a multi-layer
``nn.LSTM`` keeps every layer in one module: neither has a sub-module to wrap. An *opener*
rewrites such a module in place into an equivalent one whose layers are sub-modules (the
*sites*), and closes it back into the stock module when no dendrites remain (``pf.export``).
It may also *guard* containers whose fused fast paths read a wrapped layer's weights directly.
"""
from __future__ import annotations

from typing import Callable, Protocol

from torch import nn

from ..modules import replace_module


class Opener(Protocol):
    def wants(self, module: nn.Module) -> bool:
        """True for a module this opener opens."""

    def sites(self, module: nn.Module) -> list[str]:
        """The sub-module names the opened module will have that the kinds can wrap."""

    def open(self, module: nn.Module) -> nn.Module:
        """The opened, equivalent module (``module`` itself when its class is swapped)."""

    def is_open(self, module: nn.Module) -> bool:
        """True for a module this opener opened."""

    def close(self, module: nn.Module) -> nn.Module:
        """The stock module again, when none of the sites holds dendrites; else ``module``."""

    def guard(self, model: nn.Module) -> None:
        """Make containers that read wrapped weights directly take their ordinary path."""


_OPENER_MODULES = ("attention", "recurrent")


def _openers() -> list[Opener]:
    import importlib

    return [importlib.import_module(f"{__package__}.{name}").OPENER for name in _OPENER_MODULES]


def _replace(model: nn.Module, name: str, old: nn.Module, new: nn.Module) -> nn.Module:
    if new is old:
        return model
    if not name:
        return new
    replace_module(model, old, new)
    return model


def open_selected(model: nn.Module, selected: Callable[[str], bool]) -> nn.Module:
    """Open every module whose sites ``selected(name)`` accepts; returns the model."""
    for name, module in list(model.named_modules()):
        for opener in _openers():
            if opener.wants(module):
                prefix = f"{name}." if name else ""
                if any(selected(prefix + site) for site in opener.sites(module)):
                    model = _replace(model, name, module, opener.open(module))
    return model


def open_for(model: nn.Module, names: list[str]) -> nn.Module:
    """Open whatever stands between ``model`` and the sub-modules ``names`` (for loading)."""
    wanted = set(names)
    return open_selected(model, wanted.__contains__)


def guard(model: nn.Module) -> None:
    """Let every opener guard the containers in ``model`` (after wrapping)."""
    for opener in _openers():
        opener.guard(model)


def close_all(model: nn.Module) -> nn.Module:
    """Close every opened module in ``model`` whose sites hold no dendrites (export); inner
    modules first, so that the containers around them see what is left."""
    for name, module in reversed(list(model.named_modules())):
        for opener in _openers():
            if opener.is_open(module):
                model = _replace(model, name, module, opener.close(module))
    return model
