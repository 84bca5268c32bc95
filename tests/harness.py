"""`chute run` as a real subprocess on real folders, for the daemon's acceptance tests.

`Setup` writes a small module/job/config tree; `Daemon` starts `chute run` on it,
reads its JSON log lines back as events, sends it signals, and on exit leaves no
process behind. Test modules behave by the content of the dropped file, so one
job serves many cases:

- a first line ``sleep=2.5`` makes every entry sleep that long (``CHUTE_PROGRESS`` meanwhile);
- a first line ``fail`` makes the first step's entry exit 3.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
import uuid
from pathlib import Path
from typing import Any, Callable

import yaml

from chute.entry import sweep

CHUTE = Path(sys.executable).with_name("chute")

COPY_MODULE = '''\
import os, shutil, sys, time
args = dict(zip(sys.argv[1::2], sys.argv[2::2]))
src, dst = args["--input"], args["--output"]
with open(src, "rb") as f:
    first = f.readline().strip()
if first.startswith(b"sleep="):
    total = float(first[6:])
    end = time.monotonic() + total
    while time.monotonic() < end:
        print(f"CHUTE_PROGRESS {1 - (end - time.monotonic()) / total:.2f}", flush=True)
        time.sleep(min(0.1, max(0, end - time.monotonic())))
if first == b"fail" and os.environ["CHUTE_STEP"] == "first":
    print("copy: this input asks to fail", file=sys.stderr)
    sys.exit(3)
tmp = dst + ".partial"
shutil.copyfile(src, tmp)
os.replace(tmp, dst)
'''

COPY_MANIFEST = {
    "name": "copy", "description": "copies its input (test module)", "entrypoint": "main.py", "version": "1.0",
    "inputs": [{"param_name": "input", "type": "blob"}], "outputs": [{"param_name": "output", "type": "blob"}],
}

TWO_STEP_JOB = {
    "name": "twostep", "version": 1,
    "input_artifacts": [{"param_name": "input", "type": "blob", "name": "source.bin"}],
    "steps": [
        {"name": "first", "entries": [{"module": "copy",
            "input_artifacts": [{"name": "source.bin", "param_name": "input", "type": "blob"}],
            "output_artifacts": [{"name": "middle.bin", "param_name": "output", "type": "blob"}]}]},
        {"name": "second", "entries": [{"module": "copy",
            "input_artifacts": [{"name": "middle.bin", "param_name": "input", "type": "blob"}],
            "output_artifacts": [{"name": "result.bin", "param_name": "output", "type": "blob", "public": True}]}]},
    ],
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
            "path": str(self.root / name), "job": job, "outbox": str(self.root / f"{name}-out"),
            "quarantine": str(self.root / f"{name}-quarantine"), "archive": str(self.root / f"{name}-archive"),
            "on_success": "archive",
        }
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

    def __init__(self, config: Path, env: dict[str, str] | None = None, name: str | None = None):
        self.config = config
        self.name = name or config.stem
        self.log_path = config.with_name(f"{self.name}.{uuid.uuid4().hex[:6]}.log")
        self.marker = f"CHUTE_TEST_DAEMON={uuid.uuid4().hex}"
        self.env = dict(os.environ)
        self.env.pop("NOTIFY_SOCKET", None)
        self.env.update(env or {})
        self.env["CHUTE_TEST_DAEMON"] = self.marker.split("=", 1)[1]
        self.proc: subprocess.Popen | None = None
        self.offset = 0

    def start(self, wait: bool = True) -> Daemon:
        self.log = open(self.log_path, "ab")
        self.proc = subprocess.Popen([str(CHUTE), "run", "--config", str(self.config)], stdout=self.log,
                                     stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=self.env)
        if wait:
            self.wait_event("daemon.started", timeout=30)
        return self

    def __enter__(self) -> Daemon:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.kill()

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
                ev = json.loads(line)
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

    def signal(self, sig: int) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)

    def stop(self, timeout: float = 30.0) -> int:
        """SIGTERM and wait for the exit code."""
        self.signal(signal.SIGTERM)
        assert self.proc is not None
        return self.proc.wait(timeout)

    def kill(self) -> None:
        """SIGKILL the daemon and every process it started (pool workers, modules)."""
        if self.proc is not None and self.proc.poll() is None:
            try:
                os.kill(self.proc.pid, signal.SIGCONT)
            except OSError:
                pass
            self.proc.kill()
            self.proc.wait(10)
        sweep(self.marker)
        if hasattr(self, "log"):
            self.log.close()


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
