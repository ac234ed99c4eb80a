"""Deprecated module path: renamed :mod:`perforate.loop_warnings` (the warnings a training loop that misuses the grower gets).

Importing ``perforate.guards`` issues a DeprecationWarning and gives the very module
``perforate.loop_warnings`` (the same object: patching one patches the other).
Import ``perforate.loop_warnings`` instead.
"""
import sys
import warnings

from . import loop_warnings

warnings.warn("perforate.guards is renamed perforate.loop_warnings; import perforate.loop_warnings instead",
              DeprecationWarning, stacklevel=2)
sys.modules[__name__] = loop_warnings
