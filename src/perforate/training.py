"""Deprecated module path: renamed :mod:`perforate.growth` (the ways to grow dendrites: ``gd``,
``pb`` and its ``cached`` fast path).

Importing ``perforate.training`` (or ``perforate.training.pb`` ...) issues a DeprecationWarning
and gives the very modules of ``perforate.growth`` (the same objects: patching one patches the
other). A module, not a package: importing it registers the old submodule paths. Import
``perforate.growth`` instead.
"""
import sys
import warnings

from . import growth
from .growth import cached, gd, pb

warnings.warn("perforate.training is renamed perforate.growth; import perforate.growth instead",
              DeprecationWarning, stacklevel=2)
for _name, _module in (("cached", cached), ("gd", gd), ("pb", pb)):
    sys.modules[f"{__name__}.{_name}"] = _module
sys.modules[__name__] = growth
