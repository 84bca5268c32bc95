"""kill -9 soak: files through `media_ingest` while the daemon is killed and restarted, or frozen beside a second one.

Usage: .venv/bin/python bench/soak.py [--mode kill|freeze|both] [--files 60] [--cycles 30]

kill:   `kill -9` of the daemon process alone (not its group) at a random moment,
        and an immediate restart, `--cycles` times; then one last daemon drains.
freeze: two daemons share the inbox and the work_dir; one is SIGSTOPped past the
        lease timeout (the other takes its runs over) and SIGCONTed, `--cycles` times.
Each cycle drops its share of the files first, so that runs are under way at every
kill or freeze.

Prints, for each mode: files lost, published twice, quarantined, and processes
of a killed daemon still alive 5 s after its death (workers, launchers, modules).
The target is 0 everywhere.
"""

from __future__ import annotations

import argparse
import os
import random
import signal
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.harness import Daemon, Setup, files, processes_with, wait_until  # noqa: E402
from tests.media import make_clip  # noqa: E402
from tests.pipelines import proc_alive  # noqa: E402

LEASE = 3.0


def prepare(root: Path, count: int, **config) -> tuple[Setup, dict, Path, list[str]]:
    setup = Setup(
        root,
        modules_path=[str(ROOT / "modules")],
        jobs_path=[str(ROOT / "jobs")],
        defaults={"settle": 0.5, "poll_interval": 1.0, "timeout": 120},
        lease_timeout=LEASE,
        shutdown_timeout=5,
        **config,
    )
    inbox = setup.inbox(job="media_ingest")
    path = Path(inbox["path"])
    path.mkdir()
    # Long enough that a run outlasts a lease: a frozen daemon still holds claims when it is judged.
    make_clip(root / "clip.mp4", seconds=60, width=960, height=540)
    names = [f"clip-{i:03d}.mp4" for i in range(count)]
    return setup, inbox, path, names


def drop_some(path: Path, names: list[str], clip: bytes, cycle: int, cycles: int) -> None:
    """This cycle's share of the files, so that work is under way at every kill or freeze."""
    share = names[cycle * len(names) // cycles : (cycle + 1) * len(names) // cycles]
    for name in share:  # a careful client: a hidden name, then a rename
        (path / f".{name}").write_bytes(clip)
        os.replace(path / f".{name}", path / name)


def started(d: Daemon, timeout: float, before: int = 0) -> None:
    """Until `d` has started a module (runs are under way), or `timeout` (the other daemon took them all)."""
    deadline = time.monotonic() + timeout
    while len(d.events("entry.started")) <= before and time.monotonic() < deadline:
        time.sleep(0.05)


def leftovers_after(d: Daemon) -> int:
    """Processes of a killed daemon (its marker in their environment) alive 5 s after it died."""
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        alive = [p for p in processes_with(d.marker) if proc_alive(p)]
        if not alive:
            return 0
        time.sleep(0.1)
    return len([p for p in processes_with(d.marker) if proc_alive(p)])


def count(inbox: dict, names: list[str]) -> dict[str, int]:
    archive, outbox, quarantine = (Path(inbox[k]) for k in ("archive", "outbox", "quarantine"))
    archived, results, failed = set(files(archive)), files(outbox), files(quarantine)
    stems = {Path(n).stem for n in names}
    return {
        "lost": sum(1 for n in names if n not in archived and Path(n).stem not in failed),
        "duplicated": sum(1 for r in results if r not in stems),
        "quarantined": len(failed),
        "published": len([r for r in results if r in stems]),
    }


def drain(config: Path, inbox: dict, names: list[str], name: str) -> int:
    """A last daemon runs what is left; returns how many claims it took over."""
    with Daemon(config, name=name) as d:
        wait_until(
            lambda: len(files(Path(inbox["archive"]))) + len(files(Path(inbox["quarantine"]))) >= len(names),
            timeout=60 + 5 * len(names),
        )
        assert d.stop(120) == 0
        return len(d.events("run.taken_over"))


def soak_kill(root: Path, count_files: int, cycles: int) -> dict[str, int]:
    setup, inbox, path, names = prepare(root, count_files)
    config = setup.write()
    clip = (root / "clip.mp4").read_bytes()
    left, taken = 0, 0
    for cycle in range(cycles):
        d = Daemon(config, name=f"kill-{cycle}")
        d.start()
        drop_some(path, names, clip, cycle, cycles)
        started(d, 8)
        time.sleep(random.uniform(0.0, 1.5))  # the scenario: a death at any moment of the work
        os.kill(d.pid, signal.SIGKILL)
        d.proc.wait(10)
        left += leftovers_after(d)
        taken += len(d.events("run.taken_over"))
        d.kill()
    taken += drain(config, inbox, names, "kill-drain")
    return {**count(inbox, names), "leftover processes": left, "taken over": taken}


def soak_freeze(root: Path, count_files: int, cycles: int) -> dict[str, int]:
    setup, inbox, path, names = prepare(root, count_files)
    work = root / "shared-work"
    a, b = (Daemon(setup.write(n, work_dir=str(work)), name=n) for n in ("a", "b"))
    clip = (root / "clip.mp4").read_bytes()
    with a, b:
        for cycle in range(cycles):
            before = len(a.events("entry.started"))
            drop_some(path, names, clip, cycle, cycles)
            started(a, 8, before)
            time.sleep(random.uniform(0.0, 0.5))
            a.signal(signal.SIGSTOP)
            time.sleep(LEASE + random.uniform(1.0, 2.0))  # past the lease: b takes a's runs over
            a.signal(signal.SIGCONT)
        wait_until(
            lambda: len(files(Path(inbox["archive"]))) + len(files(Path(inbox["quarantine"]))) >= len(names),
            timeout=60 + 5 * len(names),
        )
        assert a.stop(120) == 0 and b.stop(120) == 0
        taken = len(b.events("run.taken_over")) + len(a.events("run.taken_over"))
        discarded = len(a.events("run.discarded")) + len(b.events("run.discarded"))
    left = leftovers_after(a) + leftovers_after(b)
    return {**count(inbox, names), "leftover processes": left, "taken over": taken, "discarded": discarded}


class _Kept:
    def __init__(self, path: str):
        self.path = path

    def __enter__(self) -> str:
        Path(self.path).mkdir(parents=True, exist_ok=True)
        return self.path

    def __exit__(self, *exc) -> None:
        pass


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mode", choices=["kill", "freeze", "both"], default="both")
    parser.add_argument("--files", type=int, default=60)
    parser.add_argument("--cycles", type=int, default=30)
    args = parser.parse_args()
    rows = []
    keep = os.environ.get("CHUTE_SOAK_KEEP")  # a folder to keep the run's files and logs in, to look at
    with tempfile.TemporaryDirectory(prefix="chute-soak-") if not keep else _Kept(keep) as tmp:
        if args.mode in ("kill", "both"):
            t0 = time.monotonic()
            rows.append(("kill -9", soak_kill(Path(tmp) / "kill", args.files, args.cycles), time.monotonic() - t0))
        if args.mode in ("freeze", "both"):
            t0 = time.monotonic()
            rows.append(("SIGSTOP", soak_freeze(Path(tmp) / "freeze", args.files, args.cycles), time.monotonic() - t0))
    print(f"\n{args.files} files through media_ingest, {args.cycles} cycles each\n")
    keys = ["published", "lost", "duplicated", "quarantined", "leftover processes", "taken over", "discarded"]
    print("| mode | " + " | ".join(keys) + " | wall |")
    print("|---" * (len(keys) + 2) + "|")
    for mode, result, wall in rows:
        print(f"| {mode} | " + " | ".join(str(result.get(k, "-")) for k in keys) + f" | {wall:.0f} s |")
    bad = any(r.get(k, 0) for _, r, _ in rows for k in ("lost", "duplicated", "quarantined", "leftover processes"))
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
