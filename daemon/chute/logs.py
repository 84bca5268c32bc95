"""Structured logs: one event per line, JSON for machines, readable lines on a TTY (contract §9)."""

from __future__ import annotations

import io
import logging
import os
import sys
from typing import IO

import structlog

from . import names

# sd-daemon(3) priority prefixes, so `journalctl -p warning` filters chute's lines.
_PRIORITY = {logging.DEBUG: 7, logging.INFO: 6, logging.WARNING: 4, logging.ERROR: 3, logging.CRITICAL: 2}


class _Formatter(structlog.stdlib.ProcessorFormatter):
    def __init__(self, *args, journal: bool, **kwargs):
        super().__init__(*args, **kwargs)
        self.journal = journal

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        if self.journal:
            return f"<{_PRIORITY.get(record.levelno, 6)}>{line}"
        return line


class _WatchdogStopNoise(logging.Filter):
    """Demotes watchdog's error about an observer stopped mid-read to debug.

    watchdog 7 logs "InotifyEmitter.queue_events() called when the thread is
    inactive" at error level when an emitter is stopped while it reads an event
    (the IN_IGNORED that removing the watch itself causes): on most clean stops
    and inbox removals. It is not an error, and `journalctl -p err` must stay
    quiet. See gorakhargosh/watchdog#963.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        if record.name.startswith("watchdog.") and str(record.msg).startswith("InotifyEmitter.queue_events() called"):
            record.levelno, record.levelname = logging.DEBUG, "DEBUG"
            return logging.getLogger("watchdog").isEnabledFor(logging.DEBUG)
        return True


def _on_journal(stream: IO[str]) -> bool:
    """Whether `stream` is the journal's stream socket, as $JOURNAL_STREAM names it (systemd.exec(5)).

    The variable is inherited by everything a service starts (a shell, a
    terminal session, `chute run > file` from a unit's script), so being set is
    not enough: its device and inode must be those of our own stream.
    """
    try:
        dev, ino = (int(part) for part in os.environ.get("JOURNAL_STREAM", "").split(":"))
        st = os.fstat(stream.fileno())
    except (ValueError, OSError, AttributeError, io.UnsupportedOperation):
        return False
    return (st.st_dev, st.st_ino) == (dev, ino)


def _use_json(fmt: str, stream: IO[str]) -> bool:
    if fmt == "auto":
        return not (hasattr(stream, "isatty") and stream.isatty())
    return fmt == "json"


def configure(fmt: str = "auto", level: str = "info", stream: IO[str] | None = None) -> None:
    """Route structlog and standard-library logging (watchdog's too) through one renderer."""
    stream = stream or sys.stdout
    as_json = _use_json(fmt, stream)
    shared: list[structlog.typing.Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    renderer = (
        structlog.processors.JSONRenderer(sort_keys=False)
        if as_json
        else structlog.dev.ConsoleRenderer(colors=hasattr(stream, "isatty") and stream.isatty())
    )
    formatter = _Formatter(
        foreign_pre_chain=[*shared, structlog.stdlib.add_logger_name],
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            structlog.processors.format_exc_info if as_json else _no_op,
            _head_first,
            _strict if as_json else _shown,
            renderer,
        ],
        journal=_on_journal(stream),
    )
    handler = logging.StreamHandler(stream)
    handler.setFormatter(formatter)
    handler.addFilter(_WatchdogStopNoise())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())
    # watchdog logs every inotify event at debug; keep it to warnings unless asked for.
    logging.getLogger("watchdog").setLevel(logging.WARNING if level != "debug" else logging.DEBUG)
    structlog.configure(
        processors=[
            *shared,
            structlog.processors.StackInfoRenderer(),
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=False,
    )


def _no_op(logger, name, event_dict):
    return event_dict


def _strict(logger, name, event_dict):
    """Every value valid UTF-8: json.dumps would write a name's undecodable byte as an escaped lone surrogate."""
    return names.strict(event_dict)


class _Shown(str):
    """A value names.shown escaped already: quoted by the console renderer, never escaped twice."""

    def __repr__(self) -> str:
        return "'" + self.replace("'", "\\'") + "'"


def _shown(logger, name, event_dict):
    """Every text value escaped for the terminal: a file name may hold an escape sequence or a newline."""
    return {key: _shown_value(value) for key, value in event_dict.items()}


def _shown_value(value):
    if not isinstance(value, str):
        return value  # the renderer writes repr(), which escapes every control
    safe = names.shown(value)
    return value if safe == value else _Shown(safe)


def _head_first(logger, name, event_dict):
    """timestamp, level and event first: what a reader of `journalctl -o cat` scans for."""
    head = {k: event_dict.pop(k) for k in ("timestamp", "level", "event") if k in event_dict}
    head.update(event_dict)
    return head


def get(name: str = "chute") -> structlog.stdlib.BoundLogger:
    return structlog.get_logger(name)
