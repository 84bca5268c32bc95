"""A delivery's checksums found, and its files checked against them, each file read once.

`plan` reads only the checksum files (small); `check` then reads every file of the
delivery once, computing xxh128 and whatever its checksums use, and says whether the
delivery is what its checksums promise. Nothing is recorded as verified anywhere: a
run that dies in the middle verifies again from the start.
"""

from __future__ import annotations

import enum
import functools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from . import history, lists
from .hashing import Digest, hash_file
from .lists import Expected, Malformed


class Mode(str, enum.Enum):
    """An inbox's `verify`: check what the delivery carries, also require something to check, or check nothing."""

    AUTO = "auto"
    REQUIRED = "required"
    OFF = "off"


@dataclass(frozen=True)
class InputFile:
    """One file of a delivery as the manifest's `inputs` lists it."""

    name: str
    size: int
    hashes: dict[str, str]
    verified_by: tuple[str, ...] = ()

    def as_manifest(self) -> dict[str, Any]:
        return {"name": self.name, "size": self.size, "hashes": self.hashes, "verified_by": list(self.verified_by)}


@dataclass(frozen=True)
class Plan:
    """What a delivery's checksums promise, and what is wrong with them before any media file is read."""

    expected: tuple[Expected, ...] = ()
    problems: tuple[str, ...] = ()

    def algorithms(self, name: str) -> set[str]:
        """The algorithms the checksums use for the file `name`: what reading it must compute."""
        return {e.algorithm for e in self.of(name)}

    def of(self, name: str) -> tuple[Expected, ...]:
        """What the checksums promise for the file `name`."""
        return self._by_name.get(name, ())

    @functools.cached_property
    def _by_name(self) -> dict[str, tuple[Expected, ...]]:
        found: dict[str, list[Expected]] = {}
        for e in self.expected:
            found.setdefault(e.name, []).append(e)
        return {name: tuple(es) for name, es in found.items()}


@dataclass(frozen=True)
class Verification:
    """What checking a delivery came to: its files (size, hashes, what verified each) and the first problem."""

    inputs: tuple[InputFile, ...] = ()
    problems: tuple[str, ...] = ()

    @property
    def reason(self) -> str | None:
        """The quarantine's reason: the first problem (and how many more), or None when the delivery is intact."""
        if not self.problems:
            return None
        more = len(self.problems) - 1
        return self.problems[0] + (f" (and {more} more)" if more else "")


def plan(root: Path, files: Sequence[str], mode: Mode = Mode.AUTO, main: str | None = None) -> Plan:
    """Read the delivery's checksum files (never a media file) and what they promise.

    Raises OSError when a checksum file cannot be read (the machine's problem, not the delivery's).
    """
    if mode is Mode.OFF:
        return Plan()
    members = frozenset(files)
    expected: list[Expected] = []
    problems: list[str] = []
    for name in sorted(members - {main}):  # the main file is what is delivered, never a list of the delivery
        try:
            expected += _read(root, name, members, main)
        except Malformed as exc:
            problems.append(f"checksum mismatch: {exc}")
    expected += _histories(root, members, problems)
    for e in expected:
        if e.outside:
            problems.append(f"incomplete: {e.name} listed in {e.source} is outside the delivery")
        elif e.name not in members:
            problems.append(f"incomplete: {e.name} listed in {e.source} is missing")
    return Plan(tuple(e for e in expected if not e.outside and e.name in members), tuple(dict.fromkeys(problems)))


def _histories(root: Path, members: frozenset[str], problems: list[str]) -> list[Expected]:
    """What the delivery's ASC MHL histories promise, once every one's chain (nested ones too) is intact."""
    folders = history.roots(members)
    try:
        broken = [p for folder in folders for p in history.chain_problems(root, folder, members)]
        problems += broken
        if broken:
            return []  # a history whose chain is broken promises nothing
        return [e for folder in history.outermost(folders) for e in history.expected(root, folder)]
    except Malformed as exc:
        problems.append(f"checksum mismatch: {exc}")
        return []


def _read(root: Path, name: str, members: frozenset[str], main: str | None) -> list[Expected]:
    path = PurePosixPath(name)
    if history.FOLDER in path.parts[:-1]:
        return []  # an ASC MHL history's own files: read as a history
    if lists.algorithm_of(path.name) is not None:
        return lists.parse_list(name, lists.read_text(root / name), members, main)
    if path.suffix.lower() == ".mhl":
        with open(root / name, "rb") as f:
            return lists.parse_legacy_mhl(name, f.read(lists.MAX_LIST))
    return []


def check(
    root: Path,
    files: Sequence[str],
    planned: Plan,
    *,
    mode: Mode = Mode.AUTO,
    main: str | None = None,
    known: Mapping[str, Digest] | None = None,
) -> Verification:
    """Read every file once (except those `known`: hashed while staged) and check it against `planned`.

    Raises OSError when a file cannot be read: the machine's fault (an I/O error, a share gone), never the delivery's.
    """
    known = known or {}
    inputs, problems = [], list(planned.problems)
    for name in sorted(files):
        digest = known.get(name) or hash_file(root / name, planned.algorithms(name) | _extra(name, main))
        sources = []
        for e in planned.of(name):
            problem = _compare(e, digest)
            problems += [problem] if problem else []
            sources += [] if problem or e.source in sources else [e.source]
        inputs.append(InputFile(name, digest.size, digest.hashes, tuple(sources)))
    if mode is Mode.REQUIRED:
        problems += _uncovered(inputs, main)
    return Verification(tuple(inputs), tuple(problems))


def _extra(name: str, main: str | None) -> set[str]:
    return {"sha256"} if name == main else set()  # the manifest's `input.sha256` (contract §6), in the same read


def _compare(e: Expected, digest: Digest) -> str | None:
    if e.size is not None and e.size != digest.size:
        return f"checksum mismatch: {e.name} size expected {e.size}, got {digest.size}"
    actual = digest.hashes.get(e.algorithm)
    if actual != e.digest:
        return f"checksum mismatch: {e.name} {e.algorithm} expected {e.digest}, got {actual}"
    return None


def _uncovered(inputs: list[InputFile], main: str | None) -> list[str]:
    """Under `verify: required`: the main file, or (a folder) every file but the checksum files, must be verified."""
    needed = [i for i in inputs if (i.name == main if main is not None else not lists.is_checksum(i.name))]
    return [f"no checksum: {i.name}" for i in needed if not i.verified_by]
