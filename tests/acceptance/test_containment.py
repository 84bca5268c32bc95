"""No process a module starts outlives chute, even one that hides from every marker (issue 19, item 5).

The module's grandchild double-forks, calls setsid, ignores SIGTERM and execs
`/bin/sleep` with an empty environment: no process group, session or CHUTE_OWNER
marker leads to it. Each pool worker runs in a cgroup of its own (cgroups.py), and
these tests hold chute to what that guarantees: the escapee is gone after a worker's
death, after a clean stop, and after a kill -9 of the daemon once the next daemon has
started. This machine (root, cgroup v2 at /sys/fs/cgroup/unified) allows cgroups, so
a daemon that says it could not use them fails the test instead of skipping it.

A starting daemon kills and removes the cgroups of every dead daemon of the host, whichever
test started it: these tests run alone (`serial`), or another test's daemon could sweep
what they wait for this one to sweep.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest
import yaml

from tests.harness import Daemon, Setup, drop, files, wait_until

pytestmark = pytest.mark.serial

ESCAPE_MODULE = """\
import os, shutil, signal, sys, time
args = dict(zip(sys.argv[1::2], sys.argv[2::2]))
src, dst = args["--input"], args["--output"]
pidfile = os.path.join(os.environ["CHUTE_TEST_ESCAPEE"], "escapee.pid")
with open(src) as f:
    mode = f.read().strip()
if not os.path.exists(pidfile):  # the first attempt only: a run started again just copies
    r, w = os.pipe()
    if os.fork() == 0:
        os.setsid()
        if os.fork() == 0:
            signal.signal(signal.SIGTERM, signal.SIG_IGN)  # kept across execve
            os.write(w, str(os.getpid()).encode())
            os.execve("/bin/sleep", ["sleep", "1000"], {})
        os._exit(0)
    os.close(w)
    pid = os.read(r, 32).decode()
    os.wait()
    with open(pidfile + ".tmp", "w") as f:
        f.write(pid)
    os.replace(pidfile + ".tmp", pidfile)
    if mode == "killworker":
        os.kill(os.getppid(), signal.SIGKILL)
    time.sleep(1000)
shutil.copyfile(src, dst)
"""

ESCAPE_JOB = {
    "name": "escape",
    "version": 1,
    "input_artifacts": [{"param_name": "input", "type": "blob", "name": "source.bin"}],
    "steps": [
        {
            "name": "only",
            "entries": [
                {
                    "module": "escape",
                    "input_artifacts": [{"name": "source.bin", "param_name": "input", "type": "blob"}],
                    "output_artifacts": [
                        {"name": "result.bin", "param_name": "output", "type": "blob", "public": True}
                    ],
                }
            ],
        }
    ],
}


class Escapee:
    """The process the module left, named by its pid and its start time (a reused pid is another process)."""

    def __init__(self, folder: Path):
        self.pidfile = folder / "escapee.pid"
        self.pid: int | None = None
        self.start: str | None = None

    def wait(self) -> Escapee:
        wait_until(self.pidfile.exists, 30)
        self.pid = int(self.pidfile.read_text())
        self.start = self._stat()[19]
        return self

    def _stat(self) -> list[str]:
        return Path(f"/proc/{self.pid}/stat").read_text().rpartition(")")[2].split()

    def alive(self) -> bool:
        try:
            state, *_ = fields = self._stat()
        except OSError:
            return False
        return state != "Z" and fields[19] == self.start  # a zombie no one reaped has stopped running

    def gone(self) -> bool:
        return not self.alive()

    def cleanup(self) -> None:
        if self.pid is not None and self.alive():
            os.kill(self.pid, signal.SIGKILL)


@pytest.fixture
def escape(tmp_path):
    """(setup, inbox, the folder the escapee's pid is written to, the escapee); kills it if a test fails."""
    setup = Setup(tmp_path, shutdown_timeout=1)
    module = setup.defs / "modules" / "escape"
    module.mkdir()
    (module / "main.py").write_text(ESCAPE_MODULE)
    (module / "manifest.yaml").write_text(
        yaml.safe_dump(
            {
                "name": "escape",
                "description": "leaves a process behind (test module)",
                "entrypoint": "main.py",
                "version": "1.0",
                "inputs": [{"param_name": "input", "type": "blob"}],
                "outputs": [{"param_name": "output", "type": "blob"}],
            }
        )
    )
    (setup.defs / "jobs" / "escape.yaml").write_text(yaml.safe_dump(ESCAPE_JOB, sort_keys=False))
    inbox = setup.inbox(job="escape")
    Path(inbox["path"]).mkdir(exist_ok=True)
    folder = tmp_path / "escapee"
    folder.mkdir()
    escapee = Escapee(folder)
    yield setup, inbox, folder, escapee
    escapee.cleanup()


def contained(d: Daemon) -> str:
    """The daemon's own cgroup; fails (never skips) when it says it has none: this machine allows them."""
    [ev] = d.wait_event("daemon.containment")
    assert ev["mode"] == "cgroup", f"no cgroup containment on a host that allows it: {ev}"
    return ev["cgroup"]


def test_an_escapee_of_a_daemon_killed_with_sigkill_is_gone_once_the_next_daemon_starts(escape):
    setup, inbox, folder, escapee = escape
    config = setup.write()
    env = {"CHUTE_TEST_ESCAPEE": str(folder)}
    with Daemon(config, env=env, name="killed") as d:
        killed = contained(d)
        drop(Path(inbox["path"]), "clip.bin", b"hold\n")
        escapee.wait()
        os.kill(d.pid, signal.SIGKILL)
        d.proc.wait(10)
    assert escapee.alive()  # nothing but the next daemon will find it: no marker, not a child of anyone of ours
    with Daemon(config, env=env, name="next") as d:
        contained(d)
        wait_until(escapee.gone, 20)
        # Logged once the emptied cgroup is removed, a moment after the escapee died; a start
        # also removes what other dead daemons of this host left, so only the killed one's counts.
        [removed] = d.wait_event("cgroup.removed", cgroup=killed)
        assert removed["processes"] == 1
        wait_until(lambda: files(Path(inbox["archive"])) == ["clip.bin"], 30)  # and the file is run again
        assert d.stop() == 0


def test_an_escapee_dies_with_the_pool_worker_that_ran_its_module(escape):
    setup, inbox, folder, escapee = escape
    setup.config["launcher"] = {"mode": "fresh"}  # the module's parent is the pool worker itself
    with Daemon(setup.write(), env={"CHUTE_TEST_ESCAPEE": str(folder)}) as d:
        contained(d)
        drop(Path(inbox["path"]), "clip.bin", b"killworker\n")
        escapee.wait()
        d.wait_event("executor.worker_died")
        wait_until(escapee.gone, 20)
        wait_until(lambda: files(Path(inbox["archive"])) == ["clip.bin"], 30)  # the daemon carried on
        assert d.alive()
        assert d.stop() == 0


def test_a_clean_stop_leaves_no_escapee_and_no_cgroup(escape):
    setup, inbox, folder, escapee = escape
    with Daemon(setup.write(), env={"CHUTE_TEST_ESCAPEE": str(folder)}) as d:
        cgroup = contained(d)
        drop(Path(inbox["path"]), "clip.bin", b"hold\n")
        escapee.wait()
        assert d.stop() == 0
    assert escapee.gone()
    assert not Path(cgroup).exists()
    assert files(Path(inbox["path"])) == ["clip.bin"]  # its run was stopped: the input is back in the inbox


def test_a_starting_daemon_leaves_a_live_daemons_processes_alone(escape):
    setup, inbox, folder, escapee = escape
    env = {"CHUTE_TEST_ESCAPEE": str(folder)}
    with Daemon(setup.write(), env=env) as running:
        contained(running)
        drop(Path(inbox["path"]), "clip.bin", b"hold\n")
        escapee.wait()
        with Daemon(setup.write("other", inboxes=[]), env=env, name="other") as other:
            contained(other)  # its start swept the cgroups of dead daemons: this one is alive
            assert other.events("cgroup.removed") == []
            assert other.stop() == 0
        assert escapee.alive()
        assert running.events("entry.failed") == [] and running.events("executor.worker_died") == []
        assert running.stop() == 0
    assert escapee.gone()
