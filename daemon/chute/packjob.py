"""What `chute check` says about jobs over packages (contract §12): `match`, `optional`, `type: folder`, `for_each`.

Plain functions of the job's values; each problem is a location below the item checked and a message.
"""

from __future__ import annotations

from . import globs
from .globs import Patterns
from .yamlfile import Loc

FOLDER = "folder"  # the type of an input that is the whole delivery
Found = list[tuple[Loc, str]]


def pattern_problems(value: str | list[str] | None, key: str) -> Found:
    """The invalid globs of a `match` or `for_each` value (a string, or a list of them)."""
    if isinstance(value, list) and not value:
        return [((key,), "is an empty list of patterns")]
    found: Found = []
    for k, pattern in enumerate(globs.patterns(value)):
        why = globs.problem(pattern)
        if why:
            found.append(((key,) if isinstance(value, str) else (key, k), why))
    return found


def input_problems(index: int, type_: str, match: str | list[str] | None, optional: bool) -> Found:
    """What is wrong with one job input's package keys: input `index` (0 is the main input)."""
    found = pattern_problems(match, "match")
    if index == 0 and optional:
        found.append((("optional",), "the main input (the first) cannot be optional"))
    if type_ == FOLDER and index > 0:
        found.append((("type",), "only the first input (the main one) can be the whole delivery (`type: folder`)"))
    if type_ == FOLDER and match is not None:
        found.append((("match",), "a `type: folder` input is the whole delivery: it takes no `match`"))
    if index > 0 and optional and match is None:
        found.append((("optional",), "needs `match`: an input without one is the main file, which is always there"))
    return found


def for_each_problems(
    for_each: Patterns, consumed: list[str], each: dict[str, Patterns], folder_input: str | None
) -> Found:
    """What is wrong with what an entry consumes, given its `for_each` and the artifacts made once per file.

    `consumed` is the entry's input artifact names in order; `each` the for_each outputs so far, with
    their patterns; `folder_input` the name of the job's `type: folder` input, if it has one.
    """
    found: Found = []
    for i, name in enumerate(consumed):
        if name not in each:
            continue
        if not for_each:
            found.append(
                (
                    ("input_artifacts", i, "name"),
                    f"artifact {name!r} is made once per file (for_each {globs.shown(each[name])}): "
                    "only an entry with the same for_each can consume it",
                )
            )
        elif each[name] != for_each:
            found.append(
                (
                    ("input_artifacts", i, "name"),
                    f"artifact {name!r} is made for for_each {globs.shown(each[name])}, "
                    f"not this entry's {globs.shown(for_each)}",
                )
            )
    if for_each and folder_input is None:
        found.append(
            (("for_each",), "runs once per file of a folder delivery: the job's first input must be `type: folder`")
        )
    elif for_each and not any(n == folder_input or n in each for n in consumed):
        found.append(
            (
                ("for_each",),
                f"consumes no file of the delivery: wire {folder_input!r} (each matching file in turn) "
                "or an earlier for_each entry's output",
            )
        )
    return found
