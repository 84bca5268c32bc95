"""Connecting to a Dask scheduler for the executor: the client, its TLS, and Dask's own logging quieted."""

from __future__ import annotations

import logging
import os
import ssl

from distributed import Client
from distributed.diagnostics.plugin import WorkerPlugin
from distributed.security import Security
from tornado.ioloop import IOLoop

from . import dask_worker, logs
from .config import Executor as ExecutorConfig
from .errors import ChuteError

log = logs.get("chute.executor")


def first_connect(config: ExecutorConfig, loop: IOLoop, plugin: WorkerPlugin, topic: str) -> Client:
    """The first connection: a failure is a ChuteError that says why (the daemon does not start)."""
    if config.security is not None:  # a TLS file that is not there is no network problem: say which
        s = config.security
        for key, path in (("ca_file", s.ca_file), ("cert", s.cert), ("key", s.key)):
            if path is not None and not os.access(path, os.R_OK):
                raise ChuteError(f"cannot read executor.security.{key} {path}")
    try:
        return connect(config, loop, plugin, topic)
    except ssl.SSLError as exc:
        raise ChuteError(f"cannot connect to the Dask scheduler at {config.address}: TLS: {reason(exc)}") from None
    except (OSError, TimeoutError):
        raise ChuteError(
            f"cannot reach the Dask scheduler at {config.address} (executor.address) "
            f"within {config.connect_timeout:g} s"
        ) from None
    except Exception as exc:  # a malformed address, TLS files that do not load
        raise ChuteError(f"cannot connect to the Dask scheduler at {config.address}: {reason(exc)}") from None


def connect(config: ExecutorConfig, loop: IOLoop, plugin: WorkerPlugin, topic: str) -> Client:
    """A client of the scheduler, with chute's worker plugin registered and the run events relayed."""
    client = _Client(
        config.address,
        security=security(config),
        timeout=config.connect_timeout,
        set_as_default=False,
        name="chute",
        loop=loop,
    )
    try:
        try:
            client.register_plugin(plugin, name=dask_worker.PLUGIN)
        except Exception as exc:  # registered, but a worker could not set it up: the probe refuses that one
            log.warning("executor.plugin_failed", scheduler=config.address, reason=reason(exc))
        client.subscribe_topic(topic, relay)
    except BaseException:
        client.close(timeout=2)
        raise
    log.info(
        "executor.connected",
        scheduler=config.address,
        workers=len(client.scheduler_info(n_workers=-1)["workers"]),
    )
    return client


class _Client(Client):
    """Dask's client; one whose connection failed is not closed again when collected (a traceback on stderr)."""

    def __del__(self):
        if self.status == "running":
            super().__del__()


def relay(event) -> None:
    """A run event logged on a worker, logged again here (with `worker`): one log shows every run."""
    _, fields = event
    fields = dict(fields)
    fields.pop("timestamp", None)
    level, name = fields.pop("level", "info"), fields.pop("event", "run.event")
    getattr(log, level if level in ("debug", "info", "warning", "error") else "info")(name, **fields)


def security(config: ExecutorConfig) -> Security | None:
    if config.security is None:
        return None
    s = config.security
    return Security(
        tls_ca_file=str(s.ca_file),
        tls_client_cert=str(s.cert),
        tls_client_key=None if s.key is None else str(s.key),
        require_encryption=True,
    )


def reason(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def quiet_dask() -> None:
    """Dask's own lines go through chute's renderer, and only critical ones: the executor.* events say the rest."""
    # distributed's own config gives some of its loggers a level (distributed.client: warning): each is set.
    names = {"distributed", "distributed.client", "distributed.core", "distributed.comm"}
    names |= {n for n in logging.root.manager.loggerDict if n.startswith("distributed.")}
    for name in names:
        logger = logging.getLogger(name)
        logger.handlers.clear()
        logger.propagate = True
        logger.setLevel(logging.CRITICAL)
