"""Deprecated module path: renamed :mod:`perforate.validation` (checking values from users and files against field annotations).

Importing ``perforate.checks`` issues a DeprecationWarning and gives the very module
``perforate.validation`` (the same object: patching one patches the other).
Import ``perforate.validation`` instead.
"""

from . import validation
from .renamed import alias_module

alias_module(__name__, validation)
