"""Shared building blocks of the definition models: frozen, no unknown keys."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict

_PARAM = re.compile(r"^[A-Za-z][A-Za-z0-9_-]*$")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


class Frozen(BaseModel):
    """Every definition model: immutable, and an unknown key is an error."""

    model_config = ConfigDict(extra="forbid", frozen=True)


def _param(value: str) -> str:
    if not _PARAM.match(value):
        raise ValueError(f"{value!r} must be a CLI flag name: a letter, then letters, digits, '_' or '-'")
    return value


def _name(value: str) -> str:
    if not _NAME.match(value):
        raise ValueError(f"{value!r} must be letters, digits, '_', '-' or '.', starting with a letter or digit")
    return value


def _plain_file_name(value: str) -> str:
    if not value or value in (".", "..") or any(bad in value for bad in ("/", "\\", "..", "\x00")):
        raise ValueError(f"{value!r} must be a plain file name (no '/', '\\', '..' or NUL)")
    return value


def _to_str(value: Any) -> Any:
    # `version: 1.0` in YAML is a float; the manifest records it as the text "1.0".
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return str(value)
    return value


ParamName = Annotated[str, AfterValidator(_param)]
Name = Annotated[str, AfterValidator(_name)]
ArtifactName = Annotated[str, AfterValidator(_plain_file_name)]
TypeName = Annotated[str, AfterValidator(_name)]
Version = Annotated[str, BeforeValidator(_to_str)]


def display_path(path: Path) -> str:
    """A path as a user wants to read it: relative to the current folder when below it."""
    try:
        rel = os.path.relpath(path)
    except ValueError:
        return str(path)
    return rel if not rel.startswith("..") else str(path)
