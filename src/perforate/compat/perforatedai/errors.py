"""Typed errors of the perforatedai compatibility layer; each message says what to change."""
from __future__ import annotations

from ... import ConfigError, PerforateError


class CompatUsageError(PerforateError, RuntimeError):
    """A perforatedai call came in an order or with an argument perforate cannot honour."""


class CompatConfigError(ConfigError):
    """A ``GPA.pc`` setting has a value perforate cannot use."""
