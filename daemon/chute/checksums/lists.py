"""The checksums a delivery carries in text: sidecars, md5sum-style lists and legacy MHL (v1.1) files.

Every name a list gives is untrusted: it is resolved against the list's own folder and
refused when it is absolute or leaves the delivery; nothing is ever opened by it here.
"""

from __future__ import annotations

import posixpath
import re
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

# A list's algorithm, by its extension (`clip.mov.md5`, `card.sha256`) or by its whole name (`MD5SUMS`).
EXTENSIONS = {
    ".md5": "md5",
    ".sha1": "sha1",
    ".sha256": "sha256",
    ".xxh64": "xxh64",
    ".xxh3": "xxh3",
    ".xxh128": "xxh128",
}
SUMS = {"md5sums": "md5", "sha1sums": "sha1", "sha256sums": "sha256", "xxh64sums": "xxh64", "xxh128sums": "xxh128"}
SUMS |= {"xxh3sums": "xxh3"}
LENGTHS = {"md5": 32, "sha1": 40, "sha256": 64, "xxh64": 16, "xxh128": 32, "xxh32": 8, "xxh3": 16}
# BSD-style tags (`md5sum --tag`, `xxhsum --tag`): `MD5 (name) = hash`.
TAGS = {
    "MD5": "md5",
    "SHA1": "sha1",
    "SHA256": "sha256",
    "XXH32": "xxh32",
    "XXH64": "xxh64",
    "XXH3": "xxh3",
    "XXH128": "xxh128",
}
# Legacy MHL (v1.1, written by Silverstack, ShotPut Pro, YoYotta...): its hash elements.
LEGACY = {"md5": "md5", "sha1": "sha1", "xxhash64be": "xxh64", "xxhash64": "xxh64le", "xxhash": "xxh32dec"}
LEGACY |= {"xxh64": "xxh64", "xxh128": "xxh128", "xxh3": "xxh3"}  # ASC MHL packing lists' elements
MAX_LIST = 64 << 20  # bytes: a checksum list longer than this is not read whole (a mislabelled media file)

_HEX = re.compile(r"[0-9a-fA-F]+")
_LINE = re.compile(r"^(\\?)([0-9a-fA-F]+) [ *](.+)$")
_TAG = re.compile(r"^(\\?)([A-Z0-9]+) ?\((.+)\) ?= ?([0-9a-fA-F]+)$")


@dataclass(frozen=True)
class Expected:
    """One hash a delivery's checksums promise for one of its files."""

    name: str  # the file, relative to the delivery's root (posix); unresolved as written when `outside`
    algorithm: str
    digest: str  # lower-case hex
    source: str  # the checksum file that says so, relative to the root (or `ascmhl`)
    size: int | None = None  # legacy MHL and ASC MHL also record the size
    outside: bool = False  # the name is absolute or leaves the delivery: never opened, always an error


class Malformed(Exception):
    """A checksum file chute cannot read as one: the delivery's fault."""


def algorithm_of(name: str) -> str | None:
    """The algorithm of a checksum list named `name`, or None when it is not one."""
    lower = name.lower()
    return SUMS.get(lower) or EXTENSIONS.get(PurePosixPath(lower).suffix)


def resolve(source: str, written: str) -> str | None:
    """`written`, a name in the list `source`, as a path relative to the root; None when it escapes."""
    name = written.replace("\\", "/")  # Windows tools (TeraCopy, Hashdeep) write backslashes
    if not name or "\x00" in name or name.startswith("/") or re.match(r"^[A-Za-z]:", name):
        return None
    joined = posixpath.normpath(posixpath.join(posixpath.dirname(source), name))
    if joined == "." or joined == ".." or joined.startswith("../"):
        return None
    return joined


def _unescape(name: str) -> str:
    """GNU md5sum's escaped name (a line starting with a backslash): `\\\\` and `\\n`."""
    return re.sub(r"\\(.)", lambda m: "\n" if m.group(1) == "n" else m.group(1), name)


def _expected(source: str, written: str, algorithm: str, digest: str, size: int | None = None) -> Expected:
    name = resolve(source, written)
    if len(digest) != LENGTHS.get(algorithm, len(digest)):
        raise Malformed(f"{source}: {digest!r} is not a {algorithm} hash")
    return Expected(name or written, algorithm, digest.lower(), source, size, outside=name is None)


def parse_list(source: str, text: str, files: frozenset[str], main: str | None = None) -> list[Expected]:
    """The hashes of an md5sum-style list or a one-hash sidecar `source` (relative to the root)."""
    algorithm = algorithm_of(PurePosixPath(source).name)
    assert algorithm is not None
    lines = [line.rstrip("\r") for line in text.splitlines() if line.strip() and not line.startswith("#")]
    if len(lines) == 1 and _HEX.fullmatch(lines[0].strip()):
        return [_expected(source, _bare_target(source, files, main), algorithm, lines[0].strip())]
    found = []
    for line in lines:
        if m := _LINE.match(line):
            escaped, digest, written = m.groups()
            found.append(_expected(source, _unescape(written) if escaped else written, algorithm, digest))
        elif (m := _TAG.match(line)) and m.group(2) in TAGS:
            escaped, tag, written, digest = m.groups()
            found.append(_expected(source, _unescape(written) if escaped else written, TAGS[tag], digest))
        else:
            raise Malformed(f"{source}: cannot read the line {line[:80]!r}")
    return found


def _bare_target(source: str, files: frozenset[str], main: str | None) -> str:
    """The file a sidecar holding a bare hash is for.

    `clip.mov.md5` is for `clip.mov`; `clip.md5` for the main file when its stem is `clip` (a stem
    delivery's `clip.mov` beside `clip.srt`), else for the one file `clip.*`.
    """
    target = PurePosixPath(source).with_suffix("")
    if str(target) in files:
        return target.name
    if main is not None and PurePosixPath(main).with_suffix("") == target:
        return PurePosixPath(main).name
    stems = [
        f
        for f in files
        if PurePosixPath(f).parent == target.parent and PurePosixPath(f).stem == target.name and not is_checksum(f)
    ]
    return PurePosixPath(stems[0]).name if len(stems) == 1 else target.name


def parse_legacy_mhl(source: str, data: bytes) -> list[Expected]:
    """The hashes of a legacy MHL file (`<hashlist version="1.1">`: `<hash><file>`, `<size>`, a hash element)."""
    try:
        root = ET.fromstring(data)  # noqa: S314 -- the standard parser expands no external entities
    except ET.ParseError as exc:
        raise Malformed(f"{source}: not an MHL file ({exc})") from exc
    found = []
    for entry in root.iter():
        if _local(entry.tag) != "hash":
            continue
        fields = {_local(child.tag): (child.text or "").strip() for child in entry}
        path = next((child for child in entry if _local(child.tag) == "path"), None)
        # v1.1 writes <file> and <size>; an ASC MHL (v2.0) packing list writes <path size="...">
        written = fields.get("file") or fields.get("path")
        size = fields.get("size") or (path.get("size") if path is not None else None)
        if not written:
            continue
        for element, algorithm in LEGACY.items():
            if fields.get(element):
                digest = _legacy_digest(algorithm, fields[element])
                known = int(size) if size and size.isdigit() else None
                found.append(_expected(source, written, _plain(algorithm), digest, known))
    return found


def _plain(algorithm: str) -> str:
    return algorithm.removesuffix("le").removesuffix("dec")


def _legacy_digest(algorithm: str, text: str) -> str:
    """A legacy MHL hash as chute's hex: xxhash64 is little-endian hex, xxhash a decimal xxh32."""
    if algorithm == "xxh64le":
        return bytes.fromhex(text.zfill(16))[::-1].hex()
    if algorithm == "xxh32dec":
        return f"{int(text):08x}"
    return text.lower()


def _local(tag: str) -> str:
    return tag.rpartition("}")[2]


def is_checksum(name: str) -> bool:
    """Whether the delivery's file `name` is a checksum file (a list, a sidecar, an MHL file or ASC MHL's)."""
    path = PurePosixPath(name)
    return algorithm_of(path.name) is not None or path.suffix.lower() == ".mhl" or "ascmhl" in path.parts[:-1]


def read_text(path: Path) -> str:
    """A checksum list's text: UTF-8 (lists are written by tools), undecodable bytes kept as surrogates."""
    with open(path, "rb") as f:
        data = f.read(MAX_LIST + 1)
    if len(data) > MAX_LIST:
        raise Malformed(f"{path.name}: too long for a checksum list")
    return data.decode("utf-8", "surrogateescape").removeprefix("\ufeff")
