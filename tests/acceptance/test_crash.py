"""A daemon killed with SIGKILL at any moment loses nothing and duplicates nothing (contract §5).

`chute run` runs as a subprocess (tests/harness.py) and is killed for real:
`Daemon.kill()` sends SIGKILL to the daemon, whose pool workers die with it
(PR_SET_PDEATHSIG through the forkserver), and then sweeps whatever carries the
daemon's environment marker, as systemd's KillMode=control-group would. The
restarted daemon has to finish or re-run every claim its predecessor left.
The random pauses before each kill are the scenario; everything else waits on
a condition. Most kills wait for a module to start first, so that the test
proves what it is about: runs in flight when the daemon dies (it counts them).
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

import pytest
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
    inputs = {
        f"f{i:02d}.bin": (b"sleep=0.3\n" if i % 3 else b"") + f"file {i}\n".encode() * (i + 1) for i in range(FILES)
    }
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
            if rng.random() < 0.8:  # most kills land on work: after a module started, at a random moment
                d.wait_event("entry.started", timeout=60)
                time.sleep(rng.uniform(0, 0.3))
            else:  # the others at any moment, start-up and recovery included
                time.sleep(rng.uniform(0.2, 3.0))
            in_startup += not d.events("daemon.started")
            ended = len(d.events("run.published")) + len(d.events("run.quarantined"))
            with_runs += len(d.events("run.started")) > ended
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
    print(
        f"\nkill -9: {FILES} files, {kills} kills ({in_startup} during start-up or recovery, "
        f"{with_runs} with runs in flight), {kills} restarts, {taken_over} claims taken over "
        f"({recovered} of them finished delivering)"
    )
    assert with_runs >= KILLS // 2, f"only {with_runs} of {KILLS} kills found runs in flight"
    assert all(d.events("daemon.error") == [] for d in daemons)
    assert_processed_once(inbox, inputs)
    assert not (path / ".chute" / "claimed").exists() or not any((path / ".chute" / "claimed").iterdir())


@pytest.mark.parametrize("launcher", ["warm", "fresh"])
def test_a_file_that_keeps_killing_its_worker_is_quarantined_after_max_crashes(tmp_path, launcher):
    """Its module kills what runs it (the warm launcher, or the pool worker): counted, never a loop."""
    setup = Setup(tmp_path, max_crashes=3, launcher={"mode": launcher})
    inbox = setup.inbox()
    config = setup.write()
    path = Path(inbox["path"])
    path.mkdir()
    others = {f"other-{n}.bin": f"other {n}\n".encode() for n in range(4)}
    with Daemon(config) as d:
        drop(path, "poison.bin", b"killparent\n")
        for name, data in others.items():
            drop(path, name, data)
        [q] = d.wait_event("run.quarantined", file="poison.bin", timeout=60)
        wait_until(lambda: set(files(Path(inbox["archive"]))) == set(others), 30)
        deferred = d.events("run.deferred", file="poison.bin")
        assert d.stop() == 0
    # warm: the third death is judged by the step engine, which quarantines at once; fresh: the daemon
    # counts the third worker death, defers, and the next attempt is the quarantine.
    assert len(deferred) == (2 if launcher == "warm" else 3) and {ev["fault"] for ev in deferred} == {"crash"}
    assert q["reason"].endswith("in 3 runs of this file"), q["reason"]
    quarantine = Path(inbox["quarantine"])
    assert files(quarantine) == ["poison"]
    assert sorted(files(quarantine / "poison")) == sorted(
        ["poison.bin", "report.json"] + (["logs"] if launcher == "warm" else [])
    )
    assert (quarantine / "poison" / "poison.bin").read_bytes() == b"killparent\n"
    shutil.rmtree(quarantine / "poison")
    assert_processed_once(inbox, others)


def test_a_killed_daemon_does_not_charge_the_files_it_was_running(tmp_path):
    """kill -9 of the daemon is not the files' doing: however often, nothing is quarantined for it."""
    setup = Setup(tmp_path, max_crashes=2)
    inbox = setup.inbox()
    config = setup.write()
    path = Path(inbox["path"])
    path.mkdir()
    drop(path, "long.bin", b"sleep=30\nlong\n")
    for attempt in range(4):
        with Daemon(config, name=f"killed-{attempt}") as d:
            d.wait_event("entry.started", file="long.bin")
            d.kill()  # mid-run
    with Daemon(config, name="last", env={"CHUTE_TEST_SLEEP_MAX": "0.2"}) as d:
        wait_until(lambda: files(Path(inbox["archive"])) == ["long.bin"], 30)
        assert d.stop() == 0
    assert files(Path(inbox["quarantine"])) == []
    assert_processed_once(inbox, {"long.bin": b"sleep=30\nlong\n"})


# --- every state a crash can leave a claim in, finished by the next daemon ---


def dead_daemon_id() -> str:
    """The id of a daemon of this host whose process is gone (a pid that just exited)."""
    proc = subprocess.Popen(["true"])
    proc.wait()
    return leases.Identity(leases.hostname(), leases.boot_id(), proc.pid, "dead00").daemon_id


def manifest(run_id: str, name: str, data: bytes, status: str = "succeeded") -> str:
    """A result's manifest.json as the dead daemon had written it (the fields read back here)."""
    return json.dumps(
        {
            "schema": "chute.manifest/1",
            "run_id": run_id,
            "status": status,
            "input": {"name": name, "size": len(data), "sha256": hashlib.sha256(data).hexdigest()},
        }
    )


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
    for n, (stage, markers, commit) in enumerate(
        [("claimed", (), False), ("running", (claims.RUNNING,), False), ("committed", (claims.RUNNING,), True)]
    ):
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
        wait_until(
            lambda: (
                len(files(archive)) == len(rerun) + len(finished)
                and len(files(quarantine)) == 3
                and not claimed_inputs(path)
            ),
            30,
        )
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


def test_a_restart_reveals_a_result_under_the_exact_name_of_an_input_not_utf8(tmp_path):
    """Its input already archived, the result folder's name comes from manifest.json: from `name_b64`, its
    exact bytes, not the UTF-8 text of `name` (issue 19)."""
    setup = Setup(tmp_path)
    inbox = setup.inbox()
    config = setup.write()
    path, outbox, archive = (Path(inbox[k]) for k in ("path", "outbox", "archive"))
    for folder in (outbox, archive, Path(inbox["quarantine"])):
        folder.mkdir()
    name, data, run_id = os.fsdecode(b"caf\xe9.bin"), b"latin-1\n", "20260101T000000Z-00beef"
    claim = claims.claimed_root(path) / dead_daemon_id() / (run_id + COMMIT_SUFFIX)
    claim.mkdir(parents=True)
    for marker in (claims.RUNNING, publish.REVEALING):
        (claim / marker).touch()
    (archive / name).write_bytes(data)  # archived, the claim's input gone: only the manifest names it
    build = outbox / f".chute-build-{run_id}"
    build.mkdir()
    (build / "result.bin").write_bytes(data)
    doc = json.loads(manifest(run_id, name, data))
    doc["input"].update(name="caf\\xe9.bin", name_b64="Y2Fm6S5iaW4=")  # as chute writes it: strict UTF-8
    (build / "manifest.json").write_text(json.dumps(doc))

    with Daemon(config) as d:
        d.wait_event("run.recovered", run_id=run_id)
        wait_until(lambda: not claim.exists())
        assert d.stop() == 0
    assert os.listdir(os.fsencode(outbox)) == [b"caf\xe9"]
    assert (outbox / os.fsdecode(b"caf\xe9") / "result.bin").read_bytes() == data
