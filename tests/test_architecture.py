"""The house plan holds: imports flow one way between the library's rooms and
no module imports itself back through others, imports inside functions
included (they are read from the source, not executed)."""

from __future__ import annotations

import ast
import os

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# A room imports only rooms on lower floors (or itself). Floors of the library:
FLOORS = {
    "nonlocal_tf.runtime": 0,
    "nonlocal_tf.utils": 0,
    "nonlocal_tf.files": 0,
    "nonlocal_tf.layers": 1,
    "nonlocal_tf.data": 1,
    "nonlocal_tf.prefetch": 1,  # batches to the accelerator ahead of the step
    "nonlocal_tf.models": 2,
    "nonlocal_tf.training": 2,
    "nonlocal_tf.export": 2,
    "nonlocal_tf.evaluation": 2,
    "nonlocal_tf.visualize": 2,
    "nonlocal_tf.inference": 2,
    "nonlocal_tf.weights": 3,  # formats, conversion, downloads: no model imports
    "nonlocal_tf.pretrained": 4,  # the catalogue and its load flow
    "nonlocal_tf.demo": 5,  # `make demo`'s models, made through the front door
    "nonlocal_tf": 5,  # the package's own __init__: re-exports
    "zoo": 6,
}


def modules() -> dict[str, str]:
    """Dotted name -> path of every module of the library and the zoo."""
    found = {}
    for top in ("nonlocal_tf", "zoo"):
        for folder, _, names in os.walk(os.path.join(ROOT, top)):
            for name in names:
                if name.endswith(".py"):
                    path = os.path.join(folder, name)
                    dotted = os.path.relpath(path, ROOT)[:-3].replace(os.sep, ".")
                    found[dotted.removesuffix(".__init__")] = path
    return found


def imports(path: str, module: str, known: dict) -> set[str]:
    """Internal modules ``path`` imports, anywhere in the file: ``from a import b``
    is module ``a.b`` when that is a module, else ``a``."""
    package = module if path.endswith("__init__.py") else module.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(open(path).read(), path)):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                base = ".".join(parts[: len(parts) - node.level + 1] + ([base] if base else []))
            for alias in node.names:
                found.add(f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base)
    return {m for m in found if m in known}


def room(module: str) -> str:
    return max((r for r in FLOORS if module == r or module.startswith(r + ".")), key=len)


@pytest.fixture(scope="module")
def graph():
    known = modules()
    return {module: imports(path, module, known) for module, path in known.items()}


def test_imports_flow_down_the_floors(graph):
    wrong = [
        f"{module} ({room(module)}, floor {FLOORS[room(module)]}) imports {target} "
        f"({room(target)}, floor {FLOORS[room(target)]})"
        for module, targets in graph.items()
        for target in targets
        if room(target) != room(module) and FLOORS[room(target)] >= FLOORS[room(module)]
    ]
    assert not wrong, "\n".join(wrong)


def test_no_import_cycle(graph):
    """Tarjan's strongly connected components of the module graph: all of size one."""
    index, low, stack, on_stack, cycles = {}, {}, [], set(), []

    def visit(node):
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in sorted(graph[node]):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1 or node in graph[node]:
                cycles.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    assert not cycles, cycles


def test_the_checker_sees_imports_inside_functions(tmp_path):
    path = tmp_path / "m.py"
    path.write_text("def f():\n    from nonlocal_tf.weights import load_weights\n")
    known = modules()
    assert imports(str(path), "nonlocal_tf.models.x", known) == {"nonlocal_tf.weights"}
