"""The globs of jobs over packages (contract §12): `match` and `for_each` patterns, checked and matched."""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Iterable
from functools import cache

Patterns = tuple[str, ...]


def patterns(value: str | list[str] | None) -> Patterns:
    """A `match` or `for_each` value as a tuple of patterns: one string, or a list of them (any may match)."""
    if value is None:
        return ()
    return (value,) if isinstance(value, str) else tuple(value)


def problem(pattern: str) -> str | None:
    """Why `pattern` is not a valid glob over a delivery's relative paths, or None."""
    if not pattern.strip():
        return "is an empty pattern"
    if pattern.startswith("/") or "\\" in pattern or "\x00" in pattern:
        return f"{pattern!r} must be a relative pattern (no leading '/', no '\\' or NUL)"
    if ".." in pattern.split("/"):
        return f"{pattern!r} must not climb out of the delivery ('..')"
    if "{" in pattern or "}" in pattern:
        return f"{pattern!r}: braces are not globs; write several patterns as a list, e.g. ['*.mov', '*.mp4']"
    if _unclosed(pattern):
        return f"{pattern!r} has a '[' without its ']'"
    return None


def _unclosed(pattern: str) -> bool:
    depth = False
    for ch in pattern:
        if ch == "[":
            depth = True
        elif ch == "]":
            depth = False
    return depth


def shown(pats: Patterns) -> str:
    """Patterns as a reason quotes them: `'*.srt'`, or `'*.mov', '*.mp4'`."""
    return ", ".join(repr(p) for p in pats)


@cache
def _regex(pattern: str) -> re.Pattern[str]:
    return re.compile(fnmatch.translate(pattern.lower()))


def matches(pats: Patterns, rel: str) -> bool:
    """Whether the delivery's file `rel` (a relative posix path) matches any pattern, case-insensitively.

    A pattern without '/' is matched against the file's own name, wherever it lies in the
    delivery; a pattern with '/' against the whole relative path.
    """
    name = rel.rsplit("/", 1)[-1].lower()
    low = rel.lower()
    return any(_regex(p).match(low if "/" in p else name) for p in pats)


def select(pats: Patterns, files: Iterable[str]) -> list[str]:
    """The files matching any of `pats`, in name order; hidden files and folders (a leading dot) never match."""
    return sorted(f for f in files if not any(part.startswith(".") for part in f.split("/")) and matches(pats, f))
