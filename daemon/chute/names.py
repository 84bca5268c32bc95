"""A user's file name, made safe to show to a person and to write into strict JSON (issue 19, item 6).

A name comes from a share, so it may hold anything but `/` and NUL: an escape
sequence that would drive the operator's terminal, a newline that would split
a row or forge a line of a message, or bytes that are not UTF-8 (a Latin-1
client), which Python carries as lone surrogates (PEP 383) and which no strict
JSON reader accepts. `shown` is for every human-facing output; `text`, `fields`
and `strict` are for JSON; `original` reads back what `fields` wrote.
"""

from __future__ import annotations

import base64
import re
from typing import Any

# C0 controls, DEL and C1 controls; U+2028/U+2029, which some readers take for line breaks;
# the bidirectional embeddings, overrides and isolates, which reorder what a terminal shows
# (CVE-2021-42574); and surrogates, which only an undecodable byte (or a bug) puts in a str.
_UNSAFE = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069\ud800-\udfff]")
_SURROGATE = re.compile("[\ud800-\udfff]")
_NAMED = {"\t": "\\t", "\n": "\\n", "\r": "\\r"}


def _escape(match: re.Match[str]) -> str:
    char = match.group()
    code = ord(char)
    if char in _NAMED:
        return _NAMED[char]
    if 0xDC80 <= code <= 0xDCFF:  # the byte 0xNN that was not UTF-8 (os.fsdecode's surrogateescape)
        return f"\\x{code - 0xDC00:02x}"
    if code < 0x80:
        return f"\\x{code:02x}"
    return f"\\u{code:04x}"  # a C1 control is a character, not a byte: \u0085, never \x85


def shown(value: object) -> str:
    """`value` as text for a terminal or a one-line message: controls and undecodable bytes as visible escapes."""
    return _UNSAFE.sub(_escape, str(value))


def text(value: str) -> str:
    """`value` as valid UTF-8 for JSON: each byte that is not UTF-8 as the four characters `\\xNN`, the rest as is."""
    return _SURROGATE.sub(_escape, value)


def raw(value: str) -> bytes:
    """The exact bytes of a name as the file system has them."""
    try:
        return value.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:  # a surrogate no file system gave us: keep it, as CESU-8
        return value.encode("utf-8", "surrogatepass")


def fields(key: str, value: str) -> dict[str, str]:
    """`{key: text(value)}`, plus `{key}_b64` holding its exact bytes (base64) when `value` is not valid UTF-8."""
    if not _SURROGATE.search(value):
        return {key: value}
    return {key: text(value), f"{key}_b64": base64.b64encode(raw(value)).decode("ascii")}


def original(data: dict[str, Any], key: str) -> str:
    """The exact name that `fields` wrote under `key` (as os.fsdecode would give it)."""
    encoded = data.get(f"{key}_b64")
    if encoded is None:
        return data[key]
    return base64.b64decode(encoded).decode("utf-8", "surrogateescape")


def strict(data: Any) -> Any:
    """`data` (JSON values) with every string, key or value, made valid UTF-8 by `text`."""
    if isinstance(data, str):
        return text(data)
    if isinstance(data, dict):
        return {strict(k) if isinstance(k, str) else k: strict(v) for k, v in data.items()}
    if isinstance(data, (list, tuple)):
        return [strict(v) for v in data]
    return data
