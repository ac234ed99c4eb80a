"""Deprecated module path: renamed :mod:`perforate.inference` (the inference form of a dendritic layer, built by ``pf.export``).

Importing ``perforate.exported`` issues a DeprecationWarning and gives the very module
``perforate.inference`` (the same object: patching one patches the other).
Import ``perforate.inference`` instead.
"""

from . import inference
from .renamed import alias_module

alias_module(__name__, inference)
