"""Answers a user gets and mistakes caught (contract §7, §11; issue 21, findings 1, 3, 4 and 5).

Through the real `chute` command and a real daemon on real folders.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.harness import CHUTE, Daemon, Setup, drop, files, ledger_runs, status_json, wait_until

REPO = Path(__file__).resolve().parents[2]


def chute(*args: str, cwd: Path | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([str(CHUTE), *args], capture_output=True, text=True, timeout=timeout, cwd=cwd)


def test_a_missing_inbox_is_an_outage_never_created_and_is_watched_until_it_appears(tmp_path):
    setup = Setup(tmp_path)
    inbox = setup.inbox(create=False)  # the default: a share not mounted yet is never made
    path = Path(inbox["path"])
    config = setup.write()
    check = chute("check", "--config", str(config))
    assert check.returncode == 0, check
    assert f"warning: inboxes[0].path {path} does not exist: the daemon waits for it" in check.stdout
    assert check.stdout.endswith("ok\n")
    with Daemon(config) as d:
        d.wait_event("inbox.unavailable", inbox=str(path))
        assert not path.exists(), "the daemon created a missing inbox (create: false)"
        path.mkdir()  # the share is mounted
        d.wait_event("inbox.available", inbox=str(path))
        drop(path, "late.bin", b"after the mount\n")
        wait_until(lambda: files(Path(inbox["archive"])) == ["late.bin"], 60)
        assert d.stop() == 0


def test_an_inbox_with_create_true_is_made_at_start(tmp_path):
    setup = Setup(tmp_path)
    inbox = setup.inbox(create=True)
    assert not Path(inbox["path"]).exists()
    with Daemon(setup.write()) as d:
        assert Path(inbox["path"]).is_dir()
        assert d.events("inbox.unavailable") == []
        assert d.stop() == 0


def test_chute_run_on_the_embedded_default_still_makes_its_var_folders(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "NOTIFY_SOCKET"}
    with open(tmp_path / "daemon.log", "wb") as log:
        proc = subprocess.Popen([str(CHUTE), "run"], cwd=tmp_path, stdout=log, stderr=subprocess.STDOUT, env=env)
        try:
            wait_until(lambda: "daemon.started" in (tmp_path / "daemon.log").read_text(), 60)
            for folder in ("inbox", "outbox", "quarantine", "done"):
                assert (tmp_path / "var" / folder / "example").is_dir(), folder
            assert "inbox.unavailable" not in (tmp_path / "daemon.log").read_text()
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(60) == 0
        finally:
            proc.kill()
            proc.wait()


def test_status_prints_each_failed_runs_reason_and_a_second_retry_names_the_new_run(tmp_path):
    setup = Setup(tmp_path)
    inbox = setup.inbox()
    config = setup.write()
    quarantine = Path(inbox["quarantine"])
    with Daemon(config) as d:
        drop(Path(inbox["path"]), "bad.bin", b"fail\n")
        wait_until(lambda: files(quarantine) == ["bad"], 60)
        wait_until(lambda: any(r.state.value == "failed" for r in ledger_runs(config)), 30)
        (failed,) = ledger_runs(config)
        status = chute("status", "--config", str(config))
        assert status.returncode == 0, status
        line = next(x for x in status.stdout.splitlines() if failed.run_id in x)
        reason = failed.error["reason"]
        assert "failed" in line and " ".join(reason.split()) in line, status.stdout
        assert status_json(config)["recent"][0]["error"]["reason"] == reason

        first = chute("retry", failed.run_id, "--config", str(config))
        assert first.returncode == 0, first
        again = chute("retry", failed.run_id, "--config", str(config))
        assert again.returncode == 1
        # Claimed again (and failed again): the second retry names the run that took the file.
        wait_until(lambda: len([r for r in ledger_runs(config) if r.state.value == "failed"]) == 1, 60)
        wait_until(lambda: len(ledger_runs(config)) == 2, 30)
        (new,) = [r for r in ledger_runs(config) if r.run_id != failed.run_id]
        again = chute("retry", failed.run_id, "--config", str(config))
        assert again.returncode == 1
        assert again.stderr == f"{failed.run_id}: already retried as {new.run_id}\n"
        assert d.stop() == 0


def _media_config(tmp_path: Path, job: str) -> tuple[Path, dict]:
    inbox = {
        "path": str(tmp_path / "inbox"),
        "job": job,
        "outbox": str(tmp_path / "outbox"),
        "quarantine": str(tmp_path / "quarantine"),
        "on_success": "delete",
        "settle": 0.3,
        "create": True,
    }
    tmp_path.mkdir()
    config = tmp_path / "config.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "modules_path": [str(REPO / "modules")],
                "jobs_path": [str(REPO / "jobs")],
                "state_dir": str(tmp_path / "state"),
                "work_dir": str(tmp_path / "work"),
                "log": {"format": "json"},
                "defaults": {"poll_interval": 0.5},
                "inboxes": [inbox],
            }
        )
    )
    return config, inbox


@pytest.mark.parametrize("job", ["example_job", "media_ingest"])
def test_a_fake_mp4_is_quarantined_with_a_reason_naming_it_and_the_check_that_refused_it(tmp_path, job):
    pytest.importorskip("av", reason="the input check needs chute[media]")
    config, inbox = _media_config(tmp_path / job, job)
    folder = Path(inbox["quarantine"]) / "clip"
    with Daemon(config) as d:
        drop(Path(inbox["path"]), "clip.mp4", os.urandom(4096))
        wait_until(lambda: (folder / "report.json").exists(), 60)
        assert d.stop() == 0
    report = json.loads((folder / "report.json").read_text())
    error = report["error"]
    assert error["reason"].startswith("clip.mp4 is not a video: it is not a media file PyAV can read ("), error
    assert str(tmp_path / job / "work") not in error["reason"]  # never the deleted workspace's copy
    assert (error["check"], error["step"], error["module"]) == ("input", None, None)
    assert report["steps"] == [] and not (folder / "logs").exists()  # no module ran: no log to keep
    assert (folder / "clip.mp4").is_file()


def test_a_quarantine_after_a_module_ran_has_each_modules_log(tmp_path):
    setup = Setup(tmp_path)
    inbox = setup.inbox()
    with Daemon(setup.write()) as d:
        drop(Path(inbox["path"]), "bad.bin", b"fail\n")
        folder = Path(inbox["quarantine"]) / "bad"
        wait_until(lambda: (folder / "report.json").exists(), 60)
        assert d.stop() == 0
    error = json.loads((folder / "report.json").read_text())["error"]
    assert (error["step"], error["module"]) == ("first", "copy")
    logs = sorted((folder / "logs").iterdir())
    assert logs and "this input asks to fail" in logs[0].read_text()


def test_chute_init_writes_a_starter_that_checks_and_reaches_its_own_and_the_bundled_jobs(tmp_path):
    folder = tmp_path / "site"
    made = chute("init", str(folder), cwd=tmp_path)
    assert made.returncode == 0, made
    assert made.stdout.splitlines()[0] == "wrote site/config.yaml"
    config = folder / "config.yaml"
    assert config.read_text().startswith("# yaml-language-server: $schema=chute.schema.json\n")
    assert json.loads((folder / "chute.schema.json").read_text())["properties"]["inboxes"]
    for name in ("modules", "jobs", "var/state", "var/work", "var/inbox/example", "var/quarantine/example"):
        assert (folder / name).is_dir(), name
    (folder / "jobs" / "mine.yaml").write_text(
        (REPO / "jobs" / "example_job.yaml").read_text().replace("name: example_job", "name: mine")
    )
    check = chute("check", "--config", str(config), cwd=tmp_path)
    assert check.returncode == 0, check
    assert "jobs     5: card_ingest, example_job, media_ingest, mine, proxy" in check.stdout
    assert "warning" not in check.stdout

    before = config.read_bytes()
    again = chute("init", str(folder), cwd=tmp_path)
    assert (again.returncode, again.stdout) == (1, "")
    assert again.stderr == f"chute: {config} already exists: chute init never overwrites a config\n"
    assert config.read_bytes() == before
