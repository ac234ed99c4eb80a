"""No function in src/perforate is longer than 60 lines, outside CLI option lists and data tables.

Functions are read with ``ast`` (nothing is imported); a function's length runs from its ``def``
line to its last line, its decorators left out. A typer command whose signature is its option
list (``Annotated[..., typer.Option(...)]`` parameters) is measured from its first body line:
its options are a list, not logic. Anything else over the limit must be split into named steps,
or be a data table on ``ALLOWED`` with the reason it may stay long.
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "perforate"
LIMIT = 60

# (path under src/perforate, qualified name) -> why it may be longer than LIMIT
ALLOWED: dict[tuple[str, str], str] = {
    ("compat/perforatedai/knobs.py", "_knobs"):
        "data table: one Knob line per GPA.pc setting of perforatedai 3.2.9 (defaults, effect, note)",
}


def _is_option_list(node: ast.FunctionDef | ast.AsyncFunctionDef) -> bool:
    """True for a typer command whose signature holds its options."""
    args = node.args
    params = args.posonlyargs + args.args + args.kwonlyargs
    return any(p.annotation is not None and "typer." in ast.unparse(p.annotation) for p in params)


def _functions(tree: ast.AST, prefix: str = ""):
    """``(qualified name, node)`` of every function in ``tree``, nested ones and methods too."""
    for node in ast.iter_child_nodes(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            yield prefix + node.name, node
            yield from _functions(node, f"{prefix}{node.name}.<locals>.")
        elif isinstance(node, ast.ClassDef):
            yield from _functions(node, f"{prefix}{node.name}.")
        else:
            yield from _functions(node, prefix)


def _length(node: ast.FunctionDef | ast.AsyncFunctionDef) -> int:
    start = node.body[0].lineno if _is_option_list(node) else node.lineno
    return node.end_lineno - start + 1


def _lengths() -> dict[tuple[str, str], int]:
    out = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(PACKAGE).as_posix()
        for name, node in _functions(ast.parse(path.read_text(encoding="utf-8"), str(path))):
            out[rel, name] = _length(node)
    return out


def test_no_function_is_longer_than_the_limit():
    long = {key: n for key, n in _lengths().items()
            if n > LIMIT and key not in ALLOWED}
    assert not long, (
        f"functions over {LIMIT} lines (split them into named steps; only CLI option lists and "
        "data tables may stay long, listed in ALLOWED with the reason): "
        + ", ".join(f"{rel}::{name} ({n} lines)" for (rel, name), n in sorted(long.items())))


def test_allowed_entries_are_still_needed():
    lengths = _lengths()
    stale = [f"{rel}::{name}" for rel, name in ALLOWED if lengths.get((rel, name), 0) <= LIMIT]
    assert not stale, f"ALLOWED lists functions that are gone or within {LIMIT} lines: {stale}"


SAMPLE = '''
import typer
from typing import Annotated

def plain(a, b):
    x = 1
    return x

class Holder:
    def method(self):
        def inner():
            return 2
        return inner

@app.command()
def command(
    width: Annotated[int, typer.Option(help="width")] = 1,
    depth: Annotated[int, typer.Option(help="depth")] = 2,
):
    return width + depth
'''


def test_measure_counts_from_def_and_skips_option_lists():
    found = {name: (node, _length(node)) for name, node in _functions(ast.parse(SAMPLE))}
    assert set(found) == {"plain", "Holder.method", "Holder.method.<locals>.inner", "command"}
    assert found["plain"][1] == 3
    assert found["Holder.method"][1] == 4
    assert found["command"][1] == 1  # the options and the decorator are not counted
    assert not _is_option_list(found["plain"][0])


@pytest.mark.parametrize("key", sorted(ALLOWED))
def test_allowed_entries_say_why(key):
    assert ALLOWED[key].strip() and "\n" not in ALLOWED[key]
