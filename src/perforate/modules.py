"""Edits of a module tree that the wrapping code (convert, the kinds' openers, checkpoint,
export) shares; depends on torch alone."""
from __future__ import annotations

from torch import nn


def replace_module(model: nn.Module, module: nn.Module, replacement: nn.Module) -> None:
    """Put ``replacement`` wherever ``module`` is registered inside ``model`` (tied modules
    are registered under several names)."""
    names = [n for n, m in model.named_modules(remove_duplicate=False) if m is module and n]
    for name in names:
        parent_name, _, child = name.rpartition(".")
        setattr(model.get_submodule(parent_name) if parent_name else model, child, replacement)
