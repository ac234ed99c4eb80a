"""The test suite's own layout: every folder of tests is a package (two test modules of one name
in two folders are told apart by their folder), and no test module imports another one or a
conftest (shared helpers are in ``tests/helpers``, shared fixtures in ``tests/conftest.py``).
Imports are read with ``ast``, those inside functions included (a script held in a string is
not read)."""
import ast
from pathlib import Path

TESTS = Path(__file__).resolve().parent


def _imports(path):
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            yield node.module


def _is_a_test_module(name):
    parts = name.split(".")
    if parts[-1].startswith("test_") or "conftest" in parts:
        return True
    return parts[0] == "tests" and parts[1:2] != ["helpers"]


def test_every_folder_of_tests_is_a_package():
    folders = {path.parent for path in TESTS.rglob("*.py")}
    missing = sorted(str(f.relative_to(TESTS.parent)) for f in folders if not (f / "__init__.py").exists())
    assert not missing, f"add an empty __init__.py to {missing} (tests/ and its folders are packages)"


def test_no_module_of_tests_imports_a_test_module_or_a_conftest():
    found = [f"{path.relative_to(TESTS.parent)} imports {name}"
             for path in sorted(TESTS.rglob("*.py")) for name in _imports(path) if _is_a_test_module(name)]
    assert not found, f"move what is shared to tests/helpers (or a fixture in tests/conftest.py): {found}"
