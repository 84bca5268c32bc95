"""Deliveries of several files (contract §12): stems with sidecars, folders, claimed and delivered whole.

Real daemons on real folders (and a real Samba share): a delivery is claimed only when it is
complete, runs once, and every member goes to the archive or the quarantine together.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import time
from pathlib import Path

import yaml
from chute import claims, publish
from chute.run import COMMIT_SUFFIX

from tests.acceptance.test_crash import dead_daemon_id, manifest
from tests.acceptance.test_samba import Share, share  # noqa: F401 (the fixture)
from tests.harness import CHUTE, Daemon, Setup, claimed_inputs, drop, files, ledger_runs, wait_until

# Lists the folder it is given: every file beneath, with its size (a job whose input is the whole delivery).
LISTING_MODULE = """\
import json, os, sys, time
args = dict(zip(sys.argv[1::2], sys.argv[2::2]))
root = args["--card"]
if os.path.exists(os.path.join(root, "SLEEP")):  # a long run, for a stop to release
    time.sleep(60)
found = {}
for folder, _dirs, names in os.walk(root):
    for name in names:
        path = os.path.join(folder, name)
        found[os.path.relpath(path, root)] = os.path.getsize(path)
with open(args["--listing"], "w") as f:
    json.dump(found, f, sort_keys=True)
"""


def folder_setup(tmp_path: Path, **inbox) -> tuple[Setup, dict]:
    """A setup whose job `cardlist` takes the whole folder delivery (`type: folder`) and lists it."""
    setup = Setup(tmp_path)
    module = setup.defs / "modules" / "listing"
    module.mkdir()
    (module / "main.py").write_text(LISTING_MODULE)
    manifest = {
        "name": "listing",
        "entrypoint": "main.py",
        "version": "1.0",
        "inputs": [{"param_name": "card", "type": "folder"}],
        "outputs": [{"param_name": "listing", "type": "json"}],
    }
    (module / "manifest.yaml").write_text(yaml.safe_dump(manifest))
    entry = {
        "module": "listing",
        "input_artifacts": [{"name": "card", "param_name": "card", "type": "folder"}],
        "output_artifacts": [{"name": "listing.json", "param_name": "listing", "type": "json", "public": True}],
    }
    job = {
        "name": "cardlist",
        "version": 1,
        "input_artifacts": [{"param_name": "card", "type": "folder", "name": "card"}],
        "steps": [{"name": "list", "entries": [entry]}],
    }
    (setup.defs / "jobs" / "cardlist.yaml").write_text(yaml.safe_dump(job, sort_keys=False))
    return setup, setup.inbox(job="cardlist", unit="folder", **inbox)


def card(root: Path, files_: dict[str, bytes]) -> Path:
    for rel, data in files_.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(data)
    return root


def md5_list(name: str, data: bytes) -> bytes:
    """A card's md5sum-style list of one clip in CLIPS/ (verified before the run: it must be true)."""
    return f"{hashlib.md5(data).hexdigest()}  CLIPS/{name}\n".encode()


def listing(outbox: Path, name: str) -> dict[str, int]:
    return json.loads((outbox / name / "listing.json").read_text())


def test_a_stem_group_whose_sidecar_comes_late_is_claimed_and_archived_as_one(tmp_path):
    setup = Setup(tmp_path, defaults={"settle": 1.0, "poll_interval": 0.5, "timeout": 60})
    inbox = setup.inbox(unit="stem", sidecar_wait=4)
    config = setup.write()
    path, archive, outbox = Path(inbox["path"]), Path(inbox["archive"]), Path(inbox["outbox"])
    quarantine = Path(inbox["quarantine"])
    with Daemon(config) as d:
        drop(path, "clip.mov", b"the video\n")
        drop(path, "lonely.srt", b"no video for me\n")
        drop(path, "bad.mov", b"fail\n")  # its job fails: the whole group goes to the quarantine
        drop(path, "bad.en.srt", b"its subtitles\n")
        time.sleep(3)  # the scenario: an editor's export whose subtitles land three seconds after the video
        drop(path, "clip.srt", b"1\n00:00:00,000 --> 00:00:01,000\nhello\n")
        wait_until(lambda: files(outbox) == ["clip"] and files(quarantine) == ["bad"], 30)
        d.wait_event("file.sidecar_waiting", file="lonely.srt")
        assert d.stop() == 0
        claimed = sorted(ev["file"] for ev in d.events("file.claimed"))
        assert len(d.events("file.sidecar_waiting", file="lonely.srt")) == 1
    assert claimed == ["bad.mov", "clip.mov"]
    assert sorted(r.input_name for r in ledger_runs(config)) == ["bad.mov", "clip.mov"]
    assert files(quarantine / "bad") == ["bad.en.srt", "bad.mov", "logs", "report.json"]
    retried = subprocess.run(
        [str(CHUTE), "retry", "--all", "--config", str(config)], capture_output=True, text=True, timeout=60
    )
    assert retried.returncode == 0, retried.stderr
    assert files(path) == ["bad.en.srt", "bad.mov", "lonely.srt"]  # chute retry puts the whole group back
    (path / "bad.mov").unlink()
    (path / "bad.en.srt").unlink()
    assert files(archive) == ["clip.mov", "clip.srt"]
    assert (archive / "clip.srt").read_bytes().endswith(b"hello\n")
    assert files(path) == ["lonely.srt"]  # a sidecar with no main file is never claimed, nor deleted
    assert (outbox / "clip" / "result.bin").read_bytes() == b"the video\n"


def test_folder_deliveries_wait_for_their_ready_file_and_their_writers_and_run_whole(tmp_path):
    setup, inbox = folder_setup(tmp_path, ready_file="READY")
    config = setup.write()
    path, outbox, archive = Path(inbox["path"]), Path(inbox["outbox"]), Path(inbox["archive"])
    quarantine = Path(inbox["quarantine"])
    path.mkdir()
    clips = {
        "CLIPS/A001.mov": b"a" * 1000,
        "CLIPS/deep/A002.mov": b"b" * 20,
        "card.md5": md5_list("A001.mov", b"a" * 1000),
    }
    card(path / "CARD_A", clips | {"READY": b""})
    card(path / "CARD_B", clips)  # no ready file yet
    card(path / "CARD_C", clips | {"READY": b""})
    writer = open(path / "CARD_C" / "CLIPS" / "A003.mov", "wb")  # still being written
    writer.write(b"half")
    writer.flush()
    card(path / "CARD_D", {"clip.mov": b"d", "READY": b""}).joinpath("escape").symlink_to("/etc/passwd")
    drop(path, "loose.mov", b"not a folder\n")
    try:
        with Daemon(config) as d:
            # CARD_A settled with the others: once it is out and D quarantined, B and C were looked at too.
            wait_until(lambda: files(outbox) == ["CARD_A"] and files(quarantine) == ["CARD_D"], 30)
            d.wait_event("file.ignored", file="loose.mov")
            assert sorted(files(path)) == ["CARD_B", "CARD_C", "loose.mov"]
            (path / "CARD_B" / "READY").touch()
            writer.write(b" and the rest")
            writer.close()
            wait_until(lambda: files(outbox) == ["CARD_A", "CARD_B", "CARD_C"], 30)
            assert d.stop() == 0
            rejected = d.events("file.rejected")
            assert len(d.events("file.ignored", file="loose.mov")) == 1
    finally:
        writer.close()
    assert listing(outbox, "CARD_A") == {k: len(v) for k, v in clips.items()} | {"READY": 0}
    assert listing(outbox, "CARD_C")["CLIPS/A003.mov"] == len(b"half and the rest")
    assert files(archive) == ["CARD_A", "CARD_B", "CARD_C"]
    assert (archive / "CARD_A" / "CLIPS" / "deep" / "A002.mov").read_bytes() == b"b" * 20
    assert (archive / "CARD_A" / "CLIPS" / "A001.mov").stat().st_mode & 0o200  # its write bits given back
    assert [ev["reason"] for ev in rejected] == ["symlink inside the delivery: escape"]
    assert files(quarantine / "CARD_D") == ["CARD_D", "report.json"]
    assert (quarantine / "CARD_D" / "CARD_D" / "escape").is_symlink()
    assert files(path) == ["loose.mov"] and claimed_inputs(path) == []
    retried = subprocess.run([str(CHUTE), "retry", "--all", "--config", str(config)], capture_output=True, text=True)
    assert retried.returncode == 0, retried.stderr
    assert files(path) == ["CARD_D", "loose.mov"]  # back as the folder it was
    assert (path / "CARD_D" / "clip.mov").read_bytes() == b"d" and (path / "CARD_D" / "escape").is_symlink()


def test_a_folder_copied_over_smb_file_by_file_is_claimed_only_when_complete(tmp_path, share: Share):  # noqa: F811
    setup, inbox = folder_setup(tmp_path, path=str(share.inbox), settle=2.0)
    config = setup.write()
    outbox = Path(inbox["outbox"])
    local = tmp_path / "card"
    clips = {f"A00{i}.mov": bytes([65 + i]) * (64 * 1024 * (i + 1)) for i in range(4)}
    card(local, clips)
    with Daemon(config) as d:
        base = [share.smbclient, "//127.0.0.1/inbox", "-p", str(share.port), "-N", f"--configfile={share.client_conf}"]
        made = subprocess.run(
            [*base, "-c", "mkdir CARD; mkdir CARD/CLIPS; mkdir CARD/CLIPS/DAY1"],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert made.returncode == 0, made.stdout + made.stderr
        for name in clips:  # deep in the folder: nothing at its top changes meanwhile
            put = share.put(local / name, f"CARD/CLIPS/DAY1/{name}")
            assert put.returncode == 0, put.stdout + put.stderr
            time.sleep(1.0)  # the scenario: a copy that pauses between files, for less than `settle`
        wait_until(lambda: files(outbox) == ["CARD"], 60)
        assert d.stop() == 0
        assert [ev["file"] for ev in d.events("file.claimed")] == ["CARD"]
    assert listing(outbox, "CARD") == {f"CLIPS/DAY1/{name}": len(data) for name, data in clips.items()}


def test_a_stop_puts_a_running_stem_group_and_a_running_folder_back_whole(tmp_path):
    setup, folder_inbox = folder_setup(tmp_path)
    stem_inbox = setup.inbox("stems", unit="stem", sidecar_wait=0.3)
    config = setup.write(shutdown_timeout=0.5)
    stems, cards = Path(stem_inbox["path"]), Path(folder_inbox["path"])
    stems.mkdir()
    cards.mkdir()
    drop(stems, "long.mov", b"sleep=60\n")
    drop(stems, "long.srt", b"subtitles\n")
    clips = {"CLIPS/A001.mov": b"a" * 100, "SLEEP": b""}
    card(cards / "CARD", clips)
    (cards / "CARD" / "CLIPS" / "A001.mov").chmod(0o640)
    with Daemon(config) as d:
        d.wait_event("entry.started", count=2, timeout=30)
        assert d.stop() == 0
        assert sorted(ev["file"] for ev in d.events("run.released")) == ["CARD", "long.mov"]
    assert files(stems) == ["long.mov", "long.srt"]
    assert (stems / "long.srt").read_bytes() == b"subtitles\n"
    assert files(cards) == ["CARD"] and claimed_inputs(cards) == [] and claimed_inputs(stems) == []
    assert (cards / "CARD" / "CLIPS" / "A001.mov").read_bytes() == b"a" * 100
    assert (cards / "CARD" / "CLIPS" / "A001.mov").stat().st_mode & 0o777 == 0o640  # its mode as it was


def test_a_restart_finishes_a_stem_claim_and_a_folder_claim_a_kill_left_half_made(tmp_path):
    """Built by hand as SIGKILL leaves them: a stem claim between its two renames, a folder claim just made."""
    setup, folder_inbox = folder_setup(tmp_path)
    stem_inbox = setup.inbox("stems", unit="stem", sidecar_wait=0.5)
    config = setup.write()
    stems, cards = Path(stem_inbox["path"]), Path(folder_inbox["path"])
    for path in (stems, cards):
        path.mkdir()
    owner = dead_daemon_id()
    half = claims.claimed_root(stems) / owner / "20260101T000000Z-000001"
    half.mkdir(parents=True)
    record = {"unit": "stem", "main": "clip.mov", "members": ["clip.mov", "clip.srt"]}
    (half / claims.DELIVERY).write_text(json.dumps(record))
    (half / "clip.mov").write_bytes(b"video\n")  # renamed in; the sidecar's rename never came
    drop(stems, "clip.srt", b"subtitles\n")
    # A failed group on its way into the quarantine: its main file is in, its sidecar's move never came.
    going = claims.claimed_root(stems) / owner / ("20260101T000000Z-000004" + COMMIT_SUFFIX)
    going.mkdir(parents=True)
    (going / claims.DELIVERY).write_text(json.dumps(record | {"main": "bad.mov", "members": ["bad.mov", "bad.srt"]}))
    for marker in (claims.RUNNING, publish.QUARANTINING):
        (going / marker).touch()
    (going / "bad.srt").write_bytes(b"its subtitles\n")
    build = Path(stem_inbox["quarantine"]) / ".chute-build-20260101T000000Z-000004"
    build.mkdir(parents=True)
    (build / "report.json").write_text(manifest("20260101T000000Z-000004", "bad.mov", b"fail\n", "failed"))
    (build / "bad.mov").write_bytes(b"fail\n")
    whole = claims.claimed_root(cards) / owner / "20260101T000000Z-000002"
    whole.mkdir(parents=True)
    (whole / claims.DELIVERY).write_text(json.dumps({"unit": "folder"}))
    card(whole / "CARD", {"CLIPS/A001.mov": b"a" * 10, "card.md5": md5_list("A001.mov", b"a" * 10)})
    empty = claims.claimed_root(cards) / owner / "20260101T000000Z-000003"
    empty.mkdir(parents=True)
    (empty / claims.DELIVERY).write_text(json.dumps({"unit": "folder"}))  # marked; the rename never came
    card(cards / "CARD2", {"clip.mov": b"c" * 5})
    with Daemon(config) as d:
        wait_until(lambda: files(Path(stem_inbox["archive"])) and len(files(Path(folder_inbox["archive"]))) == 2, 30)
        assert d.stop() == 0
        assert sorted(ev["file"] for ev in d.events("run.started")) == ["CARD", "CARD2", "clip.mov"]
    assert files(Path(stem_inbox["archive"])) == ["clip.mov", "clip.srt"]
    assert files(Path(stem_inbox["outbox"])) == ["clip"]
    assert files(Path(stem_inbox["quarantine"]) / "bad") == ["bad.mov", "bad.srt", "report.json"]
    assert files(Path(folder_inbox["archive"])) == ["CARD", "CARD2"]
    assert listing(Path(folder_inbox["outbox"]), "CARD") == {
        "CLIPS/A001.mov": 10,
        "card.md5": len(md5_list("A001.mov", b"a" * 10)),
    }
    for path in (stems, cards):
        assert files(path) == [] and claimed_inputs(path) == []
