"""`chute run` as a real subprocess on real folders, for the daemon's acceptance tests.

`Setup` writes a small module/job/config tree; `Daemon` starts `chute run` on it,
reads its JSON log lines back as events and sends it signals. At the end of its
`with` block, or of the test (tests/conftest.py), the harness stops it with SIGTERM
and fails the test for what it left behind: a process carrying its marker, a
`daemon.error`, a traceback or a line that is not JSON in its log (`Daemon(...,
allow_errors=("daemon.error",))` where a test expects one). Test modules behave by
the content of the dropped file, so one job serves many cases:

- a first line ``sleep=2.5`` makes every entry sleep that long (``CHUTE_PROGRESS`` meanwhile);
- a first line ``fail`` makes the first step's entry exit 3;
- a first line ``segv`` / ``abort`` makes it kill itself with that signal, ``killparent`` kill its parent
  (the pool worker, or the warm launcher that forked it) with SIGKILL;
- ``CHUTE_TEST_SLEEP_MAX=<seconds>`` in the daemon's environment caps every such sleep
  (a restarted daemon finishes quickly what its predecessor was stopped in).

With ``CHUTE_TEST_TRACE=<folder>`` in the daemon's environment (modules inherit
it), every entry writes ``<run_id>.<step>.start`` and ``.end`` there, holding
time.time(): `run_intervals` and `max_overlap` read them back. With
``CHUTE_TEST_ENV_DUMP=<folder>``, every entry writes the environment it was
started with to ``<run_id>.<step>.env.json`` there.

`Daemon(journal=True)` gives the daemon a $JOURNAL_STREAM naming its own stdout,
as systemd does when StandardOutput=journal; `Daemon(pid_env=("WATCHDOG_PID",))`
sets those variables to the daemon's own pid, as systemd does for WATCHDOG_PID.
`Daemon(wrap=("unshare", "--pid", "--fork", "--mount-proc"))` starts it under that command.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml
from chute.entry import sweep

CHUTE = Path(sys.executable).with_name("chute")

COPY_MODULE = """\
import os, shutil, sys, time
args = dict(zip(sys.argv[1::2], sys.argv[2::2]))
src, dst = args["--input"], args["--output"]
trace = os.environ.get("CHUTE_TEST_TRACE")
def mark(what):
    if trace:
        name = f"{os.environ['CHUTE_RUN_ID']}.{os.environ['CHUTE_STEP']}.{what}"
        with open(os.path.join(trace, name), "w") as f:
            f.write(repr(time.time()))
mark("start")
dump = os.environ.get("CHUTE_TEST_ENV_DUMP")
if dump:
    import json
    with open(os.path.join(dump, f"{os.environ['CHUTE_RUN_ID']}.{os.environ['CHUTE_STEP']}.env.json"), "w") as f:
        json.dump(dict(os.environ), f)
with open(src, "rb") as f:
    first = f.readline().strip()
if first.startswith(b"sleep="):
    total = min(float(first[6:]), float(os.environ.get("CHUTE_TEST_SLEEP_MAX", "inf")))
    end = time.monotonic() + total
    while time.monotonic() < end:
        print(f"CHUTE_PROGRESS {1 - (end - time.monotonic()) / total:.2f}", flush=True)
        time.sleep(min(0.1, max(0, end - time.monotonic())))
if first == b"killparent" and os.environ["CHUTE_STEP"] == "first":  # its worker (or warm launcher) dies
    import signal
    os.kill(os.getppid(), signal.SIGKILL)
    time.sleep(30)
if first in (b"segv", b"abort") and os.environ["CHUTE_STEP"] == "first":
    import signal
    os.kill(os.getpid(), signal.SIGSEGV if first == b"segv" else signal.SIGABRT)
if first == b"fail" and os.environ["CHUTE_STEP"] == "first":
    print("copy: this input asks to fail", file=sys.stderr)
    mark("end")
    sys.exit(3)
tmp = dst + ".partial"
shutil.copyfile(src, tmp)
os.replace(tmp, dst)
mark("end")
"""

COPY_MANIFEST = {
    "name": "copy",
    "description": "copies its input (test module)",
    "entrypoint": "main.py",
    "version": "1.0",
    "inputs": [{"param_name": "input", "type": "blob"}],
    "outputs": [{"param_name": "output", "type": "blob"}],
}

TWO_STEP_JOB = {
    "name": "twostep",
    "version": 1,
    "input_artifacts": [{"param_name": "input", "type": "blob", "name": "source.bin"}],
    "steps": [
        {
            "name": "first",
            "entries": [
                {
                    "module": "copy",
                    "input_artifacts": [{"name": "source.bin", "param_name": "input", "type": "blob"}],
                    "output_artifacts": [{"name": "middle.bin", "param_name": "output", "type": "blob"}],
                }
            ],
        },
        {
            "name": "second",
            "entries": [
                {
                    "module": "copy",
                    "input_artifacts": [{"name": "middle.bin", "param_name": "input", "type": "blob"}],
                    "output_artifacts": [
                        {"name": "result.bin", "param_name": "output", "type": "blob", "public": True}
                    ],
                }
            ],
        },
    ],
}


def copy_entry(src: str, dst: str, public: bool = True) -> dict[str, Any]:
    """A job entry running the test `copy` module from artifact `src` to `dst`."""
    return {
        "module": "copy",
        "input_artifacts": [{"name": src, "param_name": "input", "type": "blob"}],
        "output_artifacts": [{"name": dst, "param_name": "output", "type": "blob", "public": public}],
    }


def each_copy_job() -> dict[str, Any]:
    """Every `*.bin` of a folder delivery copied, once per file (`for_each`; `copy` fails on a file saying `fail`)."""
    return {
        "name": "each_copy",
        "version": 1,
        "input_artifacts": [{"param_name": "card", "type": "folder", "name": "card"}],
        "steps": [{"name": "first", "entries": [copy_entry("card", "copy.bin") | {"for_each": "*.bin"}]}],
    }


def wait_until(cond: Callable[[], Any], timeout: float = 20.0, interval: float = 0.05) -> Any:
    """Poll `cond` until it returns something truthy; AssertionError after `timeout` s."""
    deadline = time.monotonic() + timeout
    while True:
        value = cond()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout} s: {getattr(cond, '__name__', cond)}")
        time.sleep(interval)


class Setup:
    """Module and job definitions plus per-inbox folders under `root`."""

    def __init__(self, root: Path, **config: Any):
        self.root = root
        self.defs = root / "defs"
        (self.defs / "modules" / "copy").mkdir(parents=True, exist_ok=True)
        (self.defs / "jobs").mkdir(exist_ok=True)
        (self.defs / "modules" / "copy" / "main.py").write_text(COPY_MODULE)
        (self.defs / "modules" / "copy" / "manifest.yaml").write_text(yaml.safe_dump(COPY_MANIFEST))
        (self.defs / "jobs" / "twostep.yaml").write_text(yaml.safe_dump(TWO_STEP_JOB, sort_keys=False))
        self.config: dict[str, Any] = {
            "modules_path": [str(self.defs / "modules")],
            "jobs_path": [str(self.defs / "jobs")],
            "workers": 2,
            "defaults": {"settle": 0.3, "poll_interval": 0.5, "timeout": 60},
            "shutdown_timeout": 10,
            "lease_timeout": 3,
            "inboxes": [],
        }
        self.config.update(config)

    def inbox(self, name: str = "in", job: str = "twostep", **extra: Any) -> dict[str, Any]:
        """Add an inbox with its outbox, quarantine and archive under root/<name>-*; returns its entry."""
        entry = {
            "path": str(self.root / name),
            "job": job,
            "outbox": str(self.root / f"{name}-out"),
            "quarantine": str(self.root / f"{name}-quarantine"),
            "archive": str(self.root / f"{name}-archive"),
            "on_success": "archive",
        }
        # The daemon makes it at start, as it did before `create` existed; a test of a missing
        # inbox (an outage, `create: false`, the default) says so.
        entry["create"] = True
        entry.update(extra)
        self.config["inboxes"].append(entry)
        return entry

    def write(self, name: str = "chute", **override: Any) -> Path:
        """The config file for one daemon (state and work folders of its own unless overridden)."""
        cfg = {"state_dir": str(self.root / f"{name}-state"), "work_dir": str(self.root / f"{name}-work")}
        cfg.update(self.config)
        cfg.update(override)
        path = self.root / f"{name}.yaml"
        path.write_text(yaml.safe_dump(cfg, sort_keys=False))
        return path


class Daemon:
    """One `chute run` process; use as a context manager so nothing outlives the test."""

    def __init__(
        self,
        config: Path,
        env: dict[str, str] | None = None,
        name: str | None = None,
        *,
        journal: bool = False,
        pid_env: tuple[str, ...] = (),
        wrap: tuple[str, ...] = (),
        allow_errors: tuple[str, ...] = (),
    ):
        self.config = config
        self.allow_errors = allow_errors
        self.killed = False  # the test crashed it on purpose (`kill`)
        self.problems: list[str] | None = None  # what `finish` found; None until it ran
        self.name = name or config.stem
        self.log_path = config.with_name(f"{self.name}.{uuid.uuid4().hex[:6]}.log")
        self.marker = f"CHUTE_TEST_DAEMON={uuid.uuid4().hex}"
        self.env = dict(os.environ)
        self.env.pop("NOTIFY_SOCKET", None)
        self.env.update(env or {})
        self.env["CHUTE_TEST_DAEMON"] = self.marker.split("=", 1)[1]
        if journal:
            self.log_path.touch()
            st = self.log_path.stat()
            self.env["JOURNAL_STREAM"] = f"{st.st_dev}:{st.st_ino}"
        self.pid_env = pid_env
        self.wrap = wrap
        self.proc: subprocess.Popen | None = None
        self.offset = 0

    def start(self, wait: bool = True) -> Daemon:
        self.log = open(self.log_path, "ab")
        argv = [str(CHUTE), "run", "--config", str(self.config)]
        if self.pid_env:
            # A shell that sets the variables to its own pid and execs chute: the pid stays.
            argv = ["/bin/sh", "-c", "".join(f"export {v}=$$; " for v in self.pid_env) + 'exec "$0" "$@"', *argv]
        argv = [*self.wrap, *argv]
        self.proc = subprocess.Popen(
            argv,
            stdout=self.log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=self.env,
        )
        STARTED.append(self)
        if wait:
            self.wait_event("daemon.started", timeout=30)
        return self

    def __enter__(self) -> Daemon:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.finish()

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def text(self) -> str:
        return self.log_path.read_text(errors="replace")

    def events(self, name: str | None = None, **match: Any) -> list[dict[str, Any]]:
        out = []
        for line in self.text().splitlines():
            try:
                ev = json.loads(strip_priority(line))
            except ValueError:
                continue
            if not isinstance(ev, dict):
                continue
            if name is not None and ev.get("event") != name:
                continue
            if all(ev.get(k) == v for k, v in match.items()):
                out.append(ev)
        return out

    def wait_event(self, name: str, timeout: float = 20.0, count: int = 1, **match: Any) -> list[dict[str, Any]]:
        def seen():
            if self.proc is not None and self.proc.poll() is not None and len(self.events(name, **match)) < count:
                raise AssertionError(f"daemon exited ({self.proc.returncode}) before {name}:\n{self.text()[-3000:]}")
            evs = self.events(name, **match)
            return evs if len(evs) >= count else None

        return wait_until(seen, timeout)

    def daemon_pid(self) -> int:
        """The pid of `chute run` itself: under `unshare --fork` (which ignores SIGTERM and waits), its child."""
        if "--fork" not in self.wrap:
            return self.pid
        children = Path(f"/proc/{self.pid}/task/{self.pid}/children").read_text().split()
        return int(children[0]) if children else self.pid

    def signal(self, sig: int) -> None:
        """Send `sig` to the daemon (not to a wrapper such as `unshare`)."""
        assert self.proc is not None
        if self.proc.poll() is None:
            os.kill(self.daemon_pid(), sig)

    def stop(self, timeout: float = 30.0) -> int:
        """SIGTERM and wait for the exit code."""
        self.signal(signal.SIGTERM)
        assert self.proc is not None
        return self.proc.wait(timeout)

    def kill(self) -> None:
        """Crash the daemon on purpose: SIGKILL it, then every process it started, as systemd would.

        systemd's KillMode=control-group kills what a dead service leaves in its cgroup;
        here the daemon's environment marker stands for the cgroup.
        """
        if self.proc is not None and self.proc.poll() is None:
            self.killed = True
            try:
                os.kill(self.proc.pid, signal.SIGCONT)
            except OSError:
                pass
            self.proc.kill()
            self.proc.wait(10)
            sweep(self.marker)

    def finish(self, timeout: float = 60.0, grace: float = 10.0) -> list[str]:
        """The harness's final stop: SIGTERM, then what the daemon left behind; returns the problems found.

        A problem is a process carrying the daemon's marker after a clean stop, a
        daemon that did not stop on SIGTERM, a `daemon.error` event, a traceback or a
        line that is not JSON in its log, unless `allow_errors` names it (see
        `log_problems`). Runs once; the conftest fixture fails the test with them.
        """
        if self.problems is not None:
            return self.problems
        problems: list[str] = []
        if self.alive():
            assert self.proc is not None
            os.kill(self.daemon_pid(), signal.SIGCONT)  # a test may have frozen it
            self.signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                problems.append(f"{self.name}: did not stop within {timeout} s of SIGTERM; killed")
                self.kill()
        if not self.killed:
            problems += self.leftovers(grace)
        sweep(self.marker)
        if hasattr(self, "log"):
            self.log.close()
            problems += log_problems(self.name, self.text(), self.allow_errors)
        self.problems = problems
        return problems

    def leftovers(self, timeout: float = 10.0) -> list[str]:
        """Processes still carrying the daemon's marker once it exited, after `timeout` s to go."""
        try:
            wait_until(lambda: not processes_with(self.marker), timeout)
            return []
        except AssertionError:
            pass
        alive = [f"{pid} {describe(pid)}" for pid in processes_with(self.marker)]
        return [f"{self.name}: processes left behind after the daemon exited: {alive}"] if alive else []


STARTED: list[Daemon] = []  # every daemon started in this test process; the conftest fixture finishes them

ALLOWABLE = ("daemon.error", "traceback", "non-json")  # what `allow_errors` may name


def log_problems(name: str, text: str, allow: tuple[str, ...] = ()) -> list[str]:
    """What a daemon's log shows went wrong: `daemon.error` events, tracebacks, lines that are not JSON.

    `allow` names the kinds a test expects (`ALLOWABLE`); each problem quotes the offending lines.
    """
    unknown = set(allow) - set(ALLOWABLE)
    assert not unknown, f"allow_errors takes {ALLOWABLE}, not {sorted(unknown)}"
    found: dict[str, list[str]] = {kind: [] for kind in ALLOWABLE}
    for line in text.splitlines():
        if "Traceback (most recent call last)" in line:
            found["traceback"].append(line)
        try:
            ev = json.loads(strip_priority(line))
        except ValueError:
            ev = None
        if not isinstance(ev, dict):
            found["non-json"].append(line)
        elif ev.get("event") == "daemon.error":
            found["daemon.error"].append(line)
    return [
        f"{name}: {kind} in the daemon's log (expected? say allow_errors=({kind!r},)):\n" + "\n".join(lines[:20])
        for kind, lines in found.items()
        if lines and kind not in allow
    ]


def describe(pid: int) -> str:
    """A process's command line, for a message."""
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        return "(gone)"


def strip_priority(line: str) -> str:
    """A log line without its sd-daemon(3) ``<N>`` priority prefix (written when on the journal)."""
    if len(line) > 3 and line[0] == "<" and line[1].isdigit() and line[2] == ">":
        return line[3:]
    return line


def files(folder: Path) -> list[str]:
    """Names in `folder`, hidden ones (chute's own) left out; [] when it does not exist."""
    try:
        return sorted(n for n in os.listdir(folder) if not n.startswith("."))
    except FileNotFoundError:
        return []


def drop(folder: Path, name: str, data: bytes) -> Path:
    """Write a file the way a careful client does: a hidden temp name, then a rename."""
    tmp = folder / f".{name}.dropping"
    tmp.write_bytes(data)
    os.replace(tmp, folder / name)
    return folder / name


def dedent(text: str) -> str:
    return textwrap.dedent(text)


# --- reading results back: the ledger, claims, timestamps, traces ---


def state_dir_of(config: Path) -> Path:
    """The `state_dir` (where the ledger is) a config file written by `Setup.write` names."""
    return Path(yaml.safe_load(config.read_text())["state_dir"])


def ledger_runs(config: Path) -> list:
    """Every run in the ledger of the daemon run with `config` (read-only); [] before it made one."""
    from chute.ledger import FILE, Ledger

    folder = state_dir_of(config)
    if not (folder / FILE).exists():
        return []
    ledger = Ledger(folder, readonly=True)
    try:
        return ledger.active() + ledger.recent(10**9)
    finally:
        ledger.close()


def ledger_states(config: Path) -> dict[str, int]:
    """How many runs are in each state, e.g. {"succeeded": 3, "failed": 1}."""
    counts: dict[str, int] = {}
    for run in ledger_runs(config):
        counts[run.state.value] = counts.get(run.state.value, 0) + 1
    return counts


def status_json(config: Path, limit: int = 1000) -> dict[str, Any]:
    """`chute status --json` as a user runs it."""
    proc = subprocess.run(
        [str(CHUTE), "status", "--json", "--limit", str(limit), "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def exact_name(obj: dict[str, Any], key: str) -> str:
    """A name as chute's JSON records it (a manifest's input, a `status --json` row), as os.fsdecode gives it:
    from `{key}_b64` (its exact bytes) when the name is not UTF-8, else `{key}` itself."""
    if f"{key}_b64" in obj:
        return os.fsdecode(base64.b64decode(obj[f"{key}_b64"]))
    return obj[key]


def logged_name(name: str) -> str:
    """`name` as a JSON log line holds it: each byte that is not UTF-8 as the text \\xNN."""
    return os.fsencode(name).decode("utf-8", "backslashreplace")


def claimed_inputs(inbox: Path) -> list[Path]:
    """Inputs sitting in `inbox`'s claimed folders (markers, which start with a dot, left out)."""
    root = inbox / ".chute" / "claimed"
    if not root.exists():
        return []
    return sorted(p for p in root.rglob("*") if p.is_file() and not p.name.startswith("."))


def sha256(path: Path) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def event_time(ev: dict[str, Any]) -> float:
    """An event's `timestamp` (UTC ISO 8601) as seconds since the epoch, comparable with time.time()."""
    from datetime import datetime

    return datetime.fromisoformat(ev["timestamp"]).timestamp()


def run_intervals(trace: Path) -> dict[str, tuple[float, float]]:
    """From a CHUTE_TEST_TRACE folder: each run's (first entry's start, last entry's end)."""
    starts: dict[str, list[float]] = {}
    ends: dict[str, list[float]] = {}
    for p in trace.iterdir():
        run_id, _step, what = p.name.rsplit(".", 2)
        (starts if what == "start" else ends).setdefault(run_id, []).append(float(p.read_text()))
    return {r: (min(starts[r]), max(ends.get(r, starts[r]))) for r in starts}


def max_overlap(intervals: dict[str, tuple[float, float]]) -> int:
    """The most intervals open at one instant (an end at the same instant as a start comes first)."""
    edges = sorted([(s, 1) for s, _ in intervals.values()] + [(e, -1) for _, e in intervals.values()])
    most = now = 0
    for _, delta in edges:
        now += delta
        most = max(most, now)
    return most


# --- resilience: exactly-once checks, leftover processes, systemd's notify socket ---


def assert_processed_once(inbox: dict[str, Any], inputs: dict[str, bytes]) -> None:
    """Every input exactly once: archived unchanged, one result folder each, nothing else anywhere.

    `inbox` is an entry from `Setup.inbox` (the two-step copy job, `on_success: archive`);
    `inputs` maps each dropped name to its content. Result folders are named for the
    inputs' stems, so the names in `inputs` need distinct stems.
    """
    path, outbox, archive = Path(inbox["path"]), Path(inbox["outbox"]), Path(inbox["archive"])
    quarantine = Path(inbox["quarantine"])
    assert files(path) == [], "inputs left in the inbox"
    assert claimed_inputs(path) == [], "inputs left claimed"
    assert files(quarantine) == [], "quarantined"
    assert files(archive) == sorted(inputs), "archive: missing or duplicate inputs"
    for name, data in inputs.items():
        assert (archive / name).read_bytes() == data, f"archived {name} differs from what was dropped"
    results = {Path(n).stem: n for n in inputs}
    assert files(outbox) == sorted(results), "outbox: missing or duplicate result folders"
    for stem, name in results.items():
        assert files(outbox / stem) == ["manifest.json", "result.bin"], stem
        assert sha256(outbox / stem / "result.bin") == hashlib.sha256(inputs[name]).hexdigest(), stem
        manifest = json.loads((outbox / stem / "manifest.json").read_text())
        assert (manifest["status"], manifest["input"]["name"]) == ("succeeded", name)
        assert manifest["input"]["sha256"] == hashlib.sha256(inputs[name]).hexdigest()
    leftovers = [
        p.name
        for folder in (outbox, quarantine, archive)
        if folder.exists()
        for p in folder.iterdir()
        if p.name.startswith(".chute-")
    ]
    assert leftovers == [], "hidden build or copy folders left behind"


def processes_with(marker: str) -> list[int]:
    """Pids of live processes whose environment holds `marker` (e.g. a Daemon's `marker`)."""
    needle = marker.encode() + b"\0"
    found = []
    for name in os.listdir("/proc"):
        if not name.isdigit() or int(name) == os.getpid():
            continue
        try:
            env = Path(f"/proc/{name}/environ").read_bytes()
        except OSError:
            continue
        if env.startswith(needle) or b"\0" + needle in env:
            found.append(int(name))
    return found


def bind_notify_socket(kind: str = "abstract", folder: Path | None = None) -> tuple[socket.socket, str]:
    """A bound AF_UNIX datagram socket standing in for systemd's, and its $NOTIFY_SOCKET value.

    `kind` "path" binds a file in `folder`; "abstract" an "@name" (no file, no 108-byte limit).
    """
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    if kind == "path":
        assert folder is not None
        address = str(folder / "notify.sock")
        sock.bind(address)
    else:
        address = f"@chute-test-{uuid.uuid4().hex}"
        sock.bind(b"\0" + address[1:].encode())
    return sock, address


class NotifySocket:
    """A bound AF_UNIX datagram socket standing in for systemd: `address` goes into $NOTIFY_SOCKET.

    An abstract address (no file, no 108-byte path limit); `messages()` returns every
    datagram received so far, in order.
    """

    def __init__(self) -> None:
        self.sock, self.address = bind_notify_socket()
        self.sock.setblocking(False)
        self.received: list[str] = []

    def messages(self) -> list[str]:
        while True:
            try:
                self.received.append(self.sock.recv(65536).decode())
            except BlockingIOError:
                return self.received

    def wait_for(self, assignment: str, timeout: float = 20.0) -> int:
        """Until a datagram holds the line `assignment` (e.g. "STOPPING=1"); returns its index."""

        def seen():
            found = [i for i, m in enumerate(self.messages()) if assignment in m.splitlines()]
            return found[0] + 1 if found else None

        return wait_until(seen, timeout) - 1

    def close(self) -> None:
        self.sock.close()
