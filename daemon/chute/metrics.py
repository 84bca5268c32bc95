"""Prometheus metrics (contract §10): served over HTTP, or written as a textfile for node_exporter.

The service calls the recording methods from its loop; each is a few dict
look-ups and never raises. With no `metrics:` in the config every method is a
no-op. The metrics live in a registry of their own (not prometheus_client's
global one), so two daemons in one test process, or a reload, never collide.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from . import __version__, logs

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry

    from .config import MetricsConfig

log = logs.get("chute.metrics")

FLUSH_INTERVAL = 5.0  # seconds between two rewrites of the textfile; node_exporter reads it on each scrape
# Run and entry durations of a media pipeline: a second (probe) to hours (a proxy of a feature film).
DURATION_BUCKETS = (0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1200, 1800, 3600, 7200, 14400)


def _never_raises(method: Callable) -> Callable:
    """A recording method that is a no-op without a config, and logs (once) instead of raising."""

    @functools.wraps(method)
    def guarded(self: Metrics, *args: Any, **kwargs: Any) -> None:
        if self.config is None:
            return
        try:
            method(self, *args, **kwargs)
        except Exception as exc:  # a metric is never worth a failed loop iteration
            if method.__name__ not in self._failed:
                self._failed.add(method.__name__)
                log.warning("metrics.failed", reason=f"{method.__name__}: {type(exc).__name__}: {exc}")

    return guarded


class Metrics:
    """chute's metrics, recorded by the service and exposed as its config says."""

    def __init__(self, config: MetricsConfig | None):
        self.config = config
        self._failed: set[str] = set()
        self._server: Any = None
        self._flushed_at = float("-inf")
        self._write_failing = False
        if config is not None:
            self._define()

    def _define(self) -> None:
        from prometheus_client import CollectorRegistry, Gauge, ProcessCollector

        r = self.registry = CollectorRegistry()
        ProcessCollector(registry=r)  # process_start_time_seconds, memory, CPU, open files
        Gauge("chute_build_info", "chute's version (always 1)", ["version"], registry=r).labels(__version__).set(1)
        self._define_runs(r)
        self._define_state(r)

    def _define_runs(self, r: CollectorRegistry) -> None:
        """Runs and entries: how they ended, how long they took, their retries; claims taken over."""
        from prometheus_client import Counter, Histogram

        # `job_name`, not `job`: Prometheus gives every target a `job` label of its own.
        job, module = "job_name", "module"
        self._runs = Counter(
            "chute_runs",
            "Runs finished, by job and final status (succeeded, failed = quarantined, released, discarded)",
            [job, "status"],
            registry=r,
        )
        self._run_seconds = Histogram(
            "chute_run_duration_seconds",
            "Run durations, claim to result, by job",
            [job],
            buckets=DURATION_BUCKETS,
            registry=r,
        )
        self._entries = Counter(
            "chute_entries",
            "Module runs (entries) finished, by job, module and status",
            [job, module, "status"],
            registry=r,
        )
        self._entry_seconds = Histogram(
            "chute_entry_duration_seconds",
            "Entry durations (all attempts), by job and module",
            [job, module],
            buckets=DURATION_BUCKETS,
            registry=r,
        )
        self._retries = Counter(
            "chute_module_retries", "Attempts of entries after a failed one", [job, module], registry=r
        )
        self._takeovers = Counter("chute_takeovers", "Claims of a dead daemon taken over", ["inbox"], registry=r)

    def _define_state(self, r: CollectorRegistry) -> None:
        """Deliveries put off, the files queued and running, the inboxes' state."""
        from prometheus_client import Counter, Gauge

        self._deferred = Counter(
            "chute_deferred_deliveries",
            "Runs put off because a folder they need was unavailable, by inbox and kind",
            ["inbox", "kind"],
            registry=r,
        )
        self._queued = Gauge("chute_files_queued", "Files claimed and waiting for a worker", registry=r)
        self._running = Gauge("chute_files_running", "Files being run", registry=r)
        self._oldest = Gauge(
            "chute_oldest_queued_file_age_seconds",
            "How long the oldest queued file has waited (0 when none waits)",
            registry=r,
        )
        self._available = Gauge(
            "chute_inbox_available",
            "1 while the inbox folder is there, 0 while it is gone (an unmounted share)",
            ["inbox"],
            registry=r,
        )
        self._scanned = Gauge(
            "chute_inbox_last_scan_timestamp_seconds",
            "Unix time of the inbox's last successful scan",
            ["inbox"],
            registry=r,
        )
        self._paused = Gauge(
            "chute_inbox_paused", "1 while the inbox is paused (chute pause): it claims nothing", ["inbox"], registry=r
        )
        self._in_schedule = Gauge(
            "chute_inbox_in_schedule",
            "1 while the inbox is inside its schedule windows (or has none); 0: it claims nothing",
            ["inbox"],
            registry=r,
        )

    def start(self) -> None:
        """listen: serve /metrics (a failure to listen is logged, and the daemon goes on without)."""
        if self.config is None or self.config.listen is None:
            return
        from .config import listen_address
        from .metrics_http import MetricsServer

        host, port = listen_address(self.config.listen)
        try:
            self._server = MetricsServer(host, port, self._render)
        except OSError as exc:  # socket.gaierror too: a host name that does not resolve
            log.error("metrics.failed", reason=f"cannot listen on {self.config.listen}: {exc.strerror or exc}")
            return
        self._server.start()
        bound = self._server.server_address
        log.info("metrics.listening", address=f"{_host(bound[0])}:{bound[1]}")

    def _render(self, accept: str) -> tuple[bytes, str]:
        """The exposition in the format the scraper accepts (OpenMetrics or Prometheus text)."""
        from prometheus_client.exposition import choose_encoder

        encoder, content_type = choose_encoder(accept)
        return encoder(self.registry), content_type

    def close(self) -> None:
        """Stop serving; a textfile gets the last values."""
        if self._server is not None:
            self._server.close()
            self._server = None
        if self.config is not None and self.config.textfile is not None:
            self._write(self.config.textfile)

    @property
    def address(self) -> tuple[str, int] | None:
        """(host, port) being served, once started with `listen`."""
        return None if self._server is None else self._server.server_address[:2]

    @_never_raises
    def run_finished(self, job: str, status: str, duration_s: float | None) -> None:
        self._runs.labels(job, status).inc()
        if duration_s is not None:
            self._run_seconds.labels(job).observe(duration_s)

    @_never_raises
    def entry_finished(self, job: str, module: str, status: str, duration_s: float, attempts: int) -> None:
        self._entries.labels(job, module, status).inc()
        self._entry_seconds.labels(job, module).observe(duration_s)
        if attempts > 1:
            self._retries.labels(job, module).inc(attempts - 1)

    @_never_raises
    def take_over(self, inbox: str) -> None:
        self._takeovers.labels(inbox).inc()

    @_never_raises
    def deferred(self, inbox: str, kind: str) -> None:
        self._deferred.labels(inbox, kind).inc()

    @_never_raises
    def queue(self, queued: int, running: int, oldest_queued_age_s: float | None) -> None:
        self._queued.set(queued)
        self._running.set(running)
        self._oldest.set(oldest_queued_age_s or 0.0)

    @_never_raises
    def inbox(
        self, inbox: str, available: bool, scanned_at: float | None, paused: bool = False, in_schedule: bool = True
    ) -> None:
        self._available.labels(inbox).set(1 if available else 0)
        self._paused.labels(inbox).set(1 if paused else 0)
        self._in_schedule.labels(inbox).set(1 if in_schedule else 0)
        if scanned_at is not None:
            self._scanned.labels(inbox).set(scanned_at)

    @_never_raises
    def forget_inbox(self, inbox: str) -> None:
        """An inbox a reload removed: its gauges go (an unavailable one would alert for ever)."""
        for gauge in (self._available, self._scanned, self._paused, self._in_schedule):
            try:
                gauge.remove(inbox)
            except KeyError:
                pass

    @_never_raises
    def flush(self, now: float) -> None:
        """textfile: rewrite it if the last write is FLUSH_INTERVAL old (`now`: time.monotonic())."""
        textfile = self.config.textfile if self.config else None
        if textfile is None or now - self._flushed_at < FLUSH_INTERVAL:
            return
        self._flushed_at = now
        self._write(textfile)

    def _write(self, path: Path) -> None:
        from prometheus_client import generate_latest

        try:
            write_atomically(path, generate_latest(self.registry))
        except OSError as exc:
            if not self._write_failing:  # once per spell of failures, not every few seconds
                log.warning("metrics.failed", reason=f"cannot write {path}: {exc.strerror or exc}")
            self._write_failing = True
            return
        self._write_failing = False


def write_atomically(path: Path, data: bytes) -> None:
    """Replace `path` by `data` in one rename: a reader sees the old file or the new one, never half.

    The temporary name is hidden and does not end in .prom, so node_exporter's
    textfile collector never reads it.
    """
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as f:
            f.write(data)
        os.chmod(tmp, 0o644)  # node_exporter runs as another user; chute's umask may be strict
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _host(host: str) -> str:
    return f"[{host}]" if ":" in host else host
