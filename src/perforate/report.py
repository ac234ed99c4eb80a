"""Deprecated module path: renamed :mod:`perforate.growth_plot` (it draws growth.png).

Importing ``perforate.report`` issues a DeprecationWarning and gives the very module
``perforate.growth_plot`` (the same object: patching one patches the other).
Import ``perforate.growth_plot`` instead.
"""
import sys
import warnings

from . import growth_plot

warnings.warn("perforate.report is renamed perforate.growth_plot; import perforate.growth_plot instead",
              DeprecationWarning, stacklevel=2)
sys.modules[__name__] = growth_plot
