"""The integrations and the perforatedai compatibility layer use only documented names: those in
``perforate.__all__`` and those in ``perforate.integration_api.__all__``.

Imports are read with ``ast`` (nothing from the checked modules is imported), inside functions
and under ``if TYPE_CHECKING:`` too; so are attributes read off an imported ``perforate``.
"""
from __future__ import annotations

import ast
from pathlib import Path

import perforate
from perforate import integration_api

SRC = Path(__file__).resolve().parents[1] / "src"
PACKAGE = "perforate"
API = f"{PACKAGE}.integration_api"
CHECKED = (f"{PACKAGE}.integrations", f"{PACKAGE}.compat")
ALLOWED = {PACKAGE: set(perforate.__all__), API: set(integration_api.__all__)}


def _inside(module: str, packages: tuple[str, ...]) -> bool:
    return any(module == p or module.startswith(p + ".") for p in packages)


def undocumented_uses(source: str, module: str, is_package: bool = False) -> list[str]:
    """``module``'s uses of core names outside the documented ones (``module`` is the dotted
    name of the code in ``source``, for relative imports), as ``"line: name"``."""
    package = module if is_package else module.rpartition(".")[0]
    tree = ast.parse(source)
    found, aliases = [], {}  # aliases: local name -> "perforate" or the integration API module

    def check(lineno: int, base: str, name: str) -> None:
        if not base.startswith(PACKAGE) or _inside(base, CHECKED):
            return
        if name not in ALLOWED.get(base, set()):
            found.append(f"{lineno}: {base}.{name}")

    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")[:len(package.split(".")) - node.level + 1]
                base = ".".join(parts + ([node.module] if node.module else []))
            for alias in node.names:
                if f"{base}.{alias.name}" in ALLOWED:  # the module itself: check what is read off it
                    aliases[alias.asname or alias.name] = f"{base}.{alias.name}"
                else:
                    check(node.lineno, base, alias.name)
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name in ALLOWED:
                    aliases[alias.asname or alias.name.partition(".")[0]] = (
                        alias.name if alias.asname else PACKAGE)
                elif alias.name.startswith(PACKAGE + ".") and not _inside(alias.name, CHECKED):
                    found.append(f"{node.lineno}: import {alias.name}")
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in aliases:
            check(node.lineno, aliases[node.value.id], node.attr)
    return sorted(found, key=lambda f: (int(f.partition(":")[0]), f))


def _checked_files():
    for package in CHECKED:
        for path in sorted((SRC / Path(*package.split("."))).rglob("*.py")):
            parts = list(path.relative_to(SRC).with_suffix("").parts)
            is_package = parts[-1] == "__init__"
            yield path, ".".join(parts[:-1] if is_package else parts), is_package


def test_integrations_import_only_documented_names():
    files = list(_checked_files())
    assert len(files) > 10  # both packages were found
    bad = {name: found for path, name, is_package in files
           if (found := undocumented_uses(path.read_text(), name, is_package))}
    assert bad == {}, ("use a name from perforate.__all__ or perforate.integration_api.__all__ "
                       "(add it there, documented, if an integration needs it)")


def test_every_integration_name_is_documented_and_exists():
    doc = integration_api.__doc__
    assert [n for n in integration_api.__all__ if f"``{n}" not in doc] == []
    assert [n for n in integration_api.__all__ if not hasattr(integration_api, n)] == []
    assert [n for n in perforate.__all__ if not hasattr(perforate, n)] == []
    assert set(integration_api.__all__).isdisjoint(perforate.__all__)  # one documented home each


def test_the_checker_sees_undocumented_names():
    source = """
import perforate as pf
from .. import Config, GrowerState
from ..checkpoint import apply_structure
from ..integration_api import rebuild_structure, structure
from ..errors import ConfigError
from .common import anything
import perforate.writer
from perforate import integration_api as api

def f():
    from ..report import BASE_COLUMNS
    return pf.Grower, pf.checkpoint, api.load_weights, api.load_state
"""
    found = undocumented_uses(source, f"{PACKAGE}.integrations.example")
    assert found == ["3: perforate.GrowerState", "4: perforate.checkpoint.apply_structure",
                     f"5: {API}.structure", "6: perforate.errors.ConfigError",
                     "8: import perforate.writer", "12: perforate.report.BASE_COLUMNS",
                     "13: perforate.checkpoint", f"13: {API}.load_state"]
