"""Deprecated module path: renamed :mod:`perforate.growth` (the ways to grow dendrites: ``gd``,
``pb`` and its ``cached`` fast path).

Importing ``perforate.training`` (or ``perforate.training.pb`` ...) issues a DeprecationWarning
and gives the very modules of ``perforate.growth`` (the same objects: patching one patches the
other). A module, not a package: importing it registers the old submodule paths. Import
``perforate.growth`` instead.
"""

from . import growth
from .growth import cached, gd, pb  # noqa: F401 (registered as perforate.training.<name>)
from .renamed import alias_module

alias_module(__name__, growth, submodules=("cached", "gd", "pb"))
