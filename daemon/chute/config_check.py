"""Checking a config file in one pass: a mistake in one key or one inbox does not hide the others (issue 21)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from .config import EMBEDDED_DEFAULT, Config, Inbox, _anchor, _notify_inboxes, _overlaps
from .errors import DefinitionError, Problem
from .model import display_path
from .yamlfile import Document, error_loc, load, pydantic_problems, validate, without


@dataclass(frozen=True)
class ConfigCheck:
    """The config as far as it is valid, and every problem found in it."""

    config: Config | None  # None: unreadable, or not a mapping: nothing else can be checked
    doc: Document | None
    problems: list[Problem]
    invalid: frozenset[str] = frozenset()  # top-level keys left at their defaults: what they lead to is unchecked


def check_config(file: Path) -> ConfigCheck:
    """Read, validate and anchor one config file, collecting every problem instead of stopping at the first."""
    try:
        doc = load(file, display_path(file))
    except DefinitionError as exc:
        return ConfigCheck(None, None, exc.problems)
    data = {} if doc.data is None else doc.data
    if not isinstance(data, dict):
        return ConfigCheck(None, doc, [doc.problem((), "the config must be a mapping of keys")])
    raw = data.get("inboxes")
    inboxes, index, problems = _inboxes(doc, raw) if isinstance(raw, list) else (None, [], [])
    rest = data if inboxes is None else {k: v for k, v in data.items() if k != "inboxes"}
    config, invalid, more = _settings(doc, rest)
    problems += more
    if config is not None:
        if inboxes is not None:
            config = config.model_copy(update={"inboxes": inboxes})
        base = file.resolve().parent
        config = _anchor(config, base, Path.cwd() if file.resolve() == EMBEDDED_DEFAULT.resolve() else base)
        problems += _overlaps(doc, config, index)
        if isinstance(raw, list) and len(index) == len(raw) and "notify" not in invalid:
            problems += _notify_inboxes(doc, config)  # with an inbox missing, its notify targets would seem wrong
    return ConfigCheck(config, doc, sorted(problems, key=lambda p: p.line or 0), invalid)


def _inboxes(doc: Document, raw: list[Any]) -> tuple[list[Inbox], list[int], list[Problem]]:
    """Each inbox checked on its own: the valid ones, their places in the file, the problems of all."""
    inboxes, index, problems = [], [], []
    for i, item in enumerate(raw):
        inbox, found = validate(Inbox, doc, item, ("inboxes", i))
        problems += found
        if inbox is not None:
            inboxes.append(inbox)
            index.append(i)
    return inboxes, index, problems


def _settings(doc: Document, data: dict[str, Any]) -> tuple[Config | None, frozenset[str], list[Problem]]:
    """The keys other than the inboxes; a key with a bad value is reported and its default stands in."""
    try:
        return Config.model_validate(data), frozenset(), []
    except ValidationError as exc:
        errors = exc.errors(include_url=False)
        problems = pydantic_problems(doc, exc, model=Config)
    locs = [error_loc(err) for err in errors]
    if not all(locs):
        return None, frozenset(), problems
    unknown = [loc for loc, err in zip(locs, errors) if err["type"] == "extra_forbidden"]
    invalid = frozenset(str(loc[0]) for loc, err in zip(locs, errors) if err["type"] != "extra_forbidden")
    try:
        config = Config.model_validate({k: v for k, v in without(data, unknown).items() if k not in invalid})
    except ValidationError:
        return None, invalid, problems
    return config, invalid, problems


def load_config(file: Path) -> tuple[Config, Document]:
    """Read, validate and anchor one config file; DefinitionError lists every problem."""
    check = check_config(file)
    if check.problems or check.config is None or check.doc is None:
        raise DefinitionError(check.problems)
    return check.config, check.doc
