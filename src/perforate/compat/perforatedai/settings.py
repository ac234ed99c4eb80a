"""``GPA.pc``: the reference's settings object, with ``set_X`` / ``get_X`` / ``append_X`` per setting."""
from __future__ import annotations

import difflib
import json
import logging
from functools import partial
from pathlib import Path
from typing import Any, Callable

from .errors import CompatConfigError
from .knobs import ANY, KNOBS, UNSUPPORTED, canonical

log = logging.getLogger("perforate")

_PREFIXES = ("set_", "get_", "append_")


class PAIConfig:
    """Holds every setting of :data:`knobs.KNOBS`; ``GPA.pc`` is the one instance.

    ``get_X()`` of a scalar setting holding a list returns the entry for the current dendrite
    count (``X[min(len(X) - 1, dendrites)]``); list settings are returned whole (the live list,
    so ``append`` on it works). Unknown names log one line and are ignored, as in 3.x.
    """

    DOING_SWITCH_EVERY_TIME = 0
    DOING_HISTORY = 1
    DOING_FIXED_SWITCH = 2
    DOING_NO_SWITCH = 3
    PARAM_VALS_BY_TOTAL_EPOCH = 0
    PARAM_VALS_BY_UPDATE_EPOCH = 1
    PARAM_VALS_BY_NEURON_EPOCH_START = 2

    def __init__(self, dendrite_count: Callable[[], int] = lambda: 0) -> None:
        self._dendrite_count = dendrite_count
        self.reset()

    def reset(self) -> None:
        """Every setting back to its default."""
        self._values = {name: knob.fresh_default() for name, knob in KNOBS.items()}
        self._explicit: set[str] = set()
        self._noted: set[str] = set()

    def __getattr__(self, attr: str) -> Any:
        for prefix in _PREFIXES:
            if attr.startswith(prefix):
                return partial(getattr(self, "_" + prefix[:-1]), attr[len(prefix):])
        raise AttributeError(f"GPA.pc has no attribute {attr!r}; settings are read and written "
                             "with GPA.pc.get_<name>() and GPA.pc.set_<name>(value)")

    # ------------------------------------------------------------------ the three accessors
    def _set(self, name: str, value: Any) -> None:
        key = self._known(name, "set")
        if key is None:
            return
        self._values[key] = value
        self._explicit.add(key)
        self._note_unsupported(key, f"set_{name}", value)

    def _get(self, name: str) -> Any:
        key = self._known(name, "get")
        return None if key is None else self.value(key, self._dendrite_count())

    def _append(self, name: str, items: Any) -> None:
        key = self._known(name, "append")
        if key is None:
            return
        current = self._values[key]
        if not isinstance(current, list):
            raise CompatConfigError(f"GPA.pc.append_{name}: '{key}' holds {current!r}, not a list; "
                                    f"use GPA.pc.set_{name}(value)")
        current.extend(items if isinstance(items, (list, tuple)) else [items])
        self._explicit.add(key)
        self._note_unsupported(key, f"append_{name}", items)

    # ------------------------------------------------------------------ used by the compat layer
    def value(self, name: str, dendrites: int | None = None) -> Any:
        """The setting's value; for a scalar setting holding a list and ``dendrites`` given,
        the schedule's entry for that dendrite count."""
        value = self._values[name]
        if dendrites is not None and isinstance(value, list) and not KNOBS[name].is_list and value:
            return value[min(len(value) - 1, dendrites)]
        return value

    def is_set(self, name: str) -> bool:
        """True when the script set or appended to this setting."""
        return name in self._explicit

    def assign(self, name: str, value: Any) -> None:
        """Set a value on the script's behalf (an entry point's argument): not marked as set."""
        self._values[name] = value

    def note(self, key: str, message: str, level: int = logging.WARNING) -> None:
        """Log ``message`` once per ``key`` (not at all under ``set_silent(True)``)."""
        if key not in self._noted and not self._values["silent"]:
            self._noted.add(key)
            log.log(level, message)

    # ------------------------------------------------------------------ JSON round trip (3.2.9)
    def to_dict(self) -> dict[str, Any]:
        """Settings whose values are plain JSON (module classes and functions are left out)."""
        out = {}
        for name, value in self._values.items():
            try:
                json.dumps(value)
            except (TypeError, ValueError):
                continue
            out[name] = value
        return out

    def save_config(self, filename: str | Path) -> None:
        Path(filename).parent.mkdir(parents=True, exist_ok=True)
        Path(filename).write_text(json.dumps(self.to_dict(), indent=2))

    def load_config(self, filename: str | Path) -> None:
        """Read settings from JSON; settings the script already set by hand win."""
        try:
            data = json.loads(Path(filename).read_text())
        except (OSError, ValueError) as exc:
            raise CompatConfigError(f"cannot read the perforatedai config file {filename}: {exc}; "
                                    "pass a JSON file written by GPA.pc.save_config") from exc
        if not isinstance(data, dict):
            raise CompatConfigError(f"{filename} must hold a JSON object of setting names to values")
        for name, value in data.items():
            key = canonical(name)
            if key is None:
                if not (name.isupper() or name.startswith("_") or name == "module_settings"):
                    self._known(name, "load")
            elif key not in self._explicit:
                self._values[key] = value

    # ------------------------------------------------------------------ helpers
    def _known(self, name: str, action: str) -> str | None:
        key = canonical(name)
        if key is None:
            close = difflib.get_close_matches(name, list(KNOBS), n=1)
            hint = f" (did you mean '{close[0]}'?)" if close else ""
            self.note(f"unknown:{name}", f"perforatedai has no setting '{name}'; ignoring the "
                                         f"{action} attempt{hint}")
        return key

    def _note_unsupported(self, key: str, call: str, value: Any) -> None:
        """One line for a setting perforate has no counterpart of: the call as the script made
        it, and what perforate does instead."""
        knob = KNOBS[key]
        if knob.effect == UNSUPPORTED and (knob.honoured is ANY or self._values[key] != knob.honoured):
            shown = getattr(value, "__name__", None) or repr(value)
            if len(shown) > 60:
                shown = shown[:57] + "..."
            self.note(f"unsupported:{key}", f"GPA.pc.{call}({shown}) changes nothing in perforate, "
                                            f"which has no such option: {knob.note}")
