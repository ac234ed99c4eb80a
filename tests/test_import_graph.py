"""The package's import graph stays one-way: no cycles among modules or among the layers.

Imports are read with ``ast`` (nothing is imported), the ones inside functions included: a lazy
import is still a dependency. Imports under ``if TYPE_CHECKING:`` are left out: they never run.
"""
from __future__ import annotations

import ast
import functools
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"
PACKAGE = "perforate"
# packages whose modules only the top-level CLI may import together
HARNESS, SWEEPS = f"{PACKAGE}.experiments", f"{PACKAGE}.sweeps"
# the harness's own layers: data <- harness (shared machinery) <- one package per command <- cli
DATA, SHARED = f"{HARNESS}.data", f"{HARNESS}.harness"
COMMANDS = (f"{HARNESS}.bench", f"{HARNESS}.frontier", f"{HARNESS}.cost")
# the core never imports these
OUTER = (HARNESS, SWEEPS, f"{PACKAGE}.integrations", f"{PACKAGE}.compat", f"{PACKAGE}.cli")


def _modules() -> dict[str, tuple[Path, bool]]:
    out = {}
    for path in (SRC / PACKAGE).rglob("*.py"):
        parts = list(path.relative_to(SRC).with_suffix("").parts)
        is_package = parts[-1] == "__init__"
        out[".".join(parts[:-1] if is_package else parts)] = (path, is_package)
    return out


def _runtime_nodes(tree: ast.AST, module_level: bool = False):
    """Every node except those under ``if TYPE_CHECKING:`` (and, with ``module_level``, those
    inside functions: what runs when the module is imported)."""
    stack = [tree]
    while stack:
        node = stack.pop()
        yield node
        for child in ast.iter_child_nodes(node):
            if module_level and isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
                continue
            test = child.test if isinstance(child, ast.If) else None
            if test is not None and "TYPE_CHECKING" in ast.unparse(test):
                stack.extend(child.orelse)
                continue
            stack.append(child)


def imported_names(path: Path, package: str, module_level: bool = False) -> set[str]:
    """The absolute names of everything ``path`` imports (``from a import b`` gives ``a.b``)."""
    names = set()
    for node in _runtime_nodes(ast.parse(path.read_text()), module_level):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")[:len(package.split(".")) - node.level + 1]
                base = ".".join(parts + ([node.module] if node.module else []))
            names.update(f"{base}.{alias.name}" for alias in node.names)
    return names


@functools.cache
def import_graph(module_level: bool = False) -> dict[str, set[str]]:
    """Module -> the ``perforate`` modules it imports (read once per test session)."""
    modules = _modules()

    def resolve(name: str) -> str | None:
        while name and name not in modules:
            name = name.rpartition(".")[0]
        return name or None

    graph = {}
    for name, (path, is_package) in modules.items():
        package = name if is_package else name.rpartition(".")[0]
        targets = {resolve(n) for n in imported_names(path, package, module_level)}
        graph[name] = {t for t in targets if t and t != name and t.startswith(PACKAGE)}
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one node (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for nxt in graph.get(node, ()):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def _layer(module: str) -> str:
    for outer in OUTER:
        if module == outer or module.startswith(outer + "."):
            return outer
    return PACKAGE  # the core


def test_no_module_imports_itself_back():
    assert cycles(import_graph()) == []


def test_layers_import_one_way():
    graph = import_graph()
    layers: dict[str, set[str]] = {}
    for module, targets in graph.items():
        layers.setdefault(_layer(module), set()).update(_layer(t) for t in targets)
    for layer in layers:
        layers[layer].discard(layer)
    assert cycles(layers) == []
    assert layers[PACKAGE] == set(), "the core imports an outer layer"
    assert HARNESS not in layers.get(f"{PACKAGE}.integrations", set())
    # the sweeps use the harness, never the other way round; outside both, only the top-level
    # CLI imports both
    assert SWEEPS not in layers[HARNESS] and HARNESS in layers[SWEEPS]
    both = [m for m, targets in graph.items() if _layer(m) not in (HARNESS, SWEEPS)
            and {HARNESS, SWEEPS} <= {_layer(t) for t in targets}]
    assert both == [f"{PACKAGE}.cli"]


def _part(module: str) -> str | None:
    """The harness subpackage (or top-level module) ``module`` belongs to; None outside it."""
    if not module.startswith(HARNESS + "."):
        return None
    return ".".join(module.split(".")[:3])


def test_experiments_layers_import_one_way():
    """data <- harness <- bench | frontier | cost <- experiments.cli (and the old-path aliases);
    a command's package never imports another's, the sweeps only data and harness."""
    allowed = {DATA: {DATA}, SHARED: {DATA, SHARED}, **{c: {DATA, SHARED, c} for c in COMMANDS}}
    graph = import_graph()
    for module, targets in graph.items():
        part = _part(module)
        used = {_part(t) for t in targets} - {None}
        if part in allowed:
            assert used <= allowed[part], (module, used - allowed[part])
        elif _layer(module) == SWEEPS:
            assert used <= {DATA, SHARED}, (module, used)
    assert {_part(t) for t in graph[f"{HARNESS}.cli"]} >= {SHARED, *COMMANDS}


def test_import_perforate_leaves_matplotlib_out():
    """What ``import perforate`` loads imports matplotlib only inside functions (when drawing)."""
    modules, graph = _modules(), import_graph(module_level=True)
    loaded, todo = set(), [PACKAGE]
    while todo:
        name = todo.pop()
        if name not in loaded:
            loaded.add(name)
            todo += graph[name]
    for name in loaded:
        path, is_package = modules[name]
        package = name if is_package else name.rpartition(".")[0]
        assert not any(n.startswith("matplotlib") for n in imported_names(path, package, True)), name
    assert {f"{PACKAGE}.grower", f"{PACKAGE}.writer", f"{PACKAGE}.growth_plot"} <= loaded


# old module paths kept only as deprecation aliases of their new names
RENAMED = {f"{PACKAGE}.training": f"{PACKAGE}.growth", f"{PACKAGE}.report": f"{PACKAGE}.growth_plot",
           f"{PACKAGE}.checks": f"{PACKAGE}.validation", f"{PACKAGE}.guards": f"{PACKAGE}.loop_warnings",
           f"{PACKAGE}.exported": f"{PACKAGE}.inference"}


def test_no_module_imports_a_renamed_path():
    """The package imports its modules by their new names: an old path only warns users."""
    graph = import_graph()
    assert set(RENAMED) <= set(graph)
    users = {m: sorted(set(RENAMED) & targets) for m, targets in graph.items() if m not in RENAMED}
    assert {m: old for m, old in users.items() if old} == {}


def test_the_graph_reader_sees_lazy_imports():
    graph = import_graph()
    assert f"{PACKAGE}.experiments.harness.train" in graph[f"{PACKAGE}.sweeps.trial"]  # inside a function
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
