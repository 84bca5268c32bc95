"""Idle wake-ups of the daemon loop: how often an idle `chute run` wakes up, per second.

Usage: .venv/bin/python bench/idle.py [--seconds 30] [--source DIR ...]

Starts `chute run` on one empty inbox (events mode, the default intervals) and
counts the context switches of its main thread (the loop's) in
/proc/PID/task/PID/status over `--seconds`, after a warm-up. Each `--source`
is another chute source tree (e.g. a `git worktree` of an older commit) run
the same way with PYTHONPATH pointing at its daemon/ folder, side by side.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
WARM_UP = 3.0


def config(root: Path) -> Path:
    inbox = root / "in"
    inbox.mkdir(parents=True)
    cfg = {
        "modules_path": [str(ROOT / "modules")],
        "jobs_path": [str(ROOT / "jobs")],
        "state_dir": str(root / "state"),
        "work_dir": str(root / "work"),
        "workers": 2,
        "log": {"format": "json", "level": "info"},
        "inboxes": [
            {
                "path": str(inbox),
                "job": "example_job",
                "outbox": str(root / "out"),
                "quarantine": str(root / "q"),
                "archive": str(root / "done"),
                "watch": "events",
            }
        ],
    }
    path = root / "config.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def switches(pid: int) -> int:
    total = 0
    for line in Path(f"/proc/{pid}/task/{pid}/status").read_text().splitlines():
        if line.startswith(("voluntary_ctxt_switches", "nonvoluntary_ctxt_switches")):
            total += int(line.split()[1])
    return total


def measure(source: Path | None, seconds: float) -> float:
    env = dict(os.environ)
    if source is not None:
        env["PYTHONPATH"] = str(source / "daemon")
    with tempfile.TemporaryDirectory(prefix="chute-idle-") as tmp:
        argv = [
            sys.executable,
            "-c",
            "import sys; from chute.cli import main; sys.exit(main(sys.argv[1:]))",
            "run",
            "--config",
            str(config(Path(tmp))),
        ]
        proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
        try:
            time.sleep(WARM_UP)
            before = switches(proc.pid)
            time.sleep(seconds)
            return (switches(proc.pid) - before) / seconds
        finally:
            proc.terminate()
            proc.wait(30)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument(
        "--source", type=Path, action="append", default=[], help="another chute source tree to measure beside this one"
    )
    args = parser.parse_args()
    rows = [("this tree", measure(None, args.seconds))]
    rows += [(str(src), measure(src, args.seconds)) for src in args.source]
    print(f"\nidle daemon loop, main thread, {args.seconds:g} s after {WARM_UP:g} s of warm-up\n")
    print("| chute | wake-ups per second |")
    print("|---|---|")
    for name, rate in rows:
        print(f"| {name} | {rate:.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
