"""A run's delivery verified before anything runs, through `chute.runner.execute`: real modules, real folders.

The delivery is a claimed file here (units' stems and folders come through a real daemon in
tests/acceptance/test_packages.py); what a user sees is the result's manifest, the quarantine's
report, and an ASC MHL history the reference tool accepts.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import xxhash
import yaml
from chute.run import Fault, RunStatus
from chute.runner import execute

from tests.pipelines import entry, read_json, sha256_of

pytestmark = pytest.mark.timeout(60)

NOTE = """
Path(ARGS["output"]).write_text("seen")  # reads nothing: the run's reads of the input are chute's own
"""
ASCMHL_DEBUG = Path(sys.executable).with_name("ascmhl-debug")


@pytest.fixture
def copy_job(project) -> str:
    # `data`: a type whose content chute does not check, so the bytes of the run's reads are only its own
    project.module("copy", NOTE, inputs={"input": "data"}, outputs={"output": "data"})
    project.job("copy_job", [("copy", [entry("copy", outputs={"output": "copy.mp4"})])], input_type="data")
    return "copy_job"


def _rchar() -> int:
    """Bytes this process has read with read(2) and friends so far (/proc/self/io): what staging and hashing cost."""
    for line in Path("/proc/self/io").read_text().splitlines():
        if line.startswith("rchar:"):
            return int(line.split()[1])
    raise AssertionError("no rchar in /proc/self/io")


def test_a_result_lists_its_input_hashed_once_and_its_mhl_passes_the_reference_tool(project, tmp_path, copy_job):
    user_file = tmp_path / "drop" / "clip.mp4"
    user_file.parent.mkdir()
    data = bytes(range(256)) * (32 << 12)  # 32 MiB: far more than everything else a run reads
    user_file.write_bytes(data)
    spec = project.claimed_spec(copy_job, user_file, mhl=True, on_success="delete")

    before = _rchar()
    result = execute(spec, modules=project.launcher)
    read = _rchar() - before

    assert result.status == "succeeded", result.error
    manifest = read_json(result.result_dir / "manifest.json")
    assert manifest["input"]["sha256"] == sha256_of_bytes(data)
    assert manifest["inputs"] == [
        {
            "name": "clip.mp4",
            "size": len(data),
            "hashes": {"sha256": sha256_of_bytes(data), "xxh128": xxhash.xxh3_128(data).hexdigest()},
            "verified_by": [],
        }
    ]
    # Staging (a copy, or a link) and verifying read the input once (rchar counts this process and its
    # reaped children: the module reads nothing).
    assert len(data) <= read < 1.5 * len(data), f"{read} bytes read for a {len(data)}-byte input"
    check = subprocess.run([str(ASCMHL_DEBUG), "verify", str(result.result_dir)], capture_output=True, text=True)
    assert check.returncode == 0, check.stdout + check.stderr
    assert sorted(p.name for p in (result.result_dir / "ascmhl").iterdir())[1] == "ascmhl_chain.xml"
    with open(result.result_dir / "copy.mp4", "r+b") as f:
        f.seek(1000)
        f.write(b"\xff")
    check = subprocess.run([str(ASCMHL_DEBUG), "verify", str(result.result_dir)], capture_output=True, text=True)
    assert check.returncode != 0 and "copy.mp4" in check.stdout + check.stderr


def sha256_of_bytes(data: bytes) -> str:
    import hashlib

    return hashlib.sha256(data).hexdigest()


def test_verify_required_quarantines_a_file_without_checksum_running_nothing(project, clip, copy_job):
    digest = sha256_of(clip)
    spec = project.claimed_spec(copy_job, clip, verify="required")

    result = execute(spec, modules=project.launcher)

    assert result.status == "failed"
    assert result.error["reason"] == "no checksum: clip.mp4"
    folder = Path(result.result_dir)
    report = read_json(folder / "report.json")
    assert report["error"]["reason"] == "no checksum: clip.mp4" and report["steps"] == []
    assert [i["name"] for i in report["inputs"]] == ["clip.mp4"]
    assert sha256_of(folder / "clip.mp4") == digest  # the user's file, whole, in the quarantine
    assert not Path(spec.claim).exists()
    assert not list(spec.owner_dir.glob(f"{spec.run_id}.*"))  # no workspace left
    assert not list(project.outbox.iterdir())


def test_verify_off_and_auto_run_a_file_without_checksum(project, clip, copy_job):
    for mode in ("off", "auto"):
        user_file = clip.with_name(f"{mode}.mp4")
        user_file.write_bytes(clip.read_bytes())
        result = execute(project.claimed_spec(copy_job, user_file, verify=mode), modules=project.launcher)
        assert result.status == "succeeded", result.error
        assert read_json(result.result_dir / "manifest.json")["inputs"][0]["verified_by"] == []


def test_an_io_error_while_verifying_defers_the_run_and_keeps_the_delivery_whole(project, tmp_path, copy_job):
    user_file = tmp_path / "drop" / "clip.mov"
    user_file.parent.mkdir()
    user_file.write_bytes(b"the video")
    spec = project.claimed_spec(copy_job, user_file, unit="stem")
    sidecar = Path(spec.claim) / "clip.srt"
    sidecar.write_text("subtitles")
    # Every read of this member fails with the kernel's own EIO, as a dying disk's or a dropped share's
    # does: /proc/<pid>/mem of a child of ours, read at an unmapped address, bind-mounted over it.
    sleeper = subprocess.Popen(["sleep", "60"])
    mounted = subprocess.run(["mount", "--bind", f"/proc/{sleeper.pid}/mem", str(sidecar)], capture_output=True)
    try:
        if mounted.returncode != 0:
            pytest.skip(f"cannot bind-mount here (needs root): {mounted.stderr.decode().strip()}")
        result = execute(spec, modules=project.launcher)
    finally:
        if mounted.returncode == 0:
            subprocess.run(["umount", str(sidecar)], check=True)
        sleeper.kill()
        sleeper.wait()

    assert result.status == RunStatus.DEFERRED and result.fault == Fault.MACHINE  # the machine's fault: it waits
    assert result.error["reason"].endswith(f"Input/output error ({sidecar})"), result.error["reason"]
    assert sorted(p.name for p in Path(spec.claim).iterdir() if not p.name.startswith(".")) == ["clip.mov", "clip.srt"]
    assert list(project.quarantine.iterdir()) == [] and list(project.outbox.iterdir()) == []
    assert not list(spec.owner_dir.glob(f"{spec.run_id}.*"))  # its workspace is gone


def test_an_input_named_in_latin_1_is_listed_with_its_exact_bytes(project, tmp_path, copy_job):
    import base64
    import os

    user_file = tmp_path / "drop" / os.fsdecode(b"caf\xe9.mov")
    user_file.parent.mkdir()
    user_file.write_bytes(b"the video")
    result = execute(project.claimed_spec(copy_job, user_file), modules=project.launcher)
    assert result.status == "succeeded", result.error
    (listed,) = read_json(result.result_dir / "manifest.json")["inputs"]
    assert listed["name"] == "caf\\xe9.mov" and base64.b64decode(listed["name_b64"]) == b"caf\xe9.mov"


def test_a_stems_copied_sidecar_is_read_once_with_its_main_file(project, tmp_path):
    """Staging copies here (root: a link could be written through); each byte of the delivery is still read once."""
    project.module("pair", NOTE, inputs={"input": "data", "subs": "data"}, outputs={"output": "data"})
    job = project.job(
        "pair_job", [("pair", [entry("pair", {"input": "clip.mp4", "subs": "subs.srt"}, {"output": "o"})])]
    )
    doc = yaml.safe_load(job.read_text())
    doc["input_artifacts"] = [
        {"param_name": "input", "type": "data", "name": "clip.mp4"},
        {"param_name": "subs", "type": "data", "name": "subs.srt", "match": "*.srt"},
    ]
    job.write_text(yaml.safe_dump(doc, sort_keys=False))
    drop = tmp_path / "drop"
    drop.mkdir()
    main, sidecar = (
        bytes(range(256)) * (64 << 8),
        b"1\n00:00:00,000 --> 00:00:01,000\nhi\n" * (400 << 10),
    )  # 4 + 14 MiB
    (drop / "clip.mp4").write_bytes(main)
    (drop / "clip.srt").write_bytes(sidecar)
    spec = project.claimed_spec("pair_job", drop / "clip.mp4", unit="stem", on_success="delete")
    (drop / "clip.srt").rename(Path(spec.claim) / "clip.srt")

    before = _rchar()
    result = execute(spec, modules=project.launcher)
    read = _rchar() - before

    assert result.status == "succeeded", result.error
    listed = {i["name"]: i for i in read_json(result.result_dir / "manifest.json")["inputs"]}
    assert listed["clip.srt"]["hashes"]["xxh128"] == xxhash.xxh3_128(sidecar).hexdigest()
    assert listed["clip.mp4"]["size"] == len(main)
    total = len(main) + len(sidecar)
    assert total <= read < 1.3 * total, f"{read} bytes read for a {total}-byte delivery"
