"""Settings as module attributes, the style of the generations before ``GPA.pc`` existed.

``GPA.testing_dendrite_capacity = False`` (1.2.x) and ``PBG.nEpochsToSwitch = 10`` or
``PBG.moduleNamesToConvert.append('BasicBlock')`` (1.0.x) read and write ``GPA.pc``.
"""
from __future__ import annotations

import types
from typing import Any

from .knobs import canonical


class SettingsModule(types.ModuleType):
    """A module whose attributes named like settings read and write its ``pc``.

    Module globals it reads: ``pc``, optionally ``translate_name`` (a name translator) and
    ``computed_attributes`` (name -> zero-argument function).
    """

    def _translate(self, name: str) -> str:
        return self.__dict__.get("translate_name", lambda n: n)(name)

    def _setting(self, name: str) -> str | None:
        return None if name.startswith("_") else canonical(self._translate(name))

    def __getattr__(self, name: str) -> Any:
        computed = self.__dict__.get("computed_attributes", {})
        if name in computed:  # e.g. PBG.pbTracker: whatever GPA.pai_tracker is now
            return computed[name]()
        pc = self.__dict__["pc"]
        key = self._setting(name)
        if key is not None:
            return pc.value(key)  # the live value: appending to a list works
        constant = self._translate(name)  # PBG.doingHistory -> pc.DOING_HISTORY
        if constant.isupper() and hasattr(type(pc), constant):
            return getattr(type(pc), constant)
        raise AttributeError(f"module {self.__name__!r} has no attribute {name!r}")

    def __setattr__(self, name: str, value: Any) -> None:
        key = None if name in self.__dict__ else self._setting(name)
        if key is None:
            super().__setattr__(name, value)
        else:
            getattr(self.__dict__["pc"], f"set_{key}")(value)
