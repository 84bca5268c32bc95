"""The run side's view of a delivery (contract §12): its unit, where its files are, its main file, its files."""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass
from pathlib import Path

from .run import RunSpec

DELIVERY = ".delivery"  # a claim's marker of a delivery of several files: {"unit": ..., "main": ..., "members": [...]}


@dataclass(frozen=True)
class Package:
    """One delivery as claimed: its unit, the folder its files are in, its main file and every regular file."""

    unit: str  # file | stem | folder
    root: Path  # the claim folder (file, stem) or the claimed folder itself (folder)
    main: str | None  # the main file, relative to root (file, stem); None for a folder
    files: tuple[str, ...]  # every regular file, relative posix paths under root, sorted (main included; no markers)


def of(spec: RunSpec) -> Package:
    """The delivery `spec` runs on, read from its claim (listing or walking; a symlink is never followed)."""
    if spec.unit == "folder":
        return Package("folder", spec.input_path, None, walk(spec.input_path))
    root = spec.input_path.parent
    if spec.unit == "stem":
        return Package("stem", root, spec.input_name, tuple(sorted(_top_files(root))))
    return Package("file", root, spec.input_name, (spec.input_name,))


def _top_files(root: Path) -> list[str]:
    """The regular files at the top of a claim folder, markers (dot names) left out."""
    names = []
    with os.scandir(root) as it:
        for e in it:
            if not e.name.startswith(".") and e.is_file(follow_symlinks=False):
                names.append(e.name)
    return names


def walk(root: Path) -> tuple[str, ...]:
    """Every regular file beneath `root`, as sorted relative posix paths; symlinks and specials are not members."""
    return tuple(sorted(rel for rel, mode in _entries(root) if stat.S_ISREG(mode)))


def links(root: Path) -> list[str]:
    """The symlinks beneath `root` (relative posix paths): a folder delivery holding one is refused whole."""
    return sorted(rel for rel, mode in _entries(root) if stat.S_ISLNK(mode))


def _entries(root: Path) -> list[tuple[str, int]]:
    """Every entry beneath `root` with its own mode (lstat: a symlink is seen, never followed), depth first."""
    found: list[tuple[str, int]] = []
    stack = [(root, "")]
    while stack:
        folder, prefix = stack.pop()
        with os.scandir(folder) as it:
            for e in it:
                rel, mode = prefix + e.name, e.stat(follow_symlinks=False).st_mode
                found.append((rel, mode))
                if stat.S_ISDIR(mode):
                    stack.append((Path(e.path), rel + "/"))
    return found
