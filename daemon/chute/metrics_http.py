"""The /metrics HTTP endpoint: one thread, a bounded number of connections, deadlines on each.

prometheus_client's `start_http_server` keeps a thread and a descriptor per
connection for as long as the client likes: 1,100 idle connections used up the
daemon's descriptors and stopped every inbox (issue #19). Here one thread
serves every connection with `selectors`; at most MAX_CONNECTIONS are open at
once (a new one closes the oldest that has not sent its request yet); a client
has READ_TIMEOUT seconds from its connect to send a request of at most
MAX_REQUEST bytes, and WRITE_TIMEOUT to take the answer. Whatever clients do,
the daemon spends at most MAX_CONNECTIONS + 4 descriptors and one thread here.
`BoundedServer` is that machinery alone; the control socket (control.py) serves on it too.
"""

from __future__ import annotations

import selectors
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from . import logs
from .errors import resources_fields, short_of_resources

log = logs.get("chute.metrics")

MAX_CONNECTIONS = 16  # a Prometheus server or two scrape with one connection each
READ_TIMEOUT = 5.0  # seconds from connect to a whole request: an idle or dribbling client is closed
WRITE_TIMEOUT = 10.0  # seconds for a client to take the answer
MAX_REQUEST = 8192  # bytes of request line and headers (a scrape sends about 200)
ACCEPT_BACKOFF = 0.5  # seconds without accepting after the process ran out of descriptors
JOIN_TIMEOUT = 5.0
Render = Callable[[str], tuple[bytes, str]]  # the Accept header -> (body, content type)


@dataclass(eq=False)
class Connection:
    sock: socket.socket
    deadline: float
    request: bytearray = field(default_factory=bytearray)
    answer: memoryview | None = None  # set once the request is read: what is left to send
    held: bool = False  # its whole request is in and its answer comes later (never closed to make room)


class BoundedServer:
    """One thread serving a listening socket with `selectors`: bounded connections, a deadline on each.

    A subclass parses what a connection sent in `_received` and answers with `_send`.
    """

    thread_name = "chute-metrics"
    where = "metrics endpoint"  # in daemon.resources events
    failed_event = "metrics.failed"
    max_connections = MAX_CONNECTIONS
    read_timeout, write_timeout = READ_TIMEOUT, WRITE_TIMEOUT

    def __init__(self, listener: socket.socket, clock=time.monotonic):
        self.clock = clock
        self.listener = listener
        self.listener.setblocking(False)
        self.server_address = self.listener.getsockname()
        self.selector = selectors.DefaultSelector()
        self.selector.register(self.listener, selectors.EVENT_READ)
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self.selector.register(self._wake_r, selectors.EVENT_READ)
        self.connections: dict[socket.socket, Connection] = {}  # in the order they were accepted
        self._stopping = False
        self._accept_paused_until: float | None = None
        self._short = False  # out of descriptors at the last accept (logged once per spell)
        self.thread = threading.Thread(target=self._serve, name=self.thread_name, daemon=True)

    def start(self) -> None:
        self.thread.start()

    def wakeup(self) -> None:
        """Make the server's thread look again at once (`_woken` runs there)."""
        try:
            self._wake_w.send(b"x")
        except OSError:
            pass  # its buffer is full: a wake-up is already pending

    def close(self) -> None:
        """Stop serving and close every socket."""
        self._stopping = True
        self.wakeup()
        if self.thread.is_alive():
            self.thread.join(JOIN_TIMEOUT)
        for conn in list(self.connections.values()):
            self._close(conn)
        self.selector.close()
        for sock in (self.listener, self._wake_r, self._wake_w):
            sock.close()

    # --- what a subclass says ---

    def _received(self, conn: Connection) -> None:
        """`conn.request` grew: answer it (`_send`) once it is whole."""
        raise NotImplementedError

    def _woken(self) -> None:
        """Someone called wakeup()."""

    # --- the server's thread ---

    def _serve(self) -> None:
        while not self._stopping:
            now = self.clock()
            self._expire(now)
            for key, events in self.selector.select(self._timeout(now)):
                if self._stopping:
                    break
                try:
                    if key.fileobj is self.listener:
                        self._accept(self.clock())
                    elif key.fileobj is self._wake_r:
                        self._wake_r.recv(64)
                        self._woken()
                    elif events & selectors.EVENT_READ:
                        self._read(key.data)
                    else:
                        self._write(key.data)
                except Exception as exc:  # a bug here must not stop serving for good
                    log.warning(self.failed_event, reason=f"serving the {self.where}: {type(exc).__name__}: {exc}")
                    if isinstance(key.data, Connection):
                        self._close(key.data)

    def _timeout(self, now: float) -> float | None:
        due = [c.deadline for c in self.connections.values()]
        if self._accept_paused_until is not None:
            due.append(self._accept_paused_until)
        return max(0.0, min(due) - now) if due else None

    def _expire(self, now: float) -> None:
        for conn in [c for c in self.connections.values() if c.deadline <= now]:
            self._expired(conn)  # idle, dribbling, or not reading its answer
        if self._accept_paused_until is not None and now >= self._accept_paused_until:
            self._accept_paused_until = None
            self.selector.register(self.listener, selectors.EVENT_READ)

    def _expired(self, conn: Connection) -> None:
        self._close(conn)

    def _accept(self, now: float) -> None:
        # Up to max_connections at a time, so a flood of connects still lets the loop see deadlines.
        for _ in range(self.max_connections):
            try:
                sock, _ = self.listener.accept()
            except BlockingIOError:
                break
            except OSError as exc:
                if short_of_resources(exc):
                    # The connection stays in the kernel's backlog; the listener is readable until then, so
                    # stop watching it a while rather than spin (accept(2), "EMFILE").
                    if not self._short:
                        log.error("daemon.resources", where=self.where, **resources_fields(exc))
                    self._short = True
                    self.selector.unregister(self.listener)
                    self._accept_paused_until = now + ACCEPT_BACKOFF
                    return
                continue  # ECONNABORTED and the like: that client gave up
            self._short = False
            if len(self.connections) >= self.max_connections and not self._make_room():
                sock.close()  # every slot is sending an answer: this client tries again
                continue
            sock.setblocking(False)
            conn = Connection(sock, now + self.read_timeout)
            self.connections[sock] = conn
            self.selector.register(sock, selectors.EVENT_READ, conn)

    def _make_room(self) -> bool:
        """Close the oldest connection that has not sent a whole request (idle clients make way for scrapes)."""
        for conn in self.connections.values():
            if conn.answer is None and not conn.held:
                self._close(conn)
                return True
        return False

    def _read(self, conn: Connection) -> None:
        try:
            data = conn.sock.recv(4096)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:
            self._close(conn)
            return
        if conn.held or conn.answer is not None:
            return  # more after its whole request: not read (it is answered, then closed)
        conn.request += data
        self._received(conn)

    def _send(self, conn: Connection, answer: bytes) -> None:
        """Send `answer`, then close the connection (the client has write_timeout to take it)."""
        conn.held = False
        conn.answer = memoryview(answer)
        conn.deadline = self.clock() + self.write_timeout
        self.selector.modify(conn.sock, selectors.EVENT_WRITE, conn)
        self._write(conn)

    def _write(self, conn: Connection) -> None:
        assert conn.answer is not None
        try:
            sent = conn.sock.send(conn.answer)
        except BlockingIOError:
            return
        except OSError:
            self._close(conn)
            return
        conn.answer = conn.answer[sent:]
        if not conn.answer:
            try:
                conn.sock.shutdown(socket.SHUT_WR)  # the client reads the end of the answer, then EOF
            except OSError:
                pass
            self._close(conn)

    def _close(self, conn: Connection) -> None:
        if self.connections.pop(conn.sock, None) is None:
            return
        try:
            self.selector.unregister(conn.sock)
        except (KeyError, ValueError):
            pass
        conn.sock.close()


class MetricsServer(BoundedServer):
    """Serves `render()` on GET / and GET /metrics at `host:port` (`port` 0: any free port)."""

    def __init__(self, host: str, port: int, render: Render, clock=time.monotonic):
        family, _, _, _, address = socket.getaddrinfo(
            host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )[0]
        listener = socket.socket(family, socket.SOCK_STREAM)
        try:
            listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            listener.bind(address)
            listener.listen(64)
        except OSError:
            listener.close()
            raise
        super().__init__(listener, clock)
        self.render = render
        self._render_failing = False

    def _received(self, conn: Connection) -> None:
        end = conn.request.find(b"\r\n\r\n")
        if end < 0:
            end = conn.request.find(b"\n\n")
        if end < 0:
            if len(conn.request) > MAX_REQUEST:
                self._answer(conn, 431, b"request header fields too large\n", "text/plain; charset=utf-8")
            return
        if end > MAX_REQUEST:
            self._answer(conn, 431, b"request header fields too large\n", "text/plain; charset=utf-8")
            return
        self._respond(conn, bytes(conn.request[:end]))

    def _respond(self, conn: Connection, head: bytes) -> None:
        text = "text/plain; charset=utf-8"
        lines = head.decode("latin-1").replace("\r\n", "\n").split("\n")
        parts = lines[0].split()
        if len(parts) != 3 or not parts[2].startswith("HTTP/1."):
            self._answer(conn, 400, b"bad request\n", text)
            return
        method, target, _ = parts
        if method not in ("GET", "HEAD"):
            self._answer(conn, 405, b"only GET and HEAD\n", text, extra="Allow: GET, HEAD\r\n")
            return
        if target.partition("?")[0] not in ("/", "/metrics"):
            self._answer(conn, 404, b"not found: the metrics are at /metrics\n", text)
            return
        accept = ""
        for line in lines[1:]:
            name, _, value = line.partition(":")
            if name.strip().lower() == "accept":
                accept = value.strip()
        try:
            body, content_type = self.render(accept)
        except Exception as exc:  # a collector failed (e.g. /proc unreadable while short of descriptors)
            if not self._render_failing:
                log.warning("metrics.failed", reason=f"rendering /metrics: {type(exc).__name__}: {exc}")
            self._render_failing = True
            self._answer(conn, 500, b"the metrics could not be read\n", text)
            return
        self._render_failing = False
        self._answer(conn, 200, body, content_type, head_only=method == "HEAD")

    def _answer(
        self,
        conn: Connection,
        status: int,
        body: bytes,
        content_type: str,
        *,
        extra: str = "",
        head_only: bool = False,
    ) -> None:
        reason = {
            200: "OK",
            400: "Bad Request",
            404: "Not Found",
            405: "Method Not Allowed",
            431: "Request Header Fields Too Large",
            500: "Internal Server Error",
        }[status]
        header = (
            f"HTTP/1.1 {status} {reason}\r\nContent-Type: {content_type}\r\nContent-Length: {len(body)}\r\n"
            f"{extra}Connection: close\r\n\r\n"
        ).encode("latin-1")
        self._send(conn, header + (b"" if head_only else body))
