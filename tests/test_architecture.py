"""The architecture is checked, not only drawn: the layers (import-linter's contracts in
pyproject.toml), no import cycle anywhere, imports inside functions only where a heavy optional
dependency is deferred on purpose (with a comment saying so), and the type check (mypy) of the
bottom layer and the engines."""
from __future__ import annotations

import ast
import subprocess
import sys

import grimp

from tests.conftest import ROOT

PACKAGES = ("app", "engines", "ui")


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=600)


def test_the_layers_hold():
    """app.cli > ui > app.compose > app.chat > engines | app.storage > app.accounting >
    app.config > app.domain, and nothing below the front ends imports Qt."""
    proc = run("-c", "import sys; from importlinter.cli import lint_imports; "
                     "sys.exit(lint_imports())")
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    assert "2 kept, 0 broken" in proc.stdout


def import_cycles(graph) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []
    counter = [0]

    def visit(start: str) -> None:  # iterative: the graph is deep enough for recursion limits
        work = [(start, iter(sorted(graph.find_modules_directly_imported_by(start))))]
        index[start] = low[start] = counter[0]
        counter[0] += 1
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            for child in children:
                if child not in graph.modules:
                    continue
                if child not in index:
                    index[child] = low[child] = counter[0]
                    counter[0] += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph.find_modules_directly_imported_by(
                        child)))))
                    break
                if child in on_stack:
                    low[node] = min(low[node], index[child])
            else:
                work.pop()
                if work:
                    parent = work[-1][0]
                    low[parent] = min(low[parent], low[node])
                if low[node] == index[node]:
                    component = []
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        component.append(member)
                        if member == node:
                            break
                    if len(component) > 1:
                        cycles.append(sorted(component))

    for module in sorted(graph.modules):
        if module not in index:
            visit(module)
    return cycles


def test_there_is_no_import_cycle():
    # every import counts: module level, inside functions, and under TYPE_CHECKING
    graph = grimp.build_graph(*PACKAGES, cache_dir=None)
    assert len(graph.modules) > 90  # the graph really holds the three packages
    assert import_cycles(graph) == []


def test_the_cycle_finder_finds_a_cycle():
    class Graph:  # a -> b -> c -> a, and d alone
        edges = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
        modules = set(edges)

        def find_modules_directly_imported_by(self, module):
            return self.edges[module]

    assert import_cycles(Graph()) == [["a", "b", "c"]]


def test_imports_inside_functions_are_deliberate_deferrals():
    """Every import inside a function says why it waits (a comment on its line or the line
    above): a heavy or optional dependency (llama_cpp, jsonschema, Qt from the CLI, …)."""
    silent = []
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            source = path.read_text()
            lines = source.splitlines()
            for node in ast.walk(ast.parse(source)):
                if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                    continue
                for inner in ast.walk(node):
                    if isinstance(inner, (ast.Import, ast.ImportFrom)):
                        here, above = lines[inner.lineno - 1], lines[inner.lineno - 2]
                        if "#" not in here and not above.strip().startswith("#"):
                            silent.append(f"{path.relative_to(ROOT)}:{inner.lineno}: "
                                          f"{here.strip()}")
    assert silent == []


def test_nothing_waits_with_qtest_qwait():
    """PySide6 keeps the GIL while ``QTest.qWait`` waits (6.11: a Python thread beside it ran
    1 loop of 1 ms in a second, ~850 beside ``QEventLoop.exec``): every other thread of the
    window (the outbox sender, the stream worker, the model loader) stands still meanwhile. A
    driver that waited so saw an outbox item take 25-40 s instead of ~1 s, its sender seemingly
    stuck on SQLite's lock. Wait on the event loop instead: ``qtbot.wait``/``waitUntil``/
    ``waitSignal``, or a ``QEventLoop`` and a ``QTimer``."""
    waits = []
    for folder in (*PACKAGES, "tests", "tools", "bench"):
        for path in sorted((ROOT / folder).rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.Attribute) and node.attr == "qWait":
                    waits.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    assert waits == []


def test_the_domain_and_the_engines_type_check():
    proc = run("-m", "mypy")  # its files and settings: [tool.mypy] in pyproject.toml
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    assert "Success: no issues found" in proc.stdout
