"""The package layout rules of GitHub issue 14, read from the source with ``ast`` so they cannot silently regress.

- matplotlib is imported only in ``pptune/draw/``, at module level or inside a function (compute in
  ``pptune/charts/``, draw in ``pptune/draw/``), and the series in ``pptune/charts/`` never import the drawing;
- only the command layer (``pptune/cli.py``, ``pptune/__main__.py``, ``pptune/commands/``) imports the command layer;
- pptune's module-level imports form no cycle.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1] / "pptune"
DRAW_PACKAGE = "pptune.draw"
COMMAND_LAYER = ("pptune.cli", "pptune.__main__", "pptune.commands")
# Test harnesses that drive the CLI as a user does (e.g. pptune.testing.plan_pause runs `pptune plan` and pauses it
# at a trial); the library itself never imports the command layer.
CLI_DRIVERS = ("pptune.testing",)


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {_module_name(p): p for p in sorted(ROOT.rglob("*.py"))}


def _within(name: str, package: str) -> bool:
    return name == package or name.startswith(package + ".")


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or \
        (isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _imports(body: list[ast.stmt], *, module_level: bool) -> Iterator[ast.Import | ast.ImportFrom]:
    """Import statements of ``body``: at import time only (``module_level``) or anywhere, functions included."""
    for node in body:
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            yield node
        elif isinstance(node, ast.If) and module_level and _is_type_checking(node):
            yield from _imports(node.orelse, module_level=module_level)
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)) and module_level:
            continue
        else:
            for field in ("body", "orelse", "finalbody", "handlers", "cases"):
                children = getattr(node, field, None)
                if isinstance(children, list):
                    yield from _imports([c for c in children if isinstance(c, ast.AST)], module_level=module_level)


def _targets(module: str, node: ast.Import | ast.ImportFrom) -> list[str]:
    """Absolute names an import statement in ``module`` loads (``from a import b``: ``a.b`` when it is a module)."""
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    base = node.module or ""
    if node.level:
        package = module if MODULES[module].name == "__init__.py" else module.rpartition(".")[0]
        for _ in range(node.level - 1):
            package = package.rpartition(".")[0]
        base = f"{package}.{base}" if base else package
    return [base, *(f"{base}.{a.name}" for a in node.names if f"{base}.{a.name}" in MODULES)]


def _parsed(module: str) -> ast.Module:
    return ast.parse(MODULES[module].read_text(), filename=str(MODULES[module]))


def _imported(module: str, *, module_level: bool) -> list[tuple[int, str]]:
    return [(node.lineno, name) for node in _imports(_parsed(module).body, module_level=module_level)
            for name in _targets(module, node)]


def test_only_the_draw_package_imports_matplotlib() -> None:
    assert DRAW_PACKAGE in MODULES
    offenders = [f"{MODULES[m].relative_to(ROOT.parent)}:{line}" for m in MODULES if not _within(m, DRAW_PACKAGE)
                 for line, name in _imported(m, module_level=False) if _within(name, "matplotlib")]
    assert offenders == [], "matplotlib belongs in pptune/draw/ (compute the series in pptune/charts/)"


def test_the_series_do_not_import_the_drawing() -> None:
    offenders = [f"{MODULES[m].relative_to(ROOT.parent)}:{line}" for m in MODULES if _within(m, "pptune.charts")
                 for line, name in _imported(m, module_level=False) if _within(name, DRAW_PACKAGE)]
    assert offenders == []


def test_only_the_command_layer_imports_the_command_layer() -> None:
    def layer(name: str) -> bool:
        return any(_within(name, c) for c in COMMAND_LAYER)

    offenders = [f"{MODULES[m].relative_to(ROOT.parent)}:{line} imports {name}" for m in MODULES
                 if not layer(m) and not any(_within(m, d) for d in CLI_DRIVERS)
                 for line, name in _imported(m, module_level=False) if layer(name)]
    assert offenders == [], "move what the library needs out of pptune/commands/ into a library module"


def _graph() -> dict[str, set[str]]:
    """Module -> the pptune modules its module-level imports run (a package's ``__init__`` included)."""
    graph: dict[str, set[str]] = {}
    for module in MODULES:
        deps = set()
        for _, name in _imported(module, module_level=True):
            parts = name.split(".")
            deps.update(p for p in (".".join(parts[:k]) for k in range(1, len(parts) + 1)) if p in MODULES)
        graph[module] = deps - {module} - {p for p in deps if _within(module, p)}  # a package above runs first
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_module_level_imports_have_no_cycle() -> None:
    assert _cycles(_graph()) == []


def test_the_cycle_finder_finds_one() -> None:
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
