"""The control socket `<state_dir>/control.sock` (contract §11): pause, resume and a status snapshot.

One JSON object per line each way, one request per connection:
`{"op": "pause", "inboxes": [PATH, ...]}` -> `{"ok": true, ...}` or `{"ok": false, "error": "..."}`.
Ops: `status` (each running run's live progress and elapsed seconds, the executor's workers); `pause` and
`resume` (no `inboxes`: all of them); `wait` (answered once nothing runs in those inboxes, or after WAIT_MAX with
`"idle": false`: the client asks again); `retry` (`"runs": [RUN_ID, ...]`: what `chute retry` does, each
run's outcome in `"results"`). It is served by
metrics_http's BoundedServer (one thread, bounded connections, a deadline on each), so nothing a
client does costs the daemon more than MAX_CONNECTIONS + 4 descriptors and one thread. The loop
thread and the server's share only `Control`'s fields, under its lock.
"""

from __future__ import annotations

import json
import os
import socket
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from . import logs, pauses
from .metrics_http import BoundedServer, Connection
from .yamlfile import did_you_mean

if TYPE_CHECKING:
    from .executors import Executor
    from .queue import Active

log = logs.get("chute.control")

SOCKET = "control.sock"
MODE = 0o660  # the service's group may steer it (chute web runs as another user of that group)
MAX_REQUEST = 65536  # bytes of one request line: every inbox of a large config named
MAX_WAITERS = 8  # `wait` requests held at once: the other slots stay free for status and pause
WAIT_MAX = 20.0  # seconds a `wait` is held before it is answered "not idle yet"
MAX_RETRIES = 2  # `retry` requests moving files at once (each on a thread of its own)
RETRY_MAX = 25.0  # seconds a `retry` is held; past it the answer says it goes on (chute web waits 30 s)
OPS = ("status", "pause", "resume", "wait", "retry")


@dataclass(frozen=True)
class Snapshot:
    """What the loop last saw: per inbox (running, queued), and the pause version it had applied."""

    version: int
    state: str
    inboxes: dict[str, tuple[int, int]]
    available: dict[str, bool] = field(default_factory=dict)


@dataclass(frozen=True)
class Pauses:
    """The paused set as the loop takes it: all of it, and what changed since the last take."""

    paused: frozenset[str]
    paused_now: frozenset[str]
    resumed_now: frozenset[str]


class Control:
    """The daemon's side: the paused set (persisted), the loop's last snapshot, and the socket."""

    def __init__(
        self,
        state_dir: Path,
        wake: threading.Event,
        clock: Callable[[], float] = time.monotonic,
        executor: Executor | None = None,  # whose runs' live progress and workers `status` shows
        retry: Callable[[Any], dict[str, Any]] | None = None,
    ):
        self.state_dir, self.wake, self.clock, self.retry = state_dir, wake, clock, retry
        self.live: Callable[[], dict[str, dict]] = executor.progress if executor else dict
        self.workers: Callable[[], list[dict]] = executor.workers if executor else list
        self.path = state_dir / SOCKET
        self.lock = threading.Lock()
        self.paused: set[str] = pauses.load(state_dir)
        self.version = 1  # bumped by every pause and resume
        self.taken: frozenset[str] = frozenset()  # the paused set the loop last took
        self.seen = 0  # the version of it
        self.inboxes: tuple[str, ...] = ()
        self.snapshot = Snapshot(0, "starting", {})
        self.started: dict[str, float] = {}  # run_id: when the loop first saw it running (clock)
        self.server: ControlServer | None = None

    def start(self) -> None:
        """Listen (a stale socket left by a killed daemon is replaced); a failure is logged, not fatal."""
        try:
            self.server = ControlServer(self.path, self)
        except OSError as exc:
            log.error("control.failed", reason=f"cannot listen on {self.path}: {exc.strerror or exc}")
            return
        self.server.start()
        log.info("control.listening", socket=str(self.path), paused=sorted(self.paused) or None)

    def close(self) -> None:
        if self.server is not None:
            self.server.close()
            self.server = None
            self.path.unlink(missing_ok=True)  # ours: we hold the state_dir's lock

    # --- the loop's thread ---

    def take(self, inboxes: list[str]) -> Pauses:
        """The paused set now (of the configured inboxes), and what changed since the last take."""
        with self.lock:
            self.inboxes = tuple(inboxes)
            paused = frozenset(p for p in self.paused if p in inboxes)
            was, self.taken = self.taken, paused
            self.seen = self.version
        return Pauses(paused, paused - was, was - paused)

    def publish(
        self,
        state: str,
        running: Iterable[Active],
        queued: Iterable[Active],
        inboxes: dict[str, tuple[bool, float | None]],
    ) -> None:
        """The loop's view after an iteration; held `wait` requests are looked at again if it changed."""
        running = list(running)
        now = self.clock()
        with self.lock:
            self.started = {a.run_id: self.started.get(a.run_id, now) for a in running}
        counts: dict[str, tuple[int, int]] = {}
        for active, n in [(a, (1, 0)) for a in running] + [(a, (0, 1)) for a in queued]:
            r, q = counts.get(str(active.inbox.path), (0, 0))
            counts[str(active.inbox.path)] = (r + n[0], q + n[1])
        available = {path: ok for path, (ok, _) in inboxes.items()}
        snap = Snapshot(self.seen, state, counts, available)
        if snap == self.snapshot:
            return
        self.snapshot = snap
        if self.server is not None:
            self.server.wakeup()

    # --- the server's thread ---

    def handle(self, request: dict[str, Any]) -> dict[str, Any]:
        """The answer to one request (a `wait` that must be held answers None from `idle`)."""
        op = request.get("op")
        if op not in OPS:
            hint = did_you_mean(str(op), OPS) if isinstance(op, str) else ""
            return _error(f"unknown op {op!r}{hint} (ops: {', '.join(OPS)})")
        named, problem = self.named(request.get("inboxes"))
        if problem:
            return _error(problem)
        if op == "status":
            return self.status()
        if op in ("pause", "resume"):
            return self._change(op, named, str(request.get("by") or "control"))
        if op == "retry":
            return self.retry(request.get("runs")) if self.retry else _error("this daemon cannot retry")
        return self.status()  # wait: the server holds it (see ControlServer)

    def status(self) -> dict[str, Any]:
        snap, paused = self.snapshot, set(self.paused)
        rows = [
            {
                "path": path,
                "paused": path in paused,
                "running": snap.inboxes.get(path, (0, 0))[0],
                "queued": snap.inboxes.get(path, (0, 0))[1],
                "available": snap.available.get(path, True),
            }
            for path in self.inboxes
        ]
        answer = {"ok": True, "pid": os.getpid(), "state": snap.state, "paused": sorted(paused), "inboxes": rows}
        return answer | {"progress": self.progress(), "workers": self.workers()}

    def progress(self) -> dict[str, dict[str, Any]]:
        """Each running run's last progress message (progress.Reporter), if any, and its elapsed seconds."""
        live, now = self.live(), self.clock()
        with self.lock:
            started = dict(self.started)
        return {run_id: {**live.get(run_id, {}), "elapsed_s": round(now - at, 1)} for run_id, at in started.items()}

    def idle(self, named: list[str], version: int) -> bool:
        """Nothing runs or waits in those inboxes, as the loop saw it after applying pause `version`."""
        snap = self.snapshot
        return snap.version >= version and all(sum(snap.inboxes.get(p, (0, 0))) == 0 for p in named)

    def named(self, inboxes: Any) -> tuple[list[str], str | None]:
        known = self.inboxes
        if inboxes is None:
            return list(known), None
        if not isinstance(inboxes, list) or not all(isinstance(p, str) for p in inboxes):
            return [], "'inboxes' must be a list of inbox paths"
        unknown = [p for p in inboxes if os.path.normpath(p) not in known]
        if unknown:
            return [], f"no inbox {unknown[0]!r}{did_you_mean(unknown[0], known)}"
        return [os.path.normpath(p) for p in inboxes], None

    def _change(self, op: str, named: list[str], by: str) -> dict[str, Any]:
        with self.lock:
            before = set(self.paused)
            self.paused = before | set(named) if op == "pause" else before - set(named)
            changed = sorted(self.paused ^ before)
            if changed:
                try:
                    pauses.save(self.state_dir, self.paused)
                except OSError as exc:
                    self.paused = before
                    return _error(f"cannot record the pause in {self.state_dir}: {exc.strerror or exc}")
                self.version += 1
            version = self.version
        for path in changed:
            log.info(f"inbox.{op}d", inbox=path, by=by)
        self.wake.set()
        return {"ok": True, "changed": changed, "paused": sorted(self.paused), "version": version}


def _error(message: str) -> dict[str, Any]:
    return {"ok": False, "error": message}


def encode(message: dict[str, Any]) -> bytes:
    return json.dumps(message).encode() + b"\n"


@dataclass(eq=False)
class _Wait:
    named: list[str]
    version: int


class ControlServer(BoundedServer):
    """The control socket on metrics_http's bounded server: one line in, one line out, then closed."""

    thread_name = "chute-control"
    where = "control socket"
    failed_event = "control.failed"

    def __init__(self, path: Path, control: Control, clock=time.monotonic):
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        # Bound aside, given its mode, then renamed in: no instant with a socket of the wrong mode, and a
        # stale one (a killed daemon's) is replaced in the same rename.
        aside = path.with_name(f".{SOCKET}.{os.getpid()}")
        try:
            aside.unlink(missing_ok=True)
            listener.bind(str(aside))
            os.chmod(aside, MODE)
            listener.listen(64)
            os.replace(aside, path)
        except OSError:
            listener.close()
            aside.unlink(missing_ok=True)
            raise
        super().__init__(listener, clock)
        self.control = control
        self.waits: dict[Connection, _Wait] = {}
        self.retries: dict[Connection, dict[str, Any] | None] = {}  # a retry's answer, None while it moves files

    def _received(self, conn: Connection) -> None:
        end = conn.request.find(b"\n")
        if end < 0:
            if len(conn.request) > MAX_REQUEST:
                self._reply(conn, _error(f"request too large (over {MAX_REQUEST} bytes)"))
            return
        if end > MAX_REQUEST:
            self._reply(conn, _error(f"request too large (over {MAX_REQUEST} bytes)"))
            return
        try:
            request = json.loads(bytes(conn.request[:end]))
        except ValueError:  # UnicodeDecodeError too
            self._reply(conn, _error("not a JSON object on one line"))
            return
        if not isinstance(request, dict):
            self._reply(conn, _error("not a JSON object on one line"))
            return
        if request.get("op") == "retry":
            self._retry(conn, request)
            return
        answer = self.control.handle(request)
        if request.get("op") != "wait" or not answer["ok"]:
            self._reply(conn, answer)
            return
        self._hold(conn, answer, request)

    def _hold(self, conn: Connection, answer: dict[str, Any], request: dict[str, Any]) -> None:
        named, _ = self.control.named(request.get("inboxes"))
        wait = _Wait(named, self.control.version)
        if self.control.idle(wait.named, wait.version):
            self._reply(conn, answer | {"idle": True})
        elif len(self.waits) >= MAX_WAITERS:
            self._reply(conn, _error(f"{MAX_WAITERS} clients are waiting already; try again"))
        else:
            conn.held, conn.deadline = True, self.clock() + WAIT_MAX
            self.waits[conn] = wait

    def _retry(self, conn: Connection, request: dict[str, Any]) -> None:
        """Answer a retry from a thread of its own, which wakes the server when it is done."""
        # It moves files (a copy across filesystems takes a while): status, pause and resume go on meanwhile.
        if len(self.retries) >= MAX_RETRIES:
            self._reply(conn, _error(f"{MAX_RETRIES} retries are under way already; try again"))
            return
        conn.held, conn.deadline = True, self.clock() + RETRY_MAX
        self.retries[conn] = None

        def move() -> None:
            try:
                answer = self.control.handle(request)
            except Exception as exc:  # the ledger locked past its timeout, a bug: one line, the daemon goes on
                log.error("control.failed", reason=f"retry: {type(exc).__name__}: {exc}")
                answer = _error(f"the retry failed: {exc}")
            with self.control.lock:
                if conn in self.retries:
                    self.retries[conn] = answer
            self.wakeup()

        threading.Thread(target=move, name="chute-control-retry", daemon=True).start()

    def _woken(self) -> None:
        with self.control.lock:
            done = [(c, a) for c, a in self.retries.items() if a is not None]
        for conn, answer in done:
            self._reply(conn, answer)
        for conn, wait in list(self.waits.items()):
            if self.control.idle(wait.named, wait.version):
                self._reply(conn, self.control.status() | {"idle": True})

    def _expired(self, conn: Connection) -> None:
        if conn in self.retries:  # the files still move; what became of each run is in the ledger then
            self._reply(conn, _error(f"the retry goes on after {RETRY_MAX:.0f} s: see chute status"))
        elif conn in self.waits:  # held long enough: the client asks again
            self._reply(conn, self.control.status() | {"idle": False})
        else:
            self._close(conn)

    def _reply(self, conn: Connection, answer: dict[str, Any]) -> None:
        self.waits.pop(conn, None)
        with self.control.lock:
            self.retries.pop(conn, None)
        self._send(conn, encode(answer))

    def _close(self, conn: Connection) -> None:
        self.waits.pop(conn, None)
        with self.control.lock:
            self.retries.pop(conn, None)
        super()._close(conn)
