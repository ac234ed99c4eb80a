"""Deprecated module path: renamed :mod:`perforate.growth_plot` (it draws growth.png).

Importing ``perforate.report`` issues a DeprecationWarning and gives the very module
``perforate.growth_plot`` (the same object: patching one patches the other).
Import ``perforate.growth_plot`` instead.
"""

from . import growth_plot
from .renamed import alias_module

alias_module(__name__, growth_plot)
