"""The package's shape: no import cycle, not even a type-only or function-level one, and
no module over 450 lines. Every ``import`` statement in ``quantcore/`` counts, wherever
it stands (``if TYPE_CHECKING:``, inside a function)."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "quantcore"
MAX_LINES = 450


def _modules() -> dict[str, tuple[Path, bool]]:
    """Dotted name relative to ``quantcore`` (the package itself is ``""``) → file, is-package."""
    found = {}
    for path in PACKAGE.rglob("*.py"):
        parts = list(path.relative_to(PACKAGE).with_suffix("").parts)
        package = parts[-1] == "__init__"
        found[".".join(parts[:-1] if package else parts)] = (path, package)
    return found


def _graph() -> dict[str, set[str]]:
    """Module → the package modules it imports (``from a import b``: ``a.b`` if a module)."""
    modules, graph = _modules(), {}

    def known(dotted: str) -> str | None:
        """The package module ``dotted`` is, or is in (None outside the package)."""
        name = dotted.removeprefix("quantcore").removeprefix(".")
        while name not in modules and name:
            name = name.rpartition(".")[0]
        return name if dotted.partition(".")[0] == "quantcore" else None

    for name, (path, package) in modules.items():
        here = ["quantcore", *filter(None, name.split("."))][: None if package else -1]
        deps: set[str | None] = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                deps.update(known(alias.name) for alias in node.names)
            elif isinstance(node, ast.ImportFrom):
                base = ".".join(here[: len(here) - node.level + 1]) if node.level else ""
                source = ".".join(filter(None, [base, node.module]))
                for alias in node.names:
                    sub = f"{source}.{alias.name}".removeprefix("quantcore.")
                    deps.add(sub if sub in modules else known(source))
        graph[name] = {d for d in deps if d is not None and d != name}
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[set[str]]:
    """The strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[set[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for nxt in graph[node]:
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = set()
            while not component or node not in component:
                component.add(stack.pop())
            if len(component) > 1:
                found.append(component)

    for node in graph:
        if node not in index:
            visit(node)
    return found


def test_the_graph_sees_every_kind_of_import() -> None:
    graph = _graph()
    assert "config_schema" in graph["config"]  # top level
    assert "feeds.registry" in graph["config"]  # inside a function
    assert "config_schema" in graph["templates"]  # under TYPE_CHECKING
    assert "sim.klines" in graph["sim.market"]  # relative
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [{"a", "b", "c"}]


def test_no_import_cycle() -> None:
    assert [sorted(cycle) for cycle in _cycles(_graph())] == []


def test_no_module_over_450_lines() -> None:
    long = {
        str(path.relative_to(PACKAGE)): n
        for path in PACKAGE.rglob("*.py")
        if (n := len(path.read_text(encoding="utf-8").splitlines())) > MAX_LINES
    }
    assert long == {}
