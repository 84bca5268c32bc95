"""One module process: started in its own process group, logged, bounded, and stopped for sure."""

from __future__ import annotations

import collections
import errno
import os
import signal
import subprocess
import threading
import time
from pathlib import Path
from typing import Callable

from .job import EntryPlan

PROGRESS_PREFIX = b"CHUTE_PROGRESS "
LOG_LIMIT = 4 * 1024 * 1024
TAIL_LINES = 20
# A module may print megabytes without a newline: read at most this much as one "line"
# (the rest follows as more lines), and keep at most TAIL_CHARS of each in the report's tail.
LINE_LIMIT = 64 * 1024
TAIL_CHARS = 1024


class BoundedLog:
    """An append-only log file that keeps roughly its last `limit` bytes."""

    def __init__(self, path: Path, limit: int = LOG_LIMIT):
        self.path, self.limit = path, limit
        self.lock = threading.Lock()
        self.file = open(path, "ab")

    def write(self, data: bytes) -> None:
        with self.lock:
            self.file.write(data)
            if self.file.tell() > 2 * self.limit:
                self._compact()

    def _compact(self) -> None:
        self.file.flush()
        with open(self.path, "rb") as f:
            f.seek(-self.limit, os.SEEK_END)
            f.readline()  # start at a line boundary
            keep = f.read()
        self.file.close()
        tmp = self.path.with_name(self.path.name + ".compact")
        with open(tmp, "wb") as f:
            f.write(b"[chute: earlier output dropped to keep this log bounded]\n" + keep)
        os.replace(tmp, self.path)
        self.file = open(self.path, "ab")

    def close(self) -> None:
        with self.lock:
            self.file.close()


class EntryProcess:
    """One attempt of one entry: a module process in its own process group."""

    def __init__(self, plan: EntryPlan, argv: list[str], env: dict[str, str], log: BoundedLog,
                 on_progress: Callable[[float], None] | None = None):
        self.plan = plan
        self.marker = ""  # CHUTE_ENTRY of its environment, for sweep()
        self.log = log
        self.on_progress = on_progress
        self.stderr_tail: collections.deque[str] = collections.deque(maxlen=TAIL_LINES)
        self.progress = 0.0
        self.started = time.monotonic()
        # start_new_session: the module and everything it forks share a new process group
        # (and session), so the whole tree can be signalled, and a terminal's Ctrl-C
        # reaches chute, which then stops the modules itself.
        self.proc = subprocess.Popen(
            argv, cwd=plan.folder, env=env, stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True, close_fds=True,
        )
        self.pgid = self.proc.pid
        self.readers = [
            threading.Thread(target=self._read, args=(self.proc.stdout, False), daemon=True),
            threading.Thread(target=self._read, args=(self.proc.stderr, True), daemon=True),
        ]
        for t in self.readers:
            t.start()

    def _read(self, pipe, is_stderr: bool) -> None:
        for line in iter(lambda: pipe.readline(LINE_LIMIT), b""):
            if not is_stderr and line.startswith(PROGRESS_PREFIX):
                self._progress(line[len(PROGRESS_PREFIX):])
                continue
            self.log.write(line if line.endswith(b"\n") else line + b"\n")
            if is_stderr:
                self.stderr_tail.append(line[:TAIL_CHARS].decode("utf-8", "replace").rstrip("\n"))
        pipe.close()

    def _progress(self, text: bytes) -> None:
        try:
            value = min(1.0, max(0.0, float(text.strip())))
        except ValueError:
            return
        self.progress = value
        if self.on_progress is not None:
            self.on_progress(value)

    def poll(self) -> int | None:
        return self.proc.poll()

    def signal_group(self, sig: int) -> None:
        try:
            os.killpg(self.pgid, sig)
        except OSError as exc:
            if exc.errno != errno.ESRCH:
                raise

    def reap(self, grace: float = 1.0) -> None:
        """After the module exits: kill what it left in its group and drain its pipes."""
        self.signal_group(signal.SIGKILL)
        self.proc.wait()
        for t in self.readers:
            # A child that escaped the group may still hold the pipe; sweep() kills it.
            t.join(timeout=grace)

    @property
    def duration(self) -> float:
        return time.monotonic() - self.started


def stop_all(processes: list[EntryProcess], grace: float) -> None:
    """SIGTERM every group, wait up to `grace` for all, then SIGKILL whatever is left."""
    for p in processes:
        p.signal_group(signal.SIGTERM)
    deadline = time.monotonic() + grace
    for p in processes:
        try:
            p.proc.wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            pass
    for p in processes:
        p.reap(grace=0.2)  # an escaped grandchild holding the pipe is swept right after


def sweep(marker: str) -> int:
    """SIGKILL every process whose environment carries `marker` (e.g. `CHUTE_ENTRY=...`).

    Catches what a module double-forked out of its process group (setsid, daemonize):
    no process of a module may outlive its run. Returns how many were killed.
    """
    needle = marker.encode() + b"\0"
    killed = 0
    me = os.getpid()
    for name in os.listdir("/proc"):
        if not name.isdigit() or int(name) == me:
            continue
        try:
            with open(f"/proc/{name}/environ", "rb") as f:
                env = f.read()
        except OSError:
            continue
        if env.startswith(needle) or b"\0" + needle in env:
            try:
                os.kill(int(name), signal.SIGKILL)
                killed += 1
            except OSError:
                pass
    return killed
