"""A daemon killed with SIGKILL at any moment loses nothing and duplicates nothing (SPEC §5).

`chute run` runs as a subprocess (tests/harness.py) and is killed for real:
`Daemon.kill()` sends SIGKILL to the daemon, whose pool workers die with it
(PR_SET_PDEATHSIG through the forkserver), and then sweeps whatever carries the
daemon's environment marker, as systemd's KillMode=control-group would. The
restarted daemon has to finish or re-run every claim its predecessor left.
The random pauses before each kill are the scenario; everything else waits on
a condition.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
import subprocess
import time
from pathlib import Path

from chute import claims, leases, publish
from chute.run import COMMIT_SUFFIX
from tests.harness import Daemon, Setup, assert_processed_once, claimed_inputs, drop, files, wait_until

SEED = 20261124
FILES = 50
KILLS = 10


def test_kill_9_at_random_moments_loses_and_duplicates_nothing(tmp_path):
    rng = random.Random(SEED)
    # Innocent files must never reach max_crashes, however often a kill lands on their run.
    setup = Setup(tmp_path, workers=3, max_crashes=100)
    inbox = setup.inbox()
    config = setup.write()
    path = Path(inbox["path"])
    path.mkdir()
    inputs = {f"f{i:02d}.bin": (b"sleep=0.3\n" if i % 3 else b"") + f"file {i}\n".encode() * (i + 1)
              for i in range(FILES)}
    names = list(inputs)
    batches = [names[i::KILLS] for i in range(KILLS)]  # files keep arriving between kills
    kills = in_startup = with_runs = 0
    daemons: list[Daemon] = []
    try:
        for batch in batches:
            d = Daemon(config, name=f"kill-{kills}")
            daemons.append(d.start(wait=False))
            for name in batch:
                drop(path, name, inputs[name])
            time.sleep(rng.uniform(0.2, 3.0))  # the scenario: a kill at a random moment
            in_startup += not d.events("daemon.started")
            with_runs += len(d.events("run.started")) > len(d.events("run.published"))
            d.kill()
            kills += 1
        d = Daemon(config, name="last")
        daemons.append(d.start())
        wait_until(lambda: len(files(Path(inbox["archive"]))) >= FILES and not claimed_inputs(path), 90)
        assert d.stop() == 0
    finally:
        for d in daemons:
            d.kill()
    taken_over = sum(len(d.events("run.taken_over")) for d in daemons)
    recovered = sum(len(d.events("run.recovered")) for d in daemons)
    print(f"\nkill -9: {FILES} files, {kills} kills ({in_startup} during start-up or recovery, "
          f"{with_runs} with runs in flight), {kills} restarts, {taken_over} claims taken over "
          f"({recovered} of them finished delivering)")
    assert all(d.events("daemon.error") == [] for d in daemons)
    assert_processed_once(inbox, inputs)
    assert not (path / ".chute" / "claimed").exists() or not any((path / ".chute" / "claimed").iterdir())


def test_a_file_that_keeps_killing_the_daemon_is_quarantined_after_max_crashes(tmp_path):
    setup = Setup(tmp_path, max_crashes=3)
    inbox = setup.inbox()
    config = setup.write()
    path = Path(inbox["path"])
    path.mkdir()
    # Long enough that each attempt is still running when the daemon dies under it.
    drop(path, "poison.bin", b"sleep=30\npoison\n")
    others: dict[str, bytes] = {}

    def more(prefix: str) -> None:
        """Two more files dropped alongside: each must be processed, once, whatever the poison does."""
        batch = {f"{prefix}-{n}.bin": f"{prefix} {n}\n".encode() for n in range(2)}
        for name, data in batch.items():
            drop(path, name, data)
        others.update(batch)
        wait_until(lambda: set(files(Path(inbox["archive"]))) >= set(others), 30)

    deaths = 0
    while True:
        with Daemon(config, name=f"poison-{deaths}") as d:
            [first] = wait_until(lambda: d.events("run.quarantined", file="poison.bin")
                                 or d.events("run.started", file="poison.bin"))
            if first["event"] == "run.quarantined":  # given up on when its claim was taken over: never run again
                more("after")
                assert d.stop() == 0
                break
            more(f"other-{deaths}")  # through the second worker, while the poison runs
        # Leaving `with` killed the daemon (SIGKILL) while the poison's run was still going.
        deaths += 1
        assert deaths <= 3, "the poison file was not quarantined after max_crashes runs"
    print(f"\npoison: {deaths} daemon deaths during its runs, quarantined by start {deaths + 1}; "
          f"{len(others)} other files processed meanwhile")
    assert deaths == 3
    quarantine = Path(inbox["quarantine"])
    assert files(quarantine) == ["poison"]
    assert files(quarantine / "poison") == ["poison.bin", "report.json"]
    assert (quarantine / "poison" / "poison.bin").read_bytes() == b"sleep=30\npoison\n"
    report = json.loads((quarantine / "poison" / "report.json").read_text())
    assert report["status"] == "failed"
    assert report["error"]["reason"] == "the daemon died during 3 runs of this file"
    # Everything else: exactly once, as if the poison had never been there.
    (quarantine / "poison" / "poison.bin").unlink()
    (quarantine / "poison" / "report.json").unlink()
    (quarantine / "poison").rmdir()
    assert_processed_once(inbox, others)


# --- every state a crash can leave a claim in, finished by the next daemon ---


def dead_daemon_id() -> str:
    """The id of a daemon of this host whose process is gone (a pid that just exited)."""
    proc = subprocess.Popen(["true"])
    proc.wait()
    return leases.Identity(leases.hostname(), leases.boot_id(), proc.pid, "dead00").daemon_id


def manifest(run_id: str, name: str, data: bytes, status: str = "succeeded") -> str:
    """A result's manifest.json as the dead daemon had written it (the fields read back here)."""
    return json.dumps({"schema": "chute.manifest/1", "run_id": run_id, "status": status,
                       "input": {"name": name, "size": len(data), "sha256": hashlib.sha256(data).hexdigest()}})


def test_a_restart_finishes_every_stage_a_crash_can_leave_a_claim_in(tmp_path):
    """Built by hand, as SIGKILL would leave them between two steps of delivery (runner._deliver)."""
    setup = Setup(tmp_path)
    inbox = setup.inbox()
    config = setup.write()
    path, outbox, archive, quarantine = (Path(inbox[k]) for k in ("path", "outbox", "archive", "quarantine"))
    for folder in (outbox, archive, quarantine):
        folder.mkdir()
    owner = claims.claimed_root(path) / dead_daemon_id()
    rerun, finished, quarantined = {}, {}, {}
    delivered: set[str] = set()  # run ids whose result was complete: finished, never run again

    def claim(stage: str, n: int, *markers: str, commit: bool = True, keep_input: bool = True):
        name, data = f"{stage}.bin", f"{stage}\n".encode()
        run_id = f"20260101T000000Z-{n:06x}"
        if publish.REVEALING in markers or publish.QUARANTINING in markers:
            delivered.add(run_id)
        folder = owner / (run_id + (COMMIT_SUFFIX if commit else ""))
        folder.mkdir(parents=True)
        if keep_input:
            (folder / name).write_bytes(data)
        for marker in markers:
            (folder / marker).touch()
        return name, data, run_id, folder

    def result(where: Path, run_id: str, name: str, data: bytes) -> None:
        where.mkdir()
        (where / "result.bin").write_bytes(data)
        (where / "manifest.json").write_text(manifest(run_id, name, data))

    def report(where: Path, run_id: str, name: str, data: bytes) -> None:
        where.mkdir()
        (where / "report.json").write_text(manifest(run_id, name, data, "failed"))

    # Runs again from the start: nothing of its result went out.
    for n, (stage, markers, commit) in enumerate([("claimed", (), False), ("running", (claims.RUNNING,), False),
                                                   ("committed", (claims.RUNNING,), True)]):
        name, data, _, _ = claim(stage, n, *markers, commit=commit)
        rerun[name] = data
    name, data, run_id, _ = claim("building", 3, claims.RUNNING)
    (outbox / f".chute-build-{run_id}").mkdir()
    (outbox / f".chute-build-{run_id}" / "result.bin").write_bytes(data[:2])  # half-built, never shown
    rerun[name] = data
    # Its result is complete or out: delivery is finished, nothing runs again.
    name, data, run_id, _ = claim("revealing", 4, claims.RUNNING, publish.REVEALING)
    result(outbox / f".chute-build-{run_id}", run_id, name, data)
    finished[name] = data
    name, data, run_id, _ = claim("revealed", 5, claims.RUNNING, publish.REVEALING)
    result(outbox / "revealed", run_id, name, data)
    finished[name] = data
    name, data, run_id, folder = claim("archiving", 6, claims.RUNNING, publish.REVEALING)
    result(outbox / "archiving", run_id, name, data)
    (archive / name).write_bytes(data)  # copied across filesystems and renamed in; the unlink never came
    (folder / publish.ARCHIVING).write_bytes(os.fsencode(archive / name))
    finished[name] = data
    name, data, run_id, _ = claim("archived", 7, claims.RUNNING, publish.REVEALING, keep_input=False)
    result(outbox / "archived", run_id, name, data)
    (archive / name).write_bytes(data)
    finished[name] = data
    # Failed runs on their way into quarantine.
    name, data, run_id, _ = claim("quarantining", 8, claims.RUNNING, publish.QUARANTINING)
    report(quarantine / f".chute-build-{run_id}", run_id, name, data)
    quarantined[name] = data
    name, data, run_id, _ = claim("moved", 9, claims.RUNNING, publish.QUARANTINING, keep_input=False)
    report(quarantine / f".chute-build-{run_id}", run_id, name, data)
    (quarantine / f".chute-build-{run_id}" / name).write_bytes(data)
    quarantined[name] = data
    name, data, run_id, _ = claim("across", 10, claims.RUNNING, publish.QUARANTINING)
    report(quarantine / f".chute-build-{run_id}", run_id, name, data)
    (quarantine / f".chute-build-{run_id}" / name).write_bytes(data)  # renamed in; the unlink never came
    quarantined[name] = data

    with Daemon(config) as d:
        wait_until(lambda: len(files(archive)) == len(rerun) + len(finished) and len(files(quarantine)) == 3
                   and not claimed_inputs(path), 30)
        assert d.stop() == 0
        assert sorted(ev["file"] for ev in d.events("run.started")) == sorted(rerun)
        assert {ev["run_id"] for ev in d.events("run.recovered")} == delivered
        assert d.events("daemon.error") == []
    assert files(quarantine) == sorted(Path(n).stem for n in quarantined)
    for name, data in quarantined.items():
        stem = Path(name).stem
        assert files(quarantine / stem) == [name, "report.json"]
        assert (quarantine / stem / name).read_bytes() == data
        shutil.rmtree(quarantine / stem)
    assert_processed_once(inbox, rerun | finished)
    assert not owner.exists()
