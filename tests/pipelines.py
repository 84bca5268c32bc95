"""Throw-away pipelines for the runner tests: real module folders, job and config files in tmp_path.

A test module is a tiny Python script run by chute as a real subprocess. Its
body is written by the test and starts after a small prelude that gives it:

- ``ARGS``: the ``--flag value`` pairs chute passed, as a dict (``ARGS["output"]``);
- ``SYNC``: a folder of the test (``$CHUTE_TEST_SYNC``) where the module leaves
  notes for the test (``note(name, value)``) and waits for the test's
  (``wait_for(name)``): synchronisation by files, never by sleeping;
- ``MARKER``: a string unique to the test, carried in the environment of every
  module process; ``spawn_sleeper(name)`` starts a child that also carries it on
  its command line (and notes its pid as SYNC/name), ``escape_sleeper(name)`` one
  that double-forks out of the module's process group and session first, so a
  leftover process can be found through /proc either way;
- ``write(param, data)``: write an output (text or bytes).

Every process a test's modules start can be found with ``Project.leftovers()``.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import textwrap
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from chute import staging
from chute.catalog import Catalog, load_catalog
from chute.claims import new_run_id
from chute.leases import Identity
from chute.run import RunResult, RunSpec
from chute.runner import execute
from chute.systemd import module_environ

PATH_FIELDS = ("input_path", "outbox", "quarantine", "work_dir", "inbox", "claim", "archive")

CHUTE = Path(sys.executable).with_name("chute")

# File names anyone on a share may drop: none may reach a command line or break a run.
HOSTILE_NAMES = [
    "my clip (final).mp4",
    'it\'s "quoted".mp4',
    "new\nline.mp4",
    "-rf --help.mp4",
    "$(touch pwned).mp4",
    "`touch pwned`; touch pwned.mp4",
    "Übergröße 日本語 🎬.mp4",
    os.fsdecode(b"caf\xe9 latin-1.mp4"),
]
HOSTILE_IDS = ["spaces", "quotes", "newline", "dash", "dollar", "backticks", "unicode", "not-utf8"]

PRELUDE = '''\
import json, os, subprocess, sys, time
from pathlib import Path

_argv = sys.argv[1:]
ARGS = {_argv[i][2:]: _argv[i + 1] for i in range(0, len(_argv) - 1, 2)}
SYNC = Path(os.environ["CHUTE_TEST_SYNC"])
MARKER = os.environ["CHUTE_TEST_MARKER"]


def note(name, value=None):
    """Leave `value` (JSON) for the test under SYNC/name, atomically."""
    tmp = SYNC / f".{name}.{os.getpid()}"
    tmp.write_text(json.dumps(value))
    os.replace(tmp, SYNC / name)


def wait_for(name, timeout=20.0):
    """Wait until SYNC/name exists; False after `timeout` (the test then fails, it never hangs)."""
    deadline = time.monotonic() + timeout
    while not (SYNC / name).exists():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


SLEEPER = (
    "import os, sys, time\\n"
    "from pathlib import Path\\n"
    "p = Path(sys.argv[1]); t = p.with_name('.' + p.name)\\n"
    "t.write_text(str(os.getpid())); os.replace(t, p)\\n"
    "time.sleep(120)\\n"
)


def spawn_sleeper(name, **popen):
    """A child that notes its pid as SYNC/name and sleeps, with MARKER on its command line."""
    return subprocess.Popen([sys.executable, "-c", SLEEPER, str(SYNC / name), MARKER], **popen)


def escape_sleeper(name):
    """A grandchild that leaves the module's process group and session (double fork + setsid), then sleeps."""
    pid = os.fork()
    if pid == 0:
        os.setsid()
        if os.fork() == 0:
            os.execv(sys.executable, [sys.executable, "-c", SLEEPER, str(SYNC / name), MARKER])
        os._exit(0)
    os.waitpid(pid, 0)
    wait_for(name)


def write(param, data):
    mode = "wb" if isinstance(data, bytes) else "w"
    with open(ARGS[param], mode) as f:
        f.write(data)


# --- the test's body ---
'''


def sha256_of(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def read_json(path: Path) -> Any:
    return json.loads(Path(path).read_text(encoding="utf-8"))


def entry(
    module: str,
    inputs: dict[str, str] | None = None,
    outputs: dict[str, str] | None = None,
    *,
    private: tuple[str, ...] = (),
    options: dict[str, Any] | None = None,
    timeout: float | None = None,
) -> dict[str, Any]:
    """One entry of a job step: `{param: artifact name}` for inputs and outputs.

    Types come from the module's declaration; every output is public unless named in `private`.
    """
    return {
        "module": module,
        "inputs": inputs if inputs is not None else {"input": "clip.mp4"},
        "outputs": outputs if outputs is not None else {"output": f"{module}.out"},
        "private": private,
        "options": options or {},
        "timeout": timeout,
    }


@dataclass
class Project:
    """One tree under tmp_path: modules/, jobs/, config.yaml, work/, outbox/, quarantine/, sync/."""

    root: Path
    marker: str = field(default_factory=lambda: f"chute-test-{uuid.uuid4().hex}")
    launcher: Any = None  # a chute.launcher.Launcher: modules are then forked warm instead of started fresh
    declared: dict[str, tuple[dict[str, str], dict[str, str]]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for folder in (self.modules, self.jobs, self.sync):
            folder.mkdir(parents=True, exist_ok=True)
        config = {
            "modules_path": ["modules"],
            "jobs_path": ["jobs"],
            "state_dir": "state",
            "work_dir": "work",
            "workers": 1,
            "defaults": {"timeout": 30, "settle": 0.1},
            "log": {"format": "auto", "level": "warning"},
        }
        self.config.write_text(yaml.safe_dump(config, sort_keys=False))

    modules = property(lambda self: self.root / "modules")
    jobs = property(lambda self: self.root / "jobs")
    config = property(lambda self: self.root / "config.yaml")
    work = property(lambda self: self.root / "work")
    outbox = property(lambda self: self.root / "outbox")
    quarantine = property(lambda self: self.root / "quarantine")
    sync = property(lambda self: self.root / "sync")

    # --- definitions ---

    def module(
        self,
        name: str,
        body: str,
        *,
        inputs: dict[str, str] | None = None,
        outputs: dict[str, str] | None = None,
        retries: int | None = None,
        timeout: float | None = None,
        options: list[dict[str, Any]] | None = None,
    ) -> Path:
        """Write modules/<name>/ (manifest.yaml and main.py = prelude + `body`)."""
        inputs = {"input": "video"} if inputs is None else inputs
        outputs = {"output": "json"} if outputs is None else outputs
        folder = self.modules / name
        folder.mkdir()
        manifest: dict[str, Any] = {
            "name": name,
            "description": f"test module {name}",
            "entrypoint": "main.py",
            "version": "1.0",
            "inputs": [{"param_name": p, "type": t} for p, t in inputs.items()],
            "outputs": [{"param_name": p, "type": t} for p, t in outputs.items()],
        }
        if retries is not None:
            manifest["retries"] = retries
        if timeout is not None:
            manifest["timeout"] = timeout
        if options:
            manifest["options"] = options
        (folder / "manifest.yaml").write_text(yaml.safe_dump(manifest, sort_keys=False))
        (folder / "main.py").write_text(PRELUDE + textwrap.dedent(body))
        self.declared[name] = (inputs, outputs)
        return folder

    def job(
        self,
        name: str,
        steps: list[tuple[str, list[dict[str, Any]]]],
        *,
        input_type: str = "video",
        input_name: str = "clip.mp4",
    ) -> Path:
        """Write jobs/<name>.yaml; `steps` is `[(step name, [entry(...), ...]), ...]`."""
        doc = {
            "name": name,
            "version": "1.0",
            "input_artifacts": [{"param_name": "input", "type": input_type, "name": input_name}],
            "steps": [{"name": s, "entries": [self._entry(e) for e in entries]} for s, entries in steps],
        }
        file = self.jobs / f"{name}.yaml"
        file.write_text(yaml.safe_dump(doc, sort_keys=False))
        return file

    def _entry(self, e: dict[str, Any]) -> dict[str, Any]:
        ins, outs = self.declared[e["module"]]
        out: dict[str, Any] = {
            "module": e["module"],
            "input_artifacts": [{"name": a, "param_name": p, "type": ins[p]} for p, a in e["inputs"].items()],
            "output_artifacts": [
                {"name": a, "param_name": p, "type": outs[p], "public": a not in e["private"]}
                for p, a in e["outputs"].items()
            ],
        }
        if e["options"]:
            out["options"] = e["options"]
        if e["timeout"] is not None:
            out["timeout"] = e["timeout"]
        return out

    # --- running: through the library ---

    def catalog(self) -> Catalog:
        return load_catalog(self.config)

    def environ(self) -> dict[str, str]:
        """What a module gets from its parent: the daemon's environment, as chute filters it, plus ours."""
        env = module_environ(os.environ)
        env.update(CHUTE_TEST_MARKER=self.marker, CHUTE_TEST_SYNC=str(self.sync))
        return env

    def spec(self, job: str, input_path: Path, *, make_roots: bool = True, **overrides: Any) -> RunSpec:
        """A RunSpec as the daemon makes one; its outbox, quarantine and archive are made too (as the
        daemon does when it starts watching an inbox) unless `make_roots` is False."""
        cat = self.catalog()
        values: dict[str, Any] = dict(
            run_id=new_run_id(),
            job=cat.jobs[job],
            input_path=input_path,
            input_name=Path(input_path).name,
            outbox=self.outbox,
            quarantine=self.quarantine,
            work_dir=cat.config.work_dir,
            owner="test-owner",
            default_timeout=cat.config.defaults.timeout,
            host="test-host",
            environ=tuple(self.environ().items()),
            python=sys.executable,
            kill_grace=0.5,
        )
        values.update(overrides)
        for key in PATH_FIELDS:
            if values.get(key) is not None:
                values[key] = Path(values[key])
        if make_roots:
            for key in ("outbox", "quarantine", "archive"):
                if values.get(key) is not None:
                    values[key].mkdir(parents=True, exist_ok=True)
        staging.owner_dir(values["work_dir"], Identity.mine(), values["owner"])  # as the daemon does at start
        return RunSpec(**values)

    def claim(self, user_file: Path, run_id: str) -> Path:
        """Move `user_file` where the daemon's claim puts it: <inbox>/.chute/claimed/<daemon>/<run_id>/<name>."""
        claim = self.root / "inbox" / ".chute" / "claimed" / "test-daemon" / run_id
        claim.mkdir(parents=True)
        user_file.rename(claim / user_file.name)
        return claim

    def claimed_spec(self, job: str, user_file: Path, **overrides: Any) -> RunSpec:
        """A daemon's RunSpec over `user_file`, claimed first (see claim)."""
        run_id = new_run_id()
        claim = self.claim(user_file, run_id)
        inbox = self.root / "inbox"
        return self.spec(job, claim / user_file.name, run_id=run_id, claim=str(claim), inbox=str(inbox), **overrides)

    def execute(self, job: str, input_path: Path, emit=None, cancel=None, **overrides: Any) -> RunResult:
        return execute(self.spec(job, input_path, **overrides), cancel, emit, self.launcher)

    # --- running: `chute submit` as a subprocess ---

    def submit_argv(
        self, file: Path, job: str, *extra: str, outbox: Path | None = None, quarantine: Path | None = None
    ) -> list[str]:
        return [
            str(CHUTE),
            "submit",
            str(file),
            "--job",
            job,
            "--config",
            str(self.config),
            "--outbox",
            str(outbox or self.outbox),
            "--quarantine",
            str(quarantine or self.quarantine),
            *extra,
        ]

    def submit_env(self, **extra: str) -> dict[str, str]:
        env = dict(os.environ, CHUTE_TEST_MARKER=self.marker, CHUTE_TEST_SYNC=str(self.sync))
        env.update(extra)
        return env

    def submit(
        self,
        file: Path,
        job: str,
        *extra: str,
        env: dict[str, str] | None = None,
        outbox: Path | None = None,
        quarantine: Path | None = None,
    ) -> subprocess.CompletedProcess:
        return subprocess.run(
            self.submit_argv(file, job, *extra, outbox=outbox, quarantine=quarantine),
            env=env or self.submit_env(),
            cwd=self.root,
            capture_output=True,
            timeout=60,
            stdin=subprocess.DEVNULL,
        )

    # --- looking at what is left ---

    def note(self, name: str) -> Any:
        return json.loads((self.sync / name).read_text())

    def results(self, folder: Path) -> list[Path]:
        """The folders a user sees in an outbox or quarantine (hidden build folders excluded)."""
        if not folder.exists():
            return []
        return sorted(p for p in folder.iterdir() if not p.name.startswith("."))

    def hidden(self, folder: Path) -> list[Path]:
        if not folder.exists():
            return []
        return sorted(p for p in folder.iterdir() if p.name.startswith("."))

    def workspaces(self) -> list[Path]:
        """Run workspaces left in work_dir (work_dir/<owner>/<run>), owner folders themselves not counted."""
        if not self.work.exists():
            return []
        return sorted(
            ws
            for owner in self.work.iterdir()
            if owner.is_dir()
            for ws in owner.iterdir()
            if not ws.name.startswith(".")
        )

    def leftovers(self) -> list[int]:
        """Live processes (not zombies) carrying this project's marker in their environment or command line
        (the project's own warm launcher, which lives on between runs, not counted)."""
        launcher = getattr(self.launcher, "pid", None)
        return [pid for pid in marked_processes(self.marker) if pid != launcher]

    def assert_clean(self) -> None:
        """What every run leaves behind: no workspace, no hidden build folder, no module process."""
        assert self.workspaces() == []
        assert self.hidden(self.outbox) == [] and self.hidden(self.quarantine) == []
        assert self.leftovers() == []

    def kill_leftovers(self) -> list[int]:
        pids = self.leftovers()
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        return pids


def marked_processes(marker: str) -> list[int]:
    needle = marker.encode()
    found = []
    for name in os.listdir("/proc"):
        if not name.isdigit() or int(name) == os.getpid():
            continue
        try:
            with open(f"/proc/{name}/stat", "rb") as f:
                state = f.read().rsplit(b")", 1)[1].split()[0]
            if state in (b"Z", b"X"):
                continue
            with open(f"/proc/{name}/cmdline", "rb") as f:
                cmdline = f.read()
            with open(f"/proc/{name}/environ", "rb") as f:
                environ = f.read()
        except OSError:
            continue
        if needle in cmdline or needle in environ:
            found.append(int(name))
    return found


def proc_alive(pid: int) -> bool:
    """Whether `pid` is a live process (a zombie waiting to be reaped counts as gone)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            state = f.read().rsplit(b")", 1)[1].split()[0]
    except OSError:
        return False
    return state not in (b"Z", b"X")
