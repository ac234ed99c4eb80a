"""Deprecated module path: renamed :mod:`perforate.validation` (checking values from users and files against field annotations).

Importing ``perforate.checks`` issues a DeprecationWarning and gives the very module
``perforate.validation`` (the same object: patching one patches the other).
Import ``perforate.validation`` instead.
"""
import sys
import warnings

from . import validation

warnings.warn("perforate.checks is renamed perforate.validation; import perforate.validation instead",
              DeprecationWarning, stacklevel=2)
sys.modules[__name__] = validation
