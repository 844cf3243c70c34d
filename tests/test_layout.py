"""The code's shape, checked from its source (ast, nothing imported): floors, cycles, sizes.

Floors: archbench (the public API) <- archs, tasks <- harness. A module never imports one on a
higher floor, archs and tasks never import each other, and no modules import each other in a
cycle (function-level imports count too: they are still dependencies).
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("archbench", "archs", "tasks", "harness")
FLOOR = {"archbench": 0, "archs": 1, "tasks": 1, "harness": 2}
MAX_MODULE_LINES = 400
MAX_HARNESS_FUNCTION_LINES = 60


def _modules() -> dict[str, Path]:
    out = {}
    for pkg in PACKAGES:
        for path in sorted((ROOT / pkg).rglob("*.py")):
            parts = path.relative_to(ROOT).with_suffix("").parts
            name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
            out[name] = path
    return out


MODULES = _modules()


def _resolve(name: str) -> str | None:
    """The project module an imported name lives in (``a.b.c`` -> ``a.b`` when c is an attribute)."""
    while name:
        if name in MODULES:
            return name
        name = name.rpartition(".")[0]
    return None


def imports_of(module: str) -> set[str]:
    path = MODULES[module]
    tree = ast.parse(path.read_text(encoding="utf-8"))
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1] + ([base] if base else []))
            names = [f"{base}.{a.name}" for a in node.names] + [base]
        else:
            continue
        for n in names:
            target = _resolve(n)
            if target and target != module:
                found.add(target)
    return found


GRAPH = {m: imports_of(m) for m in MODULES}


def floor_violations(graph: dict[str, set[str]]) -> list[str]:
    bad = []
    for m, targets in graph.items():
        top = m.split(".")[0]
        for t in targets:
            other = t.split(".")[0]
            if FLOOR[other] > FLOOR[top] or (FLOOR[other] == FLOOR[top] and other != top):
                bad.append(f"{m} -> {t}")
    return sorted(bad)


def cycles_of(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of two or more modules (Tarjan): each one is an import cycle."""
    index, low, stack, on_stack, cycles, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                cycles.append(sorted(comp))

    for v in graph:
        if v not in index:
            visit(v)
    return cycles


def test_no_module_imports_a_higher_floor_or_a_sibling_floor():
    bad = floor_violations(GRAPH)
    assert not bad, "imports against the floors:\n" + "\n".join(bad)


def test_no_import_cycle():
    assert not cycles_of(GRAPH), f"import cycles: {cycles_of(GRAPH)}"


def test_the_checks_find_planted_mistakes():
    planted = {m: set(t) for m, t in GRAPH.items()}
    planted["archs.gpt"].add("harness.run")  # upward
    planted["tasks.lm"].add("archs.gpt")  # sideways
    planted["harness.train"].add("harness.sweep")  # sweep -> run -> train -> sweep
    assert floor_violations(planted) == ["archs.gpt -> harness.run", "tasks.lm -> archs.gpt"]
    assert any({"harness.train", "harness.sweep"} <= set(c) for c in cycles_of(planted))


def test_the_public_api_floor_imports_nothing_of_the_project():
    for m, targets in GRAPH.items():
        if m.startswith("archbench"):
            assert all(t.startswith("archbench") for t in targets), (m, targets)


@pytest.mark.parametrize("module", sorted(MODULES))
def test_modules_stay_readable(module):
    lines = MODULES[module].read_text(encoding="utf-8").count("\n")
    assert lines <= MAX_MODULE_LINES, f"{module} has {lines} lines (> {MAX_MODULE_LINES}): split it by idea"


def test_engine_functions_stay_short():
    long = []
    for m, path in MODULES.items():
        if not m.startswith("harness"):
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                n = node.end_lineno - node.lineno + 1
                if n > MAX_HARNESS_FUNCTION_LINES:
                    long.append(f"{m}.{node.name}: {n} lines")
    assert not long, "functions over the limit:\n" + "\n".join(long)
