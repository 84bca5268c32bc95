"""kill -9 soak: files through `media_ingest` while the daemon is killed and restarted, or frozen beside a second one.

Usage: .venv/bin/python bench/soak.py [--mode kill|freeze|both] [--files 60] [--cycles 30]
       .venv/bin/python bench/soak.py --full-outbox [--files 40] [--bound 300]
       .venv/bin/python bench/soak.py --frozen-parent [--files 20] [--bound 300]
       .venv/bin/python bench/soak.py --packages [--files 20] [--cycles 10]

kill:   `kill -9` of the daemon process alone (not its group) at a random moment,
        and an immediate restart, `--cycles` times; then one last daemon drains.
freeze: two daemons share the inbox and the work_dir; one is SIGSTOPped past the
        lease timeout (the other takes its runs over) and SIGCONTed, `--cycles` times.
Each cycle drops its share of the files first, so that runs are under way at every
kill or freeze.

full-outbox:   the outbox is a 1 MiB tmpfs that fills (files of 300 KiB through the
        two-step copy job of tests/harness.py); a consumer moves results out of it every
        `FREE_EVERY` s. Counts: lost, duplicated, good files quarantined, and modules that
        ran more than once for one file (a deferred delivery must only deliver).
frozen-parent: one file in `FROZEN_SHARE` goes to an inbox whose module SIGSTOPs its
        parent (the warm launcher or the pool worker) and hangs; the others are good.
        Expected: the frozen ones reach quarantine after max_crashes, the good ones are
        published. Counts per file, and worker slots lost for longer than the module
        deadline (a run attempt that did not end within timeout + kill grace + SLACK).
Both stop by themselves after `--bound` seconds and report what they have.
packages: `--files` stem groups (a main file and its sidecar) and as many folder
        deliveries, `kill -9` at random moments `--cycles` times, then a drain
        (bench/soak_packages.py). Counts lost, duplicated, split and good quarantined.

Prints, for each mode: files lost, published twice, quarantined, and processes
of a killed daemon still alive 5 s after its death (workers, launchers, modules).
The target is 0 everywhere.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.harness import (  # noqa: E402
    COPY_MANIFEST,
    TWO_STEP_JOB,
    Daemon,
    Setup,
    claimed_inputs,
    files,
    processes_with,
    wait_until,
)
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


FREE_EVERY = 3.0  # seconds between two sweeps of the full outbox by its consumer
FROZEN_SHARE = 4  # one file in this many is bound to the freezing module
DEADLINE = 8  # seconds: the freezing job's module timeout
SLACK = 15.0  # seconds past the deadline (and the kill grace) before a slot counts as lost
FREEZE_MODULE = """\
import os, signal, sys, time
os.kill(os.getppid(), signal.SIGSTOP)  # the launcher (or pool worker) that started us is frozen
time.sleep(3600)
"""


def _timestamps(d: Daemon, name: str) -> list[dict]:
    from tests.harness import event_time

    return [{**ev, "t": event_time(ev)} for ev in d.events(name)]


def soak_full_outbox(root: Path, count_files: int, bound: float) -> dict[str, int]:
    import shutil
    from collections import Counter

    setup = Setup(root, workers=2, defaults={"settle": 0.3, "poll_interval": 0.5, "timeout": 60})
    space = root / "outbox-fs"
    space.mkdir(parents=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(space)], check=True)
    consumed = root / "consumed"
    consumed.mkdir()
    try:
        outbox = space / "out"
        outbox.mkdir()
        inbox = setup.inbox(outbox=str(outbox))
        path = Path(inbox["path"])
        path.mkdir()
        names = [f"f{i:03d}.bin" for i in range(count_files)]
        with Daemon(setup.write(), name="full-outbox") as d:
            for name in names:
                (path / f".{name}").write_bytes(f"{name}\n".encode() + os.urandom(300 * 1024))
                os.replace(path / f".{name}", path / name)
            end = time.monotonic() + bound
            done = lambda: len(files(Path(inbox["archive"]))) + len(files(Path(inbox["quarantine"])))  # noqa: E731
            while done() < len(names) and time.monotonic() < end:
                time.sleep(FREE_EVERY)
                for result in files(outbox):  # a downstream user takes the results away
                    shutil.move(outbox / result, consumed / f"{result}.{time.monotonic_ns()}")
            d.stop(120)
            runs = Counter((ev["file"], ev["step"]) for ev in d.events("entry.started"))
            deferred = {ev["file"] for ev in d.events("run.deferred")}
            resumed = len(d.events("run.resumed_delivery"))
        for result in files(outbox):
            shutil.move(outbox / result, consumed / f"{result}.{time.monotonic_ns()}")
    finally:
        subprocess.run(["umount", "-l", str(space)], check=False)
    stems = Counter(n.split(".")[0] for n in files(consumed))
    archived, failed = set(files(Path(inbox["archive"]))), set(files(Path(inbox["quarantine"])))
    waiting = set(files(path)) | {p.name for p in claimed_inputs(path)}  # put back by the stop at the bound
    return {
        "published": sum(1 for n in names if stems[Path(n).stem] >= 1),
        "unfinished at the bound": len(waiting),
        "lost": sum(1 for n in names if n not in archived and Path(n).stem not in failed and n not in waiting),
        "duplicated": sum(max(0, c - 1) for c in stems.values()),
        "quarantined": len(failed),
        "deferred": len(deferred),
        "resumed deliveries": resumed,
        "modules rerun": sum(1 for c in runs.values() if c > 1),
    }


def soak_frozen_parent(root: Path, count_files: int, bound: float) -> dict[str, int]:
    setup = Setup(root, workers=2, max_crashes=2)
    freeze = setup.defs / "modules" / "freeze"
    freeze.mkdir()
    (freeze / "main.py").write_text(FREEZE_MODULE)
    import yaml

    (freeze / "manifest.yaml").write_text(yaml.safe_dump({**COPY_MANIFEST, "name": "freeze", "timeout": DEADLINE}))
    job = json.loads(json.dumps(TWO_STEP_JOB))
    job["name"] = "freezing"
    job["steps"][0]["entries"][0]["module"] = "freeze"
    (setup.defs / "jobs" / "freezing.yaml").write_text(yaml.safe_dump(job, sort_keys=False))
    good, bad = setup.inbox("good"), setup.inbox("bad", job="freezing")
    for box in (good, bad):
        Path(box["path"]).mkdir(exist_ok=True)
    names = [f"f{i:03d}.bin" for i in range(count_files)]
    frozen = {n for i, n in enumerate(names) if i % FROZEN_SHARE == 0}
    with Daemon(setup.write(), name="frozen-parent") as d:
        for name in names:
            box = Path((bad if name in frozen else good)["path"])
            (box / f".{name}").write_bytes(f"{name}\n".encode())
            os.replace(box / f".{name}", box / name)
        end = time.monotonic() + bound

        def settled() -> bool:
            return (
                len(files(Path(good["archive"])))
                + len(files(Path(good["quarantine"])))
                + len(files(Path(bad["quarantine"])))
                + len(files(Path(bad["archive"])))
            ) >= len(names)

        while not settled() and time.monotonic() < end:
            time.sleep(0.5)
        now = time.time()
        starts = _timestamps(d, "run.started")
        ends = [
            ev
            for n in ("run.deferred", "run.published", "run.quarantined", "run.released", "run.discarded")
            for ev in _timestamps(d, n)
        ]
        limit = DEADLINE + 5 + SLACK
        lost_slots = 0
        for s in starts:
            later = [e["t"] for e in ends if e.get("run_id") == s["run_id"] and e["t"] >= s["t"]]
            if (min(later) if later else now) - s["t"] > limit:
                lost_slots += 1
        d.kill()  # its own time bound: whatever still hangs is ended here, not waited for
    good_in = {n for n in files(Path(good["archive"]))}
    bad_q = {n for n in files(Path(bad["quarantine"]))}
    waiting = {n for box in (good, bad) for n in files(Path(box["path"]))}
    waiting |= {p.name for box in (good, bad) for p in claimed_inputs(Path(box["path"]))}
    return {
        "published": len(files(Path(good["outbox"]))),
        "unfinished at the bound": len(waiting),
        "lost": sum(
            1
            for n in names
            if n not in good_in
            and Path(n).stem not in bad_q
            and n not in waiting
            and Path(n).stem not in set(files(Path(good["quarantine"])))
        ),
        "duplicated": max(0, len(files(Path(good["outbox"]))) - len(good_in)),
        "quarantined": len(bad_q) + len(files(Path(good["quarantine"]))),
        "frozen quarantined": sum(1 for n in frozen if Path(n).stem in bad_q),
        "frozen files": len(frozen),
        "good quarantined": len(files(Path(good["quarantine"]))),
        "slots lost > deadline": lost_slots,
    }


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
    parser.add_argument("--full-outbox", action="store_true", help="the outbox is a small tmpfs that fills")
    parser.add_argument("--frozen-parent", action="store_true", help="some files freeze what runs their module")
    parser.add_argument("--bound", type=float, default=300.0, help="seconds each of those two modes may take")
    parser.add_argument("--packages", action="store_true", help="stem groups and folder deliveries under kill -9")
    args = parser.parse_args()
    if args.packages:
        return packages(args)
    if args.full_outbox or args.frozen_parent:
        return special(args)
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


def special(args) -> int:
    """The --full-outbox and --frozen-parent modes, each bounded by --bound seconds."""
    rows = []
    with tempfile.TemporaryDirectory(prefix="chute-soak-") as tmp:
        if args.full_outbox:
            t0 = time.monotonic()
            rows.append(
                ("full outbox", soak_full_outbox(Path(tmp) / "full", args.files, args.bound), time.monotonic() - t0)
            )
        if args.frozen_parent:
            t0 = time.monotonic()
            rows.append(
                (
                    "frozen parent",
                    soak_frozen_parent(Path(tmp) / "frozen", args.files, args.bound),
                    time.monotonic() - t0,
                )
            )
    for mode, result, wall in rows:
        print(f"\n{mode}: {args.files} files, {wall:.0f} s (bound {args.bound:.0f} s)")
        print("| " + " | ".join(result) + " |")
        print("|---" * len(result) + "|")
        print("| " + " | ".join(str(v) for v in result.values()) + " |")
    bad = any(
        r.get(k, 0)
        for _, r, _ in rows
        for k in ("lost", "duplicated", "good quarantined", "modules rerun", "slots lost > deadline")
    )
    bad = bad or any(r.get("quarantined", 0) for m, r, _ in rows if m == "full outbox")
    return 1 if bad else 0


def packages(args) -> int:
    """The --packages mode: deliveries of several files under kill -9 (bench/soak_packages.py)."""
    from bench.soak_packages import soak_packages

    with tempfile.TemporaryDirectory(prefix="chute-soak-") as tmp:
        t0 = time.monotonic()
        result = soak_packages(Path(tmp) / "packages", args.files, args.cycles)
        wall = time.monotonic() - t0
    print(f"\npackages: {args.files} stem groups and {args.files} folders, {args.cycles} kills, {wall:.0f} s")
    print("| " + " | ".join(result) + " |")
    print("|---" * len(result) + "|")
    print("| " + " | ".join(str(v) for v in result.values()) + " |")
    return 1 if any(result[k] for k in ("lost", "duplicated", "split", "quarantined good")) else 0


if __name__ == "__main__":
    sys.exit(main())
