"""Checking plain values that come from users and files against a dataclass's annotations.

``Config`` and ``GrowerState`` declare their fields with ordinary annotations (``int``,
``float | None``, ``list[str]``, ``dict[str, int]`` ...). :func:`check_fields` checks every
field's value against its annotation, so a field added later is checked without new code; the
classes add their own bounds. Integers must fit in 64 bits and numbers must not be NaN (both
would fail later, far from the cause); infinities are left to each class's bounds.
:func:`show` is the bounded ``repr`` every message uses: a value built by a YAML alias bomb
prints in a few dozen characters.
"""
from __future__ import annotations

import dataclasses
import functools
import math
import reprlib
import sys
import types
import typing
from typing import Any

INT64 = (-(2**63), 2**63 - 1)

_repr = reprlib.Repr()
_repr.maxlevel, _repr.maxlist, _repr.maxtuple, _repr.maxdict = 2, 6, 6, 6
_repr.maxset = _repr.maxfrozenset = 6
_repr.maxstring, _repr.maxother, _repr.maxlong = 80, 80, 40


def show(value: Any, limit: int = 160) -> str:
    """A ``repr`` of ``value`` of at most ``limit`` characters, however large or deep the value."""
    text = _repr.repr(value)
    return text if len(text) <= limit else text[:limit - 4] + " ..."


@functools.cache
def hints(cls: type) -> dict[str, Any]:
    """The resolved annotations of a dataclass's fields (cached)."""
    resolved = typing.get_type_hints(cls)
    return {f.name: resolved[f.name] for f in dataclasses.fields(cls)}


def check_fields(obj: Any, error: type[Exception]) -> None:
    """Raise ``error`` naming the first field of dataclass ``obj`` whose value does not fit its
    annotation."""
    for name, hint in hints(type(obj)).items():
        value = getattr(obj, name)
        if not fits(value, hint):
            raise error(f"{name} must be {describe(hint)}; got {show(value)}")


def fits(value: Any, hint: Any) -> bool:
    """True when ``value`` is a plain value of type ``hint`` (see the module docstring)."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        return any(fits(value, a) for a in args)
    if hint is type(None):
        return value is None
    if hint is Any:
        return True
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool) and INT64[0] <= value <= INT64[1]
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return False
        return not math.isnan(value) if isinstance(value, float) else abs(value) <= sys.float_info.max
    if hint is str:
        return isinstance(value, str)
    if origin is list or hint is list:
        return isinstance(value, list) and all(fits(v, args[0]) for v in value) if args else \
            isinstance(value, list)
    if origin is dict or hint is dict:
        return isinstance(value, dict) and (not args or all(
            fits(k, args[0]) and fits(v, args[1]) for k, v in value.items()))
    return True  # a type this checker does not know: the class checks it itself


def describe(hint: Any) -> str:
    """``hint`` in words, for messages."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(describe(a) for a in args)
    words = {bool: "true or false", int: "an integer", float: "a number (not NaN)", str: "a string",
             type(None): "null", list: "a list", dict: "a mapping"}
    if hint in words:
        return words[hint]
    if origin is list:
        return f"a list of {describe(args[0]).removeprefix('a ').removeprefix('an ')}s"
    if origin is dict:
        return f"a mapping of {describe(args[0])} to {describe(args[1])}"
    return str(hint)



def score_problem(score: float, maximize: bool | None, what: str = "val_score") -> str:
    """Why ``score`` cannot be a validation score ("" when it can): NaN, and an infinity at the
    best end (``+inf`` when maximising, ``-inf`` when minimising; either end when ``maximize``
    is None), which no later score could beat: it would stay the best for good. An infinity at
    the worst end (a diverged loss of ``+inf``) is a score like any other: every score beats it."""
    if math.isnan(score):
        return f"{what} is NaN; check the training loop (diverged loss?)"
    if math.isinf(score) and (maximize is None or (score > 0) == maximize):
        return (f"{what} is {score}, which no later score could beat (it would stay the best for "
                "good); pass a finite number: check the evaluation (a division by an empty count?) "
                "or skip this epoch's step()")
    return ""
