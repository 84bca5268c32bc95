"""A process's warm launcher, kept between its runs: the Modules a pool worker, a Dask worker, `chute submit` use."""

from __future__ import annotations

import sys
import time
from collections.abc import Sequence
from concurrent.futures import Executor

from .. import logs
from ..run import Launch, RunSpec
from .client import Exit, Launcher, LauncherUnavailable

RETRY_AFTER = 600.0  # seconds before a launcher that could not start is tried again
log = logs.get("chute.worker")


class Modules:
    """This process's warm launcher, started when a run first asks for one and kept between runs.

    A launcher that cannot start is not asked again for RETRY_AFTER seconds: meanwhile
    every module is a fresh interpreter (one `launcher.unavailable` line, not one per module).
    """

    def __init__(self, via: Executor | None = None):
        self.launch: Launch | None = None
        self.launcher: Launcher | None = None
        self.broken_until = 0.0
        self.started_pid: int | None = None
        # Where spawn runs: a launcher is tied to the thread that starts it (PR_SET_PDEATHSIG), so a
        # caller whose threads come and go (a Dask worker) hands a long-lived one (an executor of 1 thread).
        self.via = via

    def for_run(self, spec: RunSpec) -> Modules | None:
        """Self, for a run whose modules are to be forked warm; None: they run fresh."""
        return self._use(spec.launch, spec.python, dict(spec.environ))

    def _use(self, launch: Launch, python: str, environ: dict[str, str]) -> Modules | None:
        if launch.mode != "warm" or time.monotonic() < self.broken_until:
            return None
        if self.launcher is None or launch != self.launch:
            self.close()
            self.launcher = Launcher(python, launch.preload, environ)
            self.launch = launch
        return self

    def _chosen(self) -> Launcher:
        if self.launcher is None:  # for_run returned None: the step engine does not ask then
            raise LauncherUnavailable("no launcher was chosen for this run")
        return self.launcher

    def spawn(self, argv: Sequence[str], cwd: str, env: dict[str, str], stdout: int, stderr: int) -> int:
        if self.via is not None:
            return self.via.submit(self._spawn, argv, cwd, env, stdout, stderr).result()
        return self._spawn(argv, cwd, env, stdout, stderr)

    def _spawn(self, argv: Sequence[str], cwd: str, env: dict[str, str], stdout: int, stderr: int) -> int:
        launcher = self._chosen()
        try:
            pid = launcher.spawn(argv, cwd, env, stdout, stderr)
        except LauncherUnavailable as exc:
            if not launcher.running:  # it cannot start: stop asking for a while
                self.broken_until = time.monotonic() + RETRY_AFTER
                log.warning("launcher.unavailable", reason=str(exc), retry_in_s=RETRY_AFTER)
            raise
        if launcher.pid != self.started_pid:
            self.started_pid = launcher.pid
            log.info("launcher.started", pid=self.started_pid, skipped=launcher.skipped or None)
        return pid

    def fileno(self) -> int:
        return self._chosen().fileno()

    def supervise(self, now: float) -> float | None:
        """Kill and replace a launcher that is stopped or does not answer (client.Launcher.supervise)."""
        launcher = self._chosen()
        pid = launcher.pid
        due = launcher.supervise(now)
        if pid is not None and launcher.pid is None:
            log.warning("launcher.frozen", pid=pid)  # its modules are reported lost next (launcher.died)
        return due

    def collect(self) -> list[Exit]:
        exits = self._chosen().collect()
        lost = [e for e in exits if e.returncode is None]
        if lost:
            log.warning("launcher.died", reason=lost[0].reason, modules=len(lost))
        return exits

    @property
    def running(self) -> bool:
        return self.launcher is not None and self.launcher.running

    @property
    def pid(self) -> int | None:
        return None if self.launcher is None else self.launcher.pid

    def warm_up(self, launch: Launch, environ: dict[str, str]) -> None:
        """Start the launcher before the first run asks for it (a module's env adds PYTHONUNBUFFERED=1)."""
        if self._use(launch, sys.executable, environ) is None:
            return
        launcher = self._chosen()
        try:
            launcher.prepare(environ | {"PYTHONUNBUFFERED": "1"})
        except LauncherUnavailable as exc:
            log.warning("launcher.unavailable", reason=str(exc), retry_in_s=None)
            return
        self.started_pid = launcher.pid
        log.info("launcher.started", pid=self.started_pid, skipped=launcher.skipped or None)

    def pids(self) -> set[int]:
        return {self.pid} if self.pid else set()

    def close(self) -> None:
        if self.launcher is not None:
            self.launcher.close()
            self.launcher = None
