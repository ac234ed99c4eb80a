"""``PBG``: the oldest (camelCase) globals module, as ``pb_globals`` was used before 3.x.

``PBG.pbTracker`` is ``GPA.pai_tracker`` (its camelCase methods work: ``addValidationScore``,
``setupOptimizer``, ...); ``PBG.nEpochsToSwitch = 10`` and
``PBG.moduleNamesToConvert.append('BasicBlock')`` read and write ``GPA.pc``; the constants
(``PBG.doingHistory``, ...) are ``GPA.pc``'s.
"""
from __future__ import annotations

import sys

from . import globals_perforatedai as GPA
from .attributes import SettingsModule
from .camel import snake

pc = GPA.pc
translate_name = snake
computed_attributes = {"pbTracker": lambda: GPA.pai_tracker}
PBSequential = GPA.PAISequential

sys.modules[__name__].__class__ = SettingsModule
