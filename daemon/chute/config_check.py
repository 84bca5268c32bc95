"""A config file checked in one pass (one mistake does not hide the others, issue 21), its paths anchored."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from .config import EMBEDDED_DEFAULT, Config, Inbox, Security
from .errors import DefinitionError, Problem
from .model import display_path
from .plan import JobPlan
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


def _anchor(config: Config, base: Path, folders: Path) -> Config:
    """Relative paths are relative to the config file's folder.

    `folders` is that folder too, except for the embedded default: there only
    modules_path and jobs_path (the bundled ones) are, and every other folder
    is under the current one.
    """
    notify = [
        t.model_copy(update={"inboxes": [_real(p, folders) for p in t.inboxes]}) if t.inboxes is not None else t
        for t in config.notify
    ]
    metrics = config.metrics
    if metrics is not None and metrics.textfile is not None:
        metrics = metrics.model_copy(update={"textfile": _real(metrics.textfile, folders)})
    security = config.executor.security
    token_file = config.web.token_file
    web = config.web.model_copy(update={"token_file": None if token_file is None else _real(token_file, folders)})
    return config.model_copy(
        update={
            "executor": config.executor.model_copy(
                update={"security": None if security is None else _anchor_security(security, folders)}
            ),
            "modules_path": [_real(p, base) for p in config.modules_path],
            "jobs_path": [_real(p, base) for p in config.jobs_path],
            "state_dir": _real(config.state_dir, folders),
            "work_dir": _real(config.work_dir, folders),
            "inboxes": [_anchor_inbox(i, folders) for i in config.inboxes],
            "notify": notify,
            "metrics": metrics,
            "web": web,
        }
    )


def _real(path: Path, base: Path) -> Path:
    """`path` (`~` expanded) made absolute against `base`, with symlinks resolved."""
    # Resolved (symlinks followed): two names for one folder are one folder everywhere chute
    # compares paths, and inotify watches the real folder (a watch on a link sees nothing).
    return Path(os.path.realpath(base / path.expanduser()))


def _anchor_inbox(inbox: Inbox, folders: Path) -> Inbox:
    """An inbox with its folders anchored at `folders`."""
    return inbox.model_copy(
        update={
            "path": _real(inbox.path, folders),
            "outbox": _real(inbox.outbox, folders),
            "quarantine": _real(inbox.quarantine, folders),
            "archive": _real(inbox.archive, folders) if inbox.archive is not None else None,
        }
    )


def _anchor_security(security: Security, folders: Path) -> Security:
    """Dask's TLS files anchored at `folders`, like every other path."""
    return security.model_copy(
        update={
            "ca_file": _real(security.ca_file, folders),
            "cert": _real(security.cert, folders),
            "key": _real(security.key, folders) if security.key is not None else None,
        }
    )


class _Paths:
    """The inboxes' paths by their parts: which inboxes a folder is in, and which are beneath it, without a
    pass over every inbox for every folder (500 inboxes took `chute check`, a start and a reload 5 s)."""

    def __init__(self, inboxes: list[Inbox]):
        self.at: dict[tuple[str, ...], list[int]] = {}
        self.beneath: dict[tuple[str, ...], list[int]] = {}
        for n, inbox in enumerate(inboxes):
            parts = inbox.path.parts
            self.at.setdefault(parts, []).append(n)
            for k in range(1, len(parts)):
                self.beneath.setdefault(parts[:k], []).append(n)

    def holding(self, folder: Path) -> list[int]:
        """The inboxes whose path is `folder` or one of its parents, in the file's order."""
        parts = folder.parts
        return sorted(n for k in range(1, len(parts) + 1) for n in self.at.get(parts[:k], ()))

    def nested(self, folder: Path) -> list[int]:
        """The inboxes on `folder`, above it or beneath it, in the file's order."""
        return sorted([*self.holding(folder), *self.beneath.get(folder.parts, ())])


def _overlaps(doc: Document, config: Config, index: list[int]) -> list[Problem]:
    """Folders that would feed results back into an inbox, or two inboxes on one path.

    `index` is each inbox's place in the file (an invalid inbox is left out of `config`).
    """
    problems = []
    inboxes = config.inboxes
    paths = _Paths(inboxes)
    for n, (i, inbox) in enumerate(zip(index, inboxes)):
        if inbox.on_success == "archive" and inbox.archive is None:
            problems.append(
                doc.problem(("inboxes", i, "on_success"), "is 'archive', so 'archive' (a folder) is required")
            )
        for m in (m for m in paths.nested(inbox.path) if m < n):
            j, other = index[m], inboxes[m]
            if inbox.path == other.path:
                problems.append(doc.problem(("inboxes", i, "path"), f"inboxes[{j}] already watches {inbox.path}"))
            else:
                problems.append(doc.problem(("inboxes", i, "path"), f"is nested with inboxes[{j}] ({other.path})"))
        for key in ("outbox", "quarantine", "archive"):
            folder = getattr(inbox, key)
            if folder is None:
                continue
            for m in paths.holding(folder):
                problems.append(
                    doc.problem(
                        ("inboxes", i, key),
                        f"{folder} is inside inboxes[{index[m]}] ({inboxes[m].path}): results would be fed back in",
                    )
                )
    for key in ("state_dir", "work_dir"):
        for m in paths.holding(getattr(config, key)):
            problems.append(doc.problem((key,), f"is inside inboxes[{index[m]}] ({inboxes[m].path})"))
    return problems


def _notify_inboxes(doc: Document, config: Config) -> list[Problem]:
    """A notify target's inbox that is no inbox of this config (a typo would silence it for good)."""
    watched = {Path(os.path.realpath(inbox.path)) for inbox in config.inboxes}
    return [
        doc.problem(("notify", i, "inboxes", j), f"{folder} is not the path of an inbox in this config")
        for i, target in enumerate(config.notify)
        for j, folder in enumerate(target.inboxes or ())
        if Path(os.path.realpath(folder)) not in watched
    ]


def inbox_units(doc: Document, config: Config, jobs: dict[str, JobPlan]) -> list[Problem]:
    """An inbox's `unit` against its job's main input (contract §12): a folder delivery needs a folder job, and back."""
    problems = []
    for i, inbox in enumerate(config.inboxes):
        job = jobs.get(inbox.job)
        if job is None:
            continue
        if inbox.unit == "folder" and not job.folder:
            problems.append(
                doc.problem(
                    ("inboxes", i, "unit"),
                    f"is 'folder', but job {job.name!r} takes a {job.input_type}: its first input must be "
                    "`type: folder` (the whole delivery, e.g. with for_each entries)",
                )
            )
        elif inbox.unit != "folder" and job.folder:
            problems.append(
                doc.problem(
                    ("inboxes", i, "job"),
                    f"job {job.name!r} takes a whole folder (`type: folder`), so this inbox needs 'unit: folder'",
                )
            )
    return problems


def load_config(file: Path) -> tuple[Config, Document]:
    """Read, validate and anchor one config file; DefinitionError lists every problem."""
    check = check_config(file)
    if check.problems or check.config is None or check.doc is None:
        raise DefinitionError(check.problems)
    return check.config, check.doc
