"""The import graph of the ``gateway`` package has no cycle beyond the known ones listed below.

The graph is read from the source (AST), not by importing: an edge A -> B for every import of a
``gateway`` module that runs when A is imported (module level, including ``if``/``try``/``with`` blocks
and class bodies; not function bodies, not ``if TYPE_CHECKING:``). ``from P import name`` points at
``P.name`` when that is a module, else at ``P``; importing ``P.Q`` also runs the ``__init__`` of ``P``,
so that is an edge too, except when ``P`` is a package containing A (it is already being imported
then, the usual and harmless "package ``__init__`` re-exports its submodules" pattern).

A cycle is reported as its strongly connected component (every module of one tangle). The test fails
when a new one appears, and when a known one disappears (then strike it from ``KNOWN_CYCLES``).
"""
from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
PACKAGE = "gateway"

KNOWN_CYCLES: dict[frozenset[str], str] = {
    # None left. The last one, gateway.domain.events <-> gateway.personal.events (events imported the
    # personal event module at its bottom so decode() knew its types; personal.events imported the
    # DomainEvent base back), went with issue 11 step 4: gateway.domain.mapper imports both and registers.
}


def module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _run_at_import(body: list[ast.stmt]) -> Iterator[ast.stmt]:
    """The statements of ``body`` that run when the module is imported."""
    for stmt in body:
        if isinstance(stmt, (ast.FunctionDef, ast.AsyncFunctionDef)):
            continue
        if isinstance(stmt, ast.If):
            if not _is_type_checking(stmt.test):
                yield from _run_at_import(stmt.body)
            yield from _run_at_import(stmt.orelse)
        elif isinstance(stmt, ast.Try):
            for block in (stmt.body, stmt.orelse, stmt.finalbody, *(h.body for h in stmt.handlers)):
                yield from _run_at_import(block)
        elif isinstance(stmt, (ast.ClassDef, ast.With)):
            yield from _run_at_import(stmt.body)
        else:
            yield stmt


def _ancestors(module: str) -> set[str]:
    parts = module.split(".")
    return {".".join(parts[:i]) for i in range(1, len(parts))}


def import_graph(root: Path = REPO) -> dict[str, set[str]]:
    """Module -> the gateway modules its import runs, for the package under ``root``."""
    paths = {module_name(p, root): p for p in (root / PACKAGE).rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for module, path in paths.items():
        is_package = path.name == "__init__.py"
        named: list[str] = []
        for stmt in _run_at_import(ast.parse(path.read_text(), str(path)).body):
            if isinstance(stmt, ast.Import):
                named += [alias.name for alias in stmt.names]
            elif isinstance(stmt, ast.ImportFrom):
                if stmt.level:  # relative: from the package of this module, level - 1 up
                    base = module.split(".") if is_package else module.split(".")[:-1]
                    base = base[: len(base) - (stmt.level - 1)]
                    source = ".".join([*base, *([stmt.module] if stmt.module else [])])
                else:
                    source = stmt.module or ""
                for alias in stmt.names:  # "from P import Q": Q may be a submodule
                    named.append(f"{source}.{alias.name}" if f"{source}.{alias.name}" in paths else source)
        targets: set[str] = set()
        for name in named:
            if not name.startswith(PACKAGE + "."):
                continue
            while name not in paths and "." in name:
                name = name.rsplit(".", 1)[0]
            targets |= {t for t in {name} | _ancestors(name) if t in paths and t != PACKAGE}
        graph[module] = targets - {module} - _ancestors(module)
    return graph


def cycles(graph: dict[str, set[str]]) -> set[frozenset[str]]:
    """The strongly connected components of more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: set[frozenset[str]] = set()
    for root in sorted(graph):
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, successors = work[-1]
            for succ in successors:
                if succ not in index:
                    index[succ] = low[succ] = len(index)
                    stack.append(succ)
                    on_stack.add(succ)
                    work.append((succ, iter(sorted(graph[succ]))))
                    break
                if succ in on_stack:
                    low[node] = min(low[node], index[succ])
            else:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[node])
                if low[node] == index[node]:
                    component = set()
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        component.add(member)
                        if member == node:
                            break
                    if len(component) > 1:
                        found.add(frozenset(component))
    return found


def describe(component: frozenset[str], graph: dict[str, set[str]]) -> str:
    return "; ".join(f"{m} -> {', '.join(sorted(graph[m] & component))}" for m in sorted(component))


def test_the_gateway_package_has_no_import_cycle_but_the_known_ones() -> None:
    graph = import_graph()
    found = cycles(graph)
    new = [describe(c, graph) for c in found - set(KNOWN_CYCLES)]
    gone = [sorted(c) for c in set(KNOWN_CYCLES) - found]
    assert not new, f"new import cycles: {new}"
    assert not gone, f"known import cycles that are gone (strike them from KNOWN_CYCLES): {gone}"


def test_event_modules_import_no_feature_and_the_mapper_imports_every_event_module() -> None:
    graph = import_graph()
    assert not {m for m in graph["gateway.domain.events"] if m.startswith("gateway.personal")}
    assert {"gateway.domain.events", "gateway.personal.events"} <= graph["gateway.domain.mapper"]
    assert "gateway.domain.mapper" not in graph["gateway.personal.events"]


@pytest.mark.parametrize(
    ("graph", "expected"),
    [
        ({"a": {"b"}, "b": {"c"}, "c": set()}, set()),
        ({"a": {"b"}, "b": {"a"}, "c": {"a"}}, {frozenset("ab")}),
        (
            {"a": {"b"}, "b": {"c"}, "c": {"a", "d"}, "d": {"e"}, "e": {"d"}},
            {frozenset("abc"), frozenset("de")},
        ),
    ],
)
def test_cycles_finds_every_tangle(graph: dict[str, set[str]], expected: set[frozenset[str]]) -> None:
    assert cycles(graph) == expected


def test_the_graph_sees_the_old_circle(tmp_path: Path) -> None:
    # The reader itself, on a miniature package shaped like the circle this step removed.
    (tmp_path / PACKAGE / "personal").mkdir(parents=True)
    (tmp_path / PACKAGE / "__init__.py").write_text("")
    (tmp_path / PACKAGE / "personal" / "__init__.py").write_text("")
    (tmp_path / PACKAGE / "events.py").write_text(
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from gateway import mapper\n"
        "class DomainEvent: ...\nimport gateway.personal.events  # noqa\n"
    )
    (tmp_path / PACKAGE / "personal" / "events.py").write_text("from gateway.events import DomainEvent\n")
    (tmp_path / PACKAGE / "mapper.py").write_text("def f():\n    from gateway import events\n")
    graph = import_graph(tmp_path)
    assert graph["gateway.mapper"] == set()  # function bodies do not count
    assert graph["gateway.events"] == {"gateway.personal", "gateway.personal.events"}
    assert cycles(graph) == {frozenset({"gateway.events", "gateway.personal.events"})}
