"""Deprecated module path: renamed :mod:`perforate.loop_warnings` (the warnings a training loop that misuses the grower gets).

Importing ``perforate.guards`` issues a DeprecationWarning and gives the very module
``perforate.loop_warnings`` (the same object: patching one patches the other).
Import ``perforate.loop_warnings`` instead.
"""

from . import loop_warnings
from .renamed import alias_module

alias_module(__name__, loop_warnings)
