"""The package's shape (docs/architecture.md): no import cycles (imports inside functions count),
modules import each other's public names only, no module over 450 lines, no function over 80."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "probe"


def _modules() -> dict[str, Path]:
    out = {}
    for f in PACKAGE.rglob("*.py"):
        name = ".".join(f.relative_to(PACKAGE.parent).with_suffix("").parts)
        out[name.removesuffix(".__init__")] = f
    return out


def _imports(tree: ast.AST, mods: dict[str, Path]) -> list[tuple[str, list[str]]]:
    """``(imported module, names)`` of every probe import in ``tree``, at any depth."""
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0 and node.module.startswith("probe"):
            names = [a.name for a in node.names]
            out.append((node.module, names))
            out += [(f"{node.module}.{n}", []) for n in names if f"{node.module}.{n}" in mods]
        elif isinstance(node, ast.Import):
            out += [(a.name, []) for a in node.names if a.name.startswith("probe")]
    return out


def _graph() -> dict[str, set[str]]:
    mods = _modules()
    edges: dict[str, set[str]] = {m: set() for m in mods}
    for m, f in mods.items():
        for target, _ in _imports(ast.parse(f.read_text()), mods):
            if target in mods and target not in (m, "probe"):
                edges[m].add(target)
    return edges


def _cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan 1972)."""
    index, low, stack, on, out, counter = {}, {}, [], set(), [], [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in edges[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in edges:
        if v not in index:
            visit(v)
    return out


def test_cycle_finder_finds_a_planted_cycle():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_cycles():
    assert _cycles(_graph()) == []


def test_modules_import_public_names_only():
    mods = _modules()
    private = []
    for m, f in mods.items():
        for target, names in _imports(ast.parse(f.read_text()), mods):
            if target != m:
                private += [f"{m} imports {target}.{n}" for n in names if n.startswith("_") and not n.startswith("__")]
    assert private == []


def test_modules_and_functions_stay_small():
    big, long = [], []
    for m, f in _modules().items():
        text = f.read_text()
        if len(text.splitlines()) > 450:
            big.append(m)
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.end_lineno - node.lineno + 1 > 80:
                long.append(f"{m}.{node.name}")
    assert big == [] and long == []


def _kind_names() -> list[str]:
    from probe.tasks import TASK_KINDS

    return list(TASK_KINDS)


def test_no_module_outside_the_kind_packages_names_a_task_kind():
    """A task kind's ``task.type`` string (in code, comments or docstrings) appears only under
    ``probe/tasks/``: everything else asks the registry (:mod:`probe.tasks`) for a kind's facts.
    Covers every Python module of the package; the report's templates read a run's summary, not code."""
    import re

    tasks = PACKAGE / "tasks"
    names = _kind_names()
    assert len(names) >= 2
    # a name as a whole token: "--text-pair-column" (an option) does not name the kind "text-pair"
    pattern = re.compile("|".join(rf"(?<![\w-]){re.escape(n)}(?![\w-])" for n in names))
    found = [f"{f.relative_to(PACKAGE.parent)}:{i}: {m.group(0)}"
             for f in sorted(PACKAGE.rglob("*.py")) if tasks not in f.parents
             for i, line in enumerate(f.read_text().splitlines(), 1) for m in pattern.finditer(line)]
    assert found == []


def test_shared_packages_import_no_kind_package():
    """``data``, ``models``, ``analyses``, ``causal``, ``discovery``, ``representations`` and the engine hold
    what every kind shares: they may ask the registry (``probe.tasks``, ``probe.tasks.spec``) but import
    no kind's own modules (``probe.tasks.<kind>...``, ``probe.tasks.base``)."""
    mods = _modules()
    shared = ("probe.data", "probe.models", "probe.analyses", "probe.causal", "probe.discovery",
              "probe.representations", "probe.engine", "probe.config")
    allowed = {"probe.tasks", "probe.tasks.spec"}
    bad = [f"{m} imports {target}" for m, f in mods.items() if m.startswith(shared)
           for target, _ in _imports(ast.parse(f.read_text()), mods)
           if target.startswith("probe.tasks") and target not in allowed]
    assert bad == []
