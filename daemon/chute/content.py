"""Cheap content checks for the known artifact types (a sanity check, not a validator)."""

from __future__ import annotations

import json
from pathlib import Path


def _media(path: Path, kind: str) -> str | None:
    try:
        import av  # imported here: only runs that check media pay for loading FFmpeg
    except ImportError:  # no chute[media]: a sanity check it cannot make is skipped, not failed
        return None

    try:
        with av.open(str(path)) as container:
            if not any(s.type == kind for s in container.streams):
                return f"has no {kind} stream"
    except av.FFmpegError as exc:
        # Its str() ends with the path it opened: a workspace's copy, gone by the time anyone reads this.
        return f"is not a media file PyAV can read ({exc.strerror})"
    except OSError as exc:
        return f"does not open as media ({exc.strerror or exc.__class__.__name__})"
    except ValueError as exc:
        return f"does not open as media ({exc.__class__.__name__}: {exc})"
    return None


def _image(path: Path) -> str | None:
    try:
        from PIL import Image, UnidentifiedImageError
    except ImportError:  # no chute[media], as above
        return None

    try:
        with Image.open(path) as img:
            img.verify()
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        return f"does not open as an image ({exc})"
    return None


def _json(path: Path) -> str | None:
    try:
        with open(path, "rb") as f:
            json.load(f)
    except (ValueError, UnicodeDecodeError) as exc:
        return f"is not valid JSON ({exc})"
    return None


def _text(path: Path) -> str | None:
    try:
        with open(path, encoding="utf-8", errors="strict") as f:
            while f.read(1 << 20):
                pass
    except UnicodeDecodeError as exc:
        return f"is not UTF-8 text (byte {exc.start})"
    return None


CHECKS = {
    "video": lambda p: _media(p, "video"),
    "audio": lambda p: _media(p, "audio"),
    "image": _image,
    "json": _json,
    "text": _text,
}


def check(path: Path, kind: str) -> str | None:
    """Why `path` is not a `kind`, or None when it looks like one (unknown kinds always pass)."""
    fn = CHECKS.get(kind)
    return fn(path) if fn else None
