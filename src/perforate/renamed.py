"""Old module paths that keep working after a rename (``perforate.report`` -> ``growth_plot`` ...).

Each old path is a module of a few lines that calls :func:`alias_module`: importing it warns
once and gives the new module itself, so patching one patches the other.
"""
from __future__ import annotations

import sys
import warnings
from types import ModuleType


def alias_module(old: str, new: ModuleType, submodules: tuple[str, ...] = ()) -> None:
    """Make ``import old`` (and ``import old.<submodule>``) give ``new`` (and its submodules),
    with a DeprecationWarning at the importing line naming the new path."""
    warnings.warn(f"{old} is renamed {new.__name__}; import {new.__name__} instead",
                  DeprecationWarning, stacklevel=3)
    for name in submodules:
        sys.modules[f"{old}.{name}"] = getattr(new, name)
    sys.modules[old] = new
