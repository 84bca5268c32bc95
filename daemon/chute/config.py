"""The daemon's configuration (contract §4): one YAML file, validated into frozen models."""

from __future__ import annotations

import ipaddress
import os
import re
from pathlib import Path
from typing import Annotated, Literal, get_args

from pydantic import AfterValidator, ConfigDict, Field, model_validator

from .errors import ChuteError
from .model import Frozen
from .ordering import Order
from .schedule import Window, parse, parse_all

SEARCH_ORDER = (Path("config.yaml"), Path("/etc/chute/config.yaml"))


def _bundled() -> Path:
    """The folder of the bundled modules, jobs and config.example.yaml.

    Installed from a wheel they are package data in chute/bundled/ (see
    pyproject.toml); in a source checkout (or an editable install) they are at
    the top of the tree, two folders above this file.
    """
    here = Path(__file__).resolve().parent
    packaged = here / "bundled"
    return packaged if (packaged / "config.example.yaml").is_file() else here.parents[1]


BUNDLED = _bundled()
# The embedded default: config.example.yaml. Its modules_path and jobs_path are
# the bundled ones; its other folders (./var/...) are under the current folder.
EMBEDDED_DEFAULT = BUNDLED / "config.example.yaml"


def _no_nul(path: Path) -> Path:
    # YAML's "\0" escape would otherwise pass here and crash the daemon at its first os call.
    if "\x00" in str(path):
        raise ValueError("a path cannot contain a NUL character")
    return path


FolderPath = Annotated[Path, AfterValidator(_no_nul)]


class Security(Frozen):
    """TLS for a Dask cluster: the CA that signed the cluster's certificates, and this daemon's own."""

    ca_file: FolderPath
    cert: FolderPath
    key: FolderPath | None = None  # when the key is not in the cert file


class Executor(Frozen):
    kind: Literal["local", "dask"] = "local"
    address: str | None = None  # dask: the scheduler, tcp://host:8786 or tls://host:8786
    security: Security | None = None  # dask: TLS certificates (then the address is tls://)
    connect_timeout: float = Field(default=10, gt=0)  # dask: seconds to reach the scheduler at start

    @model_validator(mode="after")
    def _dask_needs_address(self) -> Executor:
        if self.kind == "dask" and not self.address:
            raise ValueError("kind 'dask' needs 'address': the scheduler, e.g. tcp://host:8786")
        if self.security is not None and self.address and not self.address.startswith("tls://"):
            raise ValueError("with 'security' (TLS), 'address' must start with tls://")
        if self.security is None and self.address and self.address.startswith("tls://"):
            raise ValueError("a tls:// address needs 'security': the CA file and this daemon's certificate")
        return self


class LauncherConfig(Frozen):
    mode: Literal["warm", "fresh"] = "warm"
    preload: list[str] = Field(default_factory=lambda: ["chute.modkit", "av", "numpy", "PIL.Image"])


class Defaults(Frozen):
    timeout: float = Field(default=3600, gt=0)
    settle: float = Field(default=2.0, ge=0)
    poll_interval: float = Field(default=5.0, gt=0)
    rescan_interval: float = Field(default=60.0, gt=0)


class LogConfig(Frozen):
    format: Literal["auto", "json", "console"] = "auto"
    level: Literal["debug", "info", "warning", "error"] = "info"


class LedgerConfig(Frozen):
    keep_days: int | None = Field(
        default=90, ge=1, description="Days finished runs stay in the ledger (null: forever); queued and running stay"
    )


def _window(text: str) -> str:
    parse(text)  # ValueError: what is wrong with it
    return text


def _schedule(windows: list[str] | None) -> list[str] | None:
    if windows is not None and not windows:
        raise ValueError("is empty: leave it out (always open) or list windows such as 'Mon-Fri 20:00-06:00'")
    return windows


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
    # Off by default: a missing root is an unmounted share, never a folder to make on the mount point (issue 21).
    create: bool = Field(default=False, description="Create the inbox at start if missing (else: an outage)")
    priority: int = Field(default=0, description="With backlogs in several inboxes, the higher is claimed first")
    order: Order = Field(default="oldest", description="Which of this inbox's settled files is claimed first")
    schedule: Annotated[list[Annotated[str, AfterValidator(_window)]] | None, AfterValidator(_schedule)] = Field(
        default=None,
        description="Local-time windows to claim in, such as 'Mon-Fri 20:00-06:00' or 'Sat-Sun' (default: always)",
    )

    def windows(self) -> tuple[Window, ...] | None:
        """The schedule, parsed (None: always open)."""
        return None if self.schedule is None else parse_all(tuple(self.schedule))


NotifyEvent = Literal["run.published", "run.quarantined", "inbox.unavailable", "daemon.error"]
NOTIFY_EVENTS: tuple[str, ...] = get_args(NotifyEvent)


def _apprise_url(url: str) -> str:
    from .apprise_urls import url_problem  # imported here: Apprise loads its plugins only when a config has targets

    problem = url_problem(url)
    if problem:
        raise ValueError(problem)
    return url


class NotifyTarget(Frozen):
    """One Apprise URL, told about some events of some inboxes."""

    url: Annotated[str, AfterValidator(_apprise_url)] = Field(
        description="An Apprise URL: mailto://, slack://, msteams://, discord://, ntfy://, gotify://, json://..."
    )
    events: list[NotifyEvent] = Field(
        default_factory=lambda: list(get_args(NotifyEvent)),
        min_length=1,
        description="What to tell about (default: all four)",
    )
    inboxes: list[FolderPath] | None = Field(default=None, description="Only these inboxes' events (default: all)")


_HOST_LABEL = re.compile(r"(?!-)[A-Za-z0-9-]{1,63}(?<!-)")


def listen_address(value: str) -> tuple[str, int]:
    """HOST:PORT split into what bind(2) takes; ValueError for anything that cannot be bound.

    An IPv6 address is written in brackets ([::1]:9464); the brackets must hold
    one (`[]` and `[127.0.0.1]` are not addresses), and an IPv6 address without
    them is ambiguous with the port. A host name must be one by RFC 1123, and
    one that is all digits and dots must be an IPv4 address.
    """
    host, sep, port = value.rpartition(":")
    if not sep or not host or not re.fullmatch(r"[0-9]{1,5}", port) or int(port) > 65535:
        raise ValueError("must be HOST:PORT, with a port from 0 to 65535")
    if host.startswith("[") or host.endswith("]"):
        inner = host[1:-1] if host.startswith("[") and host.endswith("]") else ""
        try:
            ipaddress.IPv6Address(inner)
        except ValueError:
            raise ValueError(f"cannot be bound: {host} is not an IPv6 address in brackets") from None
        return inner, int(port)
    if ":" in host:
        raise ValueError(f"cannot be bound: an IPv6 address needs brackets, [{host}]:{port}")
    if re.fullmatch(r"[0-9.]+", host):
        try:
            ipaddress.IPv4Address(host)
        except ValueError:
            raise ValueError(f"cannot be bound: {host} is not an IPv4 address") from None
    elif len(host) > 253 or not all(_HOST_LABEL.fullmatch(label) for label in host.removesuffix(".").split(".")):
        raise ValueError(f"cannot be bound: {host!r} is not a host name or an IP address")
    return host, int(port)


def _listen(value: str) -> str:
    try:
        listen_address(value)
    except ValueError as exc:
        raise ValueError(f"{value!r} {exc} (e.g. 127.0.0.1:9464, 0.0.0.0:9464 or [::]:9464)") from None
    return value


class MetricsConfig(Frozen):
    """Prometheus metrics: served over HTTP (`listen`) or written for node_exporter (`textfile`)."""

    model_config = ConfigDict(json_schema_extra={"oneOf": [{"required": ["listen"]}, {"required": ["textfile"]}]})

    listen: Annotated[str, AfterValidator(_listen)] | None = Field(
        default=None, description="HOST:PORT to serve /metrics on, e.g. 127.0.0.1:9464"
    )
    textfile: FolderPath | None = Field(
        default=None, description="A *.prom file for node_exporter's textfile collector, rewritten atomically"
    )

    @model_validator(mode="after")
    def _one_of(self) -> MetricsConfig:
        if (self.listen is None) == (self.textfile is None):
            raise ValueError("give exactly one of 'listen' (HOST:PORT) or 'textfile' (a path)")
        return self


class WebConfig(Frozen):
    """`chute web` (contract §13): where it listens, its token, and the Host names it answers to."""

    listen: Annotated[str, AfterValidator(_listen)] = Field(
        default="127.0.0.1:8765", description="HOST:PORT of the web page; without a token only a loopback address"
    )
    token_file: FolderPath | None = Field(
        default=None, description="A file (mode 0600) holding the token; else $CREDENTIALS_DIRECTORY/chute-web-token"
    )
    allowed_hosts: list[str] = Field(
        default_factory=list, description="Host names the page answers to, besides loopback names and the listen host"
    )


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
    work_reserve_mb: float = Field(default=256, ge=0)
    launcher: LauncherConfig = Field(default_factory=LauncherConfig)
    notify: list[NotifyTarget] = Field(default_factory=list)
    metrics: MetricsConfig | None = None
    web: WebConfig = Field(default_factory=WebConfig)
    log: LogConfig = Field(default_factory=LogConfig)
    ledger: LedgerConfig = Field(default_factory=LedgerConfig)
    inboxes: list[Inbox] = Field(default_factory=list)

    @property
    def work_reserve(self) -> int:
        """Bytes that must stay free in work_dir: no run starts (and no file is claimed) below it."""
        return int(self.work_reserve_mb * 1024 * 1024)

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
