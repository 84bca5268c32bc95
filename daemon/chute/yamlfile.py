"""Loading YAML while remembering the line of every value, for messages that point at it."""

from __future__ import annotations

import copy
import difflib
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar, get_args

import yaml
from pydantic import BaseModel, ValidationError

from .errors import DefinitionError, Problem

Loc = tuple[str | int, ...]


def format_loc(loc: Loc) -> str:
    """`("steps", 0, "entries")` -> `steps[0].entries`."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out


@dataclass
class Document:
    """A parsed YAML file: its data, and the 1-based line of each location in it."""

    path: Path
    display: str
    data: Any
    text: str
    lines: dict[Loc, int] = field(default_factory=dict)

    def line(self, loc: Loc) -> int | None:
        """The line of `loc`, or of its nearest ancestor that has one."""
        loc = tuple(loc)
        while loc:
            if loc in self.lines:
                return self.lines[loc]
            loc = loc[:-1]
        return self.lines.get((), 1)

    def problem(self, loc: Loc, message: str) -> Problem:
        return Problem(self.display, self.line(loc), format_loc(loc), message)


class _DuplicateKey(Exception):
    def __init__(self, line: int, field: str, first: int):
        self.line, self.field, self.first = line, field, first


def _construct(node: yaml.Node, loc: Loc, lines: dict[Loc, int], loader: yaml.SafeLoader) -> Any:
    lines.setdefault(loc, node.start_mark.line + 1)
    if isinstance(node, yaml.MappingNode):
        loader.flatten_mapping(node)
        out: dict[Any, Any] = {}
        for key_node, value_node in node.value:
            key = loader.construct_object(key_node, deep=True)
            if not isinstance(key, (str, int, float, bool)) and key is not None:
                key = str(key)
            child = loc + (str(key),)
            if key in out:
                # YAML's last-one-wins would silently drop the first value: say so instead.
                raise _DuplicateKey(key_node.start_mark.line + 1, format_loc(child), lines[child])
            lines[child] = key_node.start_mark.line + 1
            out[key] = _construct(value_node, child, lines, loader)
        return out
    if isinstance(node, yaml.SequenceNode):
        return [_construct(item, loc + (i,), lines, loader) for i, item in enumerate(node.value)]
    return loader.construct_object(node, deep=True)


def parse(text: str, path: Path, display: str | None = None) -> Document:
    """Parse YAML text; syntax errors become a DefinitionError with the line."""
    display = display or str(path)
    loader = None
    try:
        # The reader rejects non-printable characters (a NUL) already while constructing the loader.
        loader = yaml.SafeLoader(text)
        node = loader.get_single_node()
        lines: dict[Loc, int] = {}
        data = None if node is None else _construct(node, (), lines, loader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
        line = mark.line + 1 if mark is not None else None
        position = getattr(exc, "position", None)  # a ReaderError has no mark, only a character offset
        if line is None and isinstance(position, int):
            line = text.count("\n", 0, position) + 1
        reason = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise DefinitionError([Problem(display, line, "", f"YAML syntax error: {reason}")]) from None
    except _DuplicateKey as dup:
        raise DefinitionError(
            [Problem(display, dup.line, dup.field, f"key is given twice (first on line {dup.first})")]
        ) from None
    except RecursionError:  # `a: &x [*x]`: an alias inside itself
        raise DefinitionError([Problem(display, None, "", "YAML nests too deeply (an alias inside itself?)")]) from None
    finally:
        if loader is not None:
            loader.dispose()
    return Document(path=path, display=display, data=data, text=text, lines=lines)


def load(path: Path, display: str | None = None) -> Document:
    """Read and parse one YAML file; unreadable or undecodable files are problems too."""
    display = display or str(path)
    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as exc:
        raise DefinitionError([Problem(display, None, "", f"not UTF-8 text ({exc.reason})")]) from None
    except OSError as exc:
        raise DefinitionError([Problem(display, None, "", f"cannot read: {exc.strerror or exc}")]) from None
    return parse(text, path, display)


def declared_name(path: Path, fallback: str) -> str:
    """The `name:` an invalid definition file declares, or `fallback` when it cannot say.

    Lets the catalog blame a broken job or module once, in its own file, instead of
    again at every place that uses it.
    """
    try:
        data = load(path).data
    except DefinitionError:
        return fallback
    name = data.get("name") if isinstance(data, dict) else None
    return name if isinstance(name, str) and name else fallback


M = TypeVar("M", bound=BaseModel)


def validate(model: type[M], doc: Document, data: Any, prefix: Loc = ()) -> tuple[M | None, list[Problem]]:
    """`data` as a `model`, and its problems; an unknown key does not stop the checks of the rest."""
    try:
        return model.model_validate(data), []
    except ValidationError as exc:
        problems = pydantic_problems(doc, exc, prefix, model)
        errors = exc.errors(include_url=False)
    if not all(err["type"] == "extra_forbidden" for err in errors):
        return None, problems
    try:
        return model.model_validate(without(data, [error_loc(err) for err in errors])), problems
    except ValidationError:
        return None, problems


def without(data: Any, locs: Iterable[Loc]) -> Any:
    """A copy of `data` with the keys at `locs` taken out."""
    data = copy.deepcopy(data)
    for loc in locs:
        parent = data
        for part in loc[:-1]:
            if isinstance(parent, dict):
                parent = parent.get(part)
            elif isinstance(parent, list) and isinstance(part, int) and part < len(parent):
                parent = parent[part]
            else:
                parent = None
        if isinstance(parent, dict):
            parent.pop(loc[-1], None)
    return data


def did_you_mean(word: str, known: Iterable[str], form: str = "'{}'") -> str:
    """` (did you mean 'settle'?)` when `word` looks like a typo of one of `known`, else ''."""
    close = difflib.get_close_matches(word, list(known), n=1)
    return f" (did you mean {form.format(close[0])}?)" if close else ""


def error_loc(err: Any) -> Loc:
    """Where a pydantic error is, without the union member or validator names pydantic adds."""
    return tuple(p for p in err["loc"] if not _is_union_tag(p))


def pydantic_problems(doc: Document, exc: Any, prefix: Loc = (), model: type[BaseModel] | None = None) -> list[Problem]:
    """One Problem per pydantic error, pointed at the line of the offending field.

    With the `model` validated, an unknown key names the known key it is likely a typo of.
    """
    problems = []
    for err in exc.errors(include_url=False):
        loc = error_loc(err)
        message = _message(err)
        if err["type"] == "extra_forbidden" and loc:
            known = _known_keys(model, loc[:-1]) if model is not None else []
            message = f"unknown key {str(loc[-1])!r}{did_you_mean(str(loc[-1]), known)}"
        problems.append(doc.problem(prefix + loc, message))
    return problems


def _known_keys(model: type[BaseModel], loc: Loc) -> list[str]:
    """The keys the model at `loc` inside `model` takes ([] when it is no model)."""
    current: type[BaseModel] | None = model
    for part in loc:
        if isinstance(part, int) or current is None:
            continue
        field = current.model_fields.get(part)
        current = _model_in(field.annotation) if field is not None else None
    return list(current.model_fields) if current is not None else []


def _model_in(annotation: Any) -> type[BaseModel] | None:
    """The pydantic model inside an annotation such as `list[Inbox]` or `Executor | None`."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in get_args(annotation):
        found = _model_in(arg)
        if found is not None:
            return found
    return None


def _is_union_tag(part: Any) -> bool:
    # pydantic puts the union member or validator name in `loc`; they are not fields.
    return isinstance(part, str) and ("[" in part or part.startswith("function-"))


def _message(err: dict[str, Any]) -> str:
    kind = err["type"]
    if kind == "extra_forbidden":
        return "unknown key"
    if kind == "missing":
        return "required key is missing"
    msg = err["msg"]
    if msg.startswith("Value error, "):
        msg = msg[len("Value error, ") :]
    if kind in ("value_error", "assertion_error"):
        return msg
    given = err.get("input")
    if isinstance(given, (str, int, float, bool)) or given is None:
        return f"{msg} (got {given!r})"
    return msg
