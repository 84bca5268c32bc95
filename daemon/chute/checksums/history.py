"""ASC MHL histories a delivery carries (`ascmhl/` folders), read with the reference `ascmhl` library.

The chain is checked first, as the reference tool does when it loads a history: each
generation file the chain lists must be there with the hash the chain records (a
generation edited or removed after the fact breaks the chain of custody). Then each
file's latest recorded hashes are what the delivery promises.
"""

from __future__ import annotations

import contextlib
import io
import posixpath
from collections.abc import Iterator
from pathlib import Path, PurePosixPath
from typing import Any

from .lists import Expected, Malformed, resolve

FOLDER = "ascmhl"
CHAIN = "ascmhl_chain.xml"
SOURCE = "ascmhl"  # what `verified_by` says of a file an ASC MHL history covers


def roots(files: frozenset[str]) -> list[str]:
    """The folders (relative to the root, `.` for the root) holding an ASC MHL history, nested ones too."""
    return sorted(
        posixpath.dirname(posixpath.dirname(f)) or "."
        for f in files
        if PurePosixPath(f).name == CHAIN and PurePosixPath(f).parent.name == FOLDER
    )


def outermost(folders: list[str]) -> list[str]:
    """Those of `folders` inside no other: loading one loads the histories nested in it."""
    return [r for r in folders if not any(r != o and (o == "." or r.startswith(o + "/")) for o in folders)]


def chain_problems(root: Path, folder: str, files: frozenset[str]) -> list[str]:
    """What breaks the chain of the history in `folder` (relative to `root`): reasons, empty when intact."""
    from ascmhl import chain_xml_parser, hasher  # its lxml and click only when a delivery has a history

    history = posixpath.normpath(posixpath.join(folder, FOLDER))
    chain_name = posixpath.join(history, CHAIN)
    try:
        with _quiet():
            chain = chain_xml_parser.parse(str(root / chain_name))
    except OSError:
        raise
    except Exception as exc:  # lxml's syntax errors and the library's own: the file is not a chain
        raise Malformed(f"{chain_name}: not an ASC MHL chain ({exc})") from exc
    problems = []
    for generation in chain.generations:
        name = resolve(chain_name, str(generation.ascmhl_filename or ""))
        if name is None or name not in files:
            problems.append(f"incomplete: {name or generation.ascmhl_filename} listed in {chain_name} is missing")
            continue
        with _quiet():
            actual = hasher.hash_file(str(root / name), generation.hash_format)
        if actual != generation.hash_string:
            problems.append(
                f"checksum mismatch: {name} {generation.hash_format} expected {generation.hash_string}, got {actual}"
            )
    return problems


def expected(root: Path, folder: str) -> list[Expected]:
    """Every file's latest hashes in the history of `folder` and the histories nested in it."""
    from ascmhl.history import MHLHistory

    try:
        with _quiet():
            top = MHLHistory.load_from_path(str(root / folder))
            histories = list(MHLHistory.walk_child_histories(top))
    except OSError:
        raise
    except Exception as exc:
        raise Malformed(f"{posixpath.join(folder, FOLDER)}: not an ASC MHL history ({exc})") from exc
    latest: dict[tuple[str, str], Expected] = {}
    for history in histories:
        base = posixpath.relpath(Path(history.get_root_path()).as_posix(), root.as_posix())
        for hash_list in history.hash_lists:  # in generation order: a later generation's hash wins
            for media_hash in hash_list.media_hashes:
                if not media_hash.is_directory:
                    for e in _entries(base, media_hash):
                        latest[(e.name, e.algorithm)] = e
    return list(latest.values())


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """The reference library's own messages (click.echo to stderr) kept out of chute's log of JSON lines.

    What it finds wrong reaches chute as exceptions and values; only its commentary is dropped.
    """
    with contextlib.redirect_stderr(io.StringIO()):
        yield


def _entries(base: str, media_hash: Any) -> list[Expected]:
    source = posixpath.join(base, FOLDER) if base != "." else FOLDER
    written = str(media_hash.path or "")
    name = resolve(posixpath.join(base, "x"), written)  # media paths are relative to the history's folder
    found = []
    for entry in media_hash.hash_entries:
        if entry.action == "failed" or entry.hash_format == "c4" or not entry.hash_string:
            continue  # a failed verification records the bad hash; c4 is not one chute computes
        size = int(media_hash.file_size) if media_hash.file_size is not None else None
        digest = str(entry.hash_string).lower()
        found.append(Expected(name or written, entry.hash_format, digest, source, size, outside=name is None))
    return found
