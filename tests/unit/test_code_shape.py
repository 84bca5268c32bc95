"""The package's own shape: no file over ~350 lines, no function over ~45 (issue 20, STYLE.md "Shape")."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "daemon" / "chute"
MAX_FILE_LINES = 350
MAX_FUNCTION_LINES = 45


def _sources() -> list[Path]:
    """Every Python file of the package, subpackages included."""
    return sorted(PACKAGE.rglob("*.py"))


def _functions(tree: ast.AST) -> Iterator[tuple[str, ast.FunctionDef | ast.AsyncFunctionDef]]:
    """Every function and method in a module, with its dotted name inside the module."""

    def walk(node: ast.AST, prefix: str) -> Iterator[tuple[str, ast.FunctionDef | ast.AsyncFunctionDef]]:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef):
                yield f"{prefix}{child.name}", child
                yield from walk(child, f"{prefix}{child.name}.")
            elif isinstance(child, ast.ClassDef):
                yield from walk(child, f"{prefix}{child.name}.")
            else:
                yield from walk(child, prefix)

    yield from walk(tree, "")


def _length(node: ast.FunctionDef | ast.AsyncFunctionDef) -> int:
    """A function's lines from its `def` to its last line; decorators are not counted."""
    assert node.end_lineno is not None
    return node.end_lineno - node.lineno + 1


def test_the_package_is_found() -> None:
    # A wrong PACKAGE path would make the shape test pass on nothing.
    assert (PACKAGE / "service.py").is_file()
    assert len(_sources()) > 20


def test_no_file_is_over_350_lines_and_no_function_over_45() -> None:
    too_long: list[str] = []
    for path in _sources():
        text = path.read_text(encoding="utf-8")
        name = path.relative_to(PACKAGE.parent).as_posix()
        lines = len(text.splitlines())
        if lines > MAX_FILE_LINES:
            too_long.append(f"{name}: {lines} lines (file, at most {MAX_FILE_LINES})")
        for qualname, node in _functions(ast.parse(text, filename=str(path))):
            length = _length(node)
            if length > MAX_FUNCTION_LINES:
                too_long.append(
                    f"{name}:{node.lineno} {qualname}: {length} lines (function, at most {MAX_FUNCTION_LINES})"
                )
    assert not too_long, "split these by responsibility (STYLE.md, Shape):\n" + "\n".join(too_long)
