"""The JSON Schema of the config file, from its pydantic models, for editors (`chute schema`).

It is written as draft-07, the newest draft yaml-language-server (VS Code's
YAML extension, and the YAML servers of vim, Emacs, Helix...) validates
fully: see redhat-developer/yaml-language-server#856. pydantic's models use
nothing newer; only the `$defs` section is renamed `definitions`.
"""

from __future__ import annotations

from typing import Any

from . import __version__
from .config import Config

DRAFT = "http://json-schema.org/draft-07/schema#"


def config_schema() -> dict[str, Any]:
    """The schema a config file must match (the checks across keys, e.g. nested inboxes, are `chute check`'s)."""
    schema = Config.model_json_schema(ref_template="#/definitions/{model}")
    schema["definitions"] = schema.pop("$defs", {})
    schema = _without_path_format(schema)
    return {
        "$schema": DRAFT,
        "title": "chute configuration",
        "description": f"chute {__version__}: the daemon's config file (see config.example.yaml). "
        "Relative paths are relative to the file's folder.",
        **{k: v for k, v in schema.items() if k not in ("title", "description")},
    }


def _without_path_format(node: Any) -> Any:
    # pydantic's `format: path` is no JSON Schema format; some validators refuse unknown ones.
    if isinstance(node, dict):
        return {k: _without_path_format(v) for k, v in node.items() if not (k == "format" and v == "path")}
    if isinstance(node, list):
        return [_without_path_format(v) for v in node]
    return node
