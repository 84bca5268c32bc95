"""Whether an inbox takes a name, decided from the name alone (contract §5.1)."""

from __future__ import annotations

import fnmatch
import re

IGNORED_PREFIXES = (".", "~$")
IGNORED_SUFFIXES = (".part", ".partial", ".tmp", ".crdownload", ".download")
IGNORED_NAMES = frozenset({"thumbs.db", "desktop.ini"})


def _globs(patterns: tuple[str, ...]):
    """One compiled regex for case-insensitive globs (matched against the lowercased name), or None."""
    if not patterns:
        return None
    return re.compile("|".join(f"(?:{fnmatch.translate(p.lower())})" for p in patterns)).match


class NameFilter:
    """Whether an inbox takes a name, decided from the name alone; the patterns are compiled once."""

    def __init__(self, include: list[str], exclude: list[str]):
        self.include = _globs(tuple(include))
        self.exclude = _globs(tuple(exclude))

    def reason(self, name: str) -> str | None:
        """Why `name` is ignored, or None when it may be claimed."""
        if name.startswith(IGNORED_PREFIXES):
            return "hidden or temporary name"
        low = name.lower()
        if low.endswith(IGNORED_SUFFIXES):
            return "partial download or temporary suffix"
        if low in IGNORED_NAMES:
            return "system file"
        if self.exclude is not None and self.exclude(low):
            return "matches exclude"
        if self.include is None or not self.include(low):
            return "does not match include"
        return None
