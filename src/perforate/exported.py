"""Deprecated module path: renamed :mod:`perforate.inference` (the inference form of a dendritic layer, built by ``pf.export``).

Importing ``perforate.exported`` issues a DeprecationWarning and gives the very module
``perforate.inference`` (the same object: patching one patches the other).
Import ``perforate.inference`` instead.
"""
import sys
import warnings

from . import inference

warnings.warn("perforate.exported is renamed perforate.inference; import perforate.inference instead",
              DeprecationWarning, stacklevel=2)
sys.modules[__name__] = inference
