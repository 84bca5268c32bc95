"""The package's layers, read from its source: the run side never imports the daemon side, and no import cycle.

Every import counts, wherever it is written (in a function, under TYPE_CHECKING): one made late
to dodge a cycle is still the cycle.
"""

from __future__ import annotations

import ast
from pathlib import Path

import chute

PACKAGE = Path(chute.__file__).parent
# What runs in a pool worker, a Dask worker, the launcher, a module's process or `chute submit`.
RUN_SIDE = {
    "worker",
    "runner",
    "pipeline",
    "entry",
    "launcher",
    "dask_worker",
    "submit",
    "staging",
    "delivery",
    "publish",
    "progress",
}
# What runs only in the daemon.
DAEMON_SIDE = {"service", "intake", "queue", "dispatch", "recovery", "executor", "dask_executor"}


def _name(path: Path) -> str:
    parts = path.relative_to(PACKAGE).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _resolve(name: str) -> str | None:
    """The package module `name` (relative to chute) is, or the nearest package module above it."""
    while name:
        parts = name.split(".")
        if (PACKAGE.joinpath(*parts).with_suffix(".py")).is_file() or (
            PACKAGE.joinpath(*parts) / "__init__.py"
        ).is_file():
            return name
        name = name.rpartition(".")[0]
    return None


def _imports(path: Path) -> set[str]:
    """The package modules that the file at `path` imports (chute's own, named relative to chute)."""
    me = _name(path)
    package = me if path.name == "__init__.py" else me.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names = [a.name.removeprefix("chute.") for a in node.names if a.name.startswith("chute.")]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".") if package else []
                base = base[: len(base) - (node.level - 1)]
                module = ".".join([*base, *([node.module] if node.module else [])])
            elif node.module and (node.module == "chute" or node.module.startswith("chute.")):
                module = node.module.removeprefix("chute").lstrip(".")
            else:
                continue
            names = [f"{module}.{a.name}".lstrip(".") for a in node.names]
        else:
            continue
        found.update(m for m in map(_resolve, names) if m is not None and m != me)
    return found


def _graph() -> dict[str, set[str]]:
    return {_name(path): _imports(path) for path in sorted(PACKAGE.rglob("*.py")) if _name(path)}


def _top(module: str) -> str:
    return module.split(".")[0]


def _reached(graph: dict[str, set[str]], start: str) -> dict[str, list[str]]:
    """Every module `start` imports, directly or not, each with one chain of imports that reaches it."""
    chains = {start: [start]}
    todo = [start]
    while todo:
        module = todo.pop()
        for imported in sorted(graph.get(module, ())):
            if imported not in chains:
                chains[imported] = [*chains[module], imported]
                todo.append(imported)
    return chains


def test_the_run_side_imports_nothing_of_the_daemon_side():
    graph = _graph()
    assert {_top(m) for m in graph} >= RUN_SIDE | DAEMON_SIDE, "a module of the layers is renamed: update this test"
    wrong = []
    for module in sorted(m for m in graph if _top(m) in RUN_SIDE):
        for reached, chain in _reached(graph, module).items():
            if _top(reached) in DAEMON_SIDE:
                wrong.append(" -> ".join(chain))
    assert wrong == []


def test_the_package_has_no_import_cycle():
    graph = _graph()
    cycles = []
    for module in sorted(graph):
        for imported in sorted(graph[module]):
            back = _reached(graph, imported).get(module)
            if back is not None:
                cycles.append(" -> ".join([module, *back]))
    assert cycles == []


def test_the_import_reader_sees_the_imports_that_count():
    """The reader itself: a relative, an absolute, a late and a package's import are all found."""
    graph = _graph()
    assert {"launcher.warm", "entry", "runner"} <= graph["worker"]  # relative, at the top
    assert "launcher.client" in graph["launcher"]  # a package's __init__, relative
    assert {"launcher.child", "launcher.server"} <= graph["launcher.__main__"]  # absolute
    assert "apprise_urls" in graph["config"]  # inside a function


def test_nothing_of_the_daemon_imports_the_web_page():
    """`chute web` is a process of its own: only the command line reaches chute.web (issue 23)."""
    graph = _graph()
    assert "web.app" in graph, "chute.web is renamed: update this test"
    wrong = []
    for module in sorted(m for m in graph if _top(m) not in ("web", "cli")):
        for reached, chain in _reached(graph, module).items():
            if _top(reached) == "web":
                wrong.append(" -> ".join(chain))
    assert wrong == []
