"""The daemon's configuration (SPEC §4): one YAML file, validated into frozen models."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Literal

from pydantic import AfterValidator, Field, ValidationError

from .errors import ChuteError, DefinitionError, Problem
from .model import Frozen, display_path
from .yamlfile import Document, load, pydantic_problems

SEARCH_ORDER = (Path("config.yaml"), Path("/etc/chute/config.yaml"))
# The embedded default is config.example.yaml at the top of the source tree.
EMBEDDED_DEFAULT = Path(__file__).resolve().parents[2] / "config.example.yaml"


def _no_nul(path: Path) -> Path:
    # YAML's "\0" escape would otherwise pass here and crash the daemon at its first os call.
    if "\x00" in str(path):
        raise ValueError("a path cannot contain a NUL character")
    return path


FolderPath = Annotated[Path, AfterValidator(_no_nul)]


class Executor(Frozen):
    kind: Literal["local", "dask"] = "local"
    address: str | None = None


class Defaults(Frozen):
    timeout: float = Field(default=3600, gt=0)
    settle: float = Field(default=2.0, ge=0)
    poll_interval: float = Field(default=5.0, gt=0)
    rescan_interval: float = Field(default=60.0, gt=0)


class LogConfig(Frozen):
    format: Literal["auto", "json", "console"] = "auto"
    level: Literal["debug", "info", "warning", "error"] = "info"


class Inbox(Frozen):
    path: FolderPath
    job: str
    outbox: FolderPath
    quarantine: FolderPath
    on_success: Literal["archive", "delete"] = "archive"
    archive: FolderPath | None = None
    include: list[str] = Field(default_factory=lambda: ["*"])
    exclude: list[str] = Field(default_factory=list)
    watch: Literal["auto", "events", "poll"] = "auto"
    settle: float | None = Field(default=None, ge=0)


class Config(Frozen):
    modules_path: list[FolderPath] = Field(default_factory=lambda: [Path("modules")])
    jobs_path: list[FolderPath] = Field(default_factory=lambda: [Path("jobs")])
    state_dir: FolderPath = Path("var/state")
    work_dir: FolderPath = Path("var/work")
    workers: int = Field(default_factory=lambda: os.cpu_count() or 1, ge=1, le=256)
    executor: Executor = Field(default_factory=Executor)
    defaults: Defaults = Field(default_factory=Defaults)
    shutdown_timeout: float = Field(default=60, ge=0)
    max_crashes: int = Field(default=3, ge=1)
    lease_timeout: float = Field(default=120, gt=0)
    log: LogConfig = Field(default_factory=LogConfig)
    inboxes: list[Inbox] = Field(default_factory=list)

    def settle(self, inbox: Inbox) -> float:
        return self.defaults.settle if inbox.settle is None else inbox.settle


def find(explicit: Path | None) -> Path:
    """The config file to use: `--config`, ./config.yaml, /etc/chute/config.yaml, the embedded default."""
    if explicit is not None:
        if not explicit.is_file():
            raise ChuteError(f"config file {explicit} {'is not a file' if explicit.exists() else 'does not exist'}")
        return explicit
    for candidate in SEARCH_ORDER + (EMBEDDED_DEFAULT,):
        if candidate.is_file():
            return candidate
    raise ChuteError("no config found: pass --config, or create ./config.yaml or /etc/chute/config.yaml")


def load_config(file: Path) -> tuple[Config, Document]:
    """Read, validate and anchor one config file; DefinitionError lists every problem."""
    doc = load(file, display_path(file))
    data = {} if doc.data is None else doc.data
    if not isinstance(data, dict):
        raise DefinitionError([doc.problem((), "the config must be a mapping of keys")])
    try:
        config = Config.model_validate(data)
    except ValidationError as exc:
        raise DefinitionError(pydantic_problems(doc, exc)) from None
    config = _anchor(config, file.resolve().parent)
    problems = _overlaps(doc, config)
    if problems:
        raise DefinitionError(problems)
    return config, doc


def _anchor(config: Config, base: Path) -> Config:
    """Relative paths are relative to the config file's folder."""

    def a(p: Path) -> Path:
        return Path(os.path.normpath(base / p.expanduser()))

    inboxes = [
        i.model_copy(update={
            "path": a(i.path), "outbox": a(i.outbox), "quarantine": a(i.quarantine),
            "archive": a(i.archive) if i.archive is not None else None,
        })
        for i in config.inboxes
    ]
    return config.model_copy(update={
        "modules_path": [a(p) for p in config.modules_path],
        "jobs_path": [a(p) for p in config.jobs_path],
        "state_dir": a(config.state_dir),
        "work_dir": a(config.work_dir),
        "inboxes": inboxes,
    })


def _inside(child: Path, parent: Path) -> bool:
    return child == parent or child.is_relative_to(parent)


def _overlaps(doc: Document, config: Config) -> list[Problem]:
    """Folders that would feed results back into an inbox, or two inboxes on one path."""
    problems = []
    inboxes = config.inboxes
    for i, inbox in enumerate(inboxes):
        if inbox.on_success == "archive" and inbox.archive is None:
            problems.append(doc.problem(("inboxes", i, "on_success"), "is 'archive', so 'archive' (a folder) is required"))
        for j, other in enumerate(inboxes[:i]):
            if inbox.path == other.path:
                problems.append(doc.problem(("inboxes", i, "path"), f"inboxes[{j}] already watches {inbox.path}"))
            elif _inside(inbox.path, other.path) or _inside(other.path, inbox.path):
                problems.append(doc.problem(("inboxes", i, "path"), f"is nested with inboxes[{j}] ({other.path})"))
        for key in ("outbox", "quarantine", "archive"):
            folder = getattr(inbox, key)
            if folder is None:
                continue
            for j, other in enumerate(inboxes):
                if _inside(folder, other.path):
                    problems.append(doc.problem(("inboxes", i, key), f"{folder} is inside inboxes[{j}] ({other.path}): results would be fed back in"))
    for key in ("state_dir", "work_dir"):
        for j, other in enumerate(inboxes):
            if _inside(getattr(config, key), other.path):
                problems.append(doc.problem((key,), f"is inside inboxes[{j}] ({other.path})"))
    return problems
