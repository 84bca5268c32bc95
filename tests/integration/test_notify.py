"""Notifications (issue #15) against a real HTTP receiver on 127.0.0.1, through Apprise's json://.

The first tests drive `chute.notify.Notifications` as the service does; the last
ones run `chute run` and drop files, as a user would.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest
import structlog.testing
from chute import notify
from chute.catalog import load_catalog
from chute.config import NotifyTarget
from chute.notify import Notifications
from chute.telemetry import Telemetry

from tests.harness import Daemon, Setup, assert_processed_once, drop, files, ledger_runs, ledger_states, wait_until
from tests.webhook import Webhook, body_fields, refused_url

SECRET = "hunter22-not-for-logs"


@pytest.fixture
def webhook():
    with Webhook() as hook:
        yield hook


@pytest.fixture
def fast_retries(monkeypatch):
    monkeypatch.setattr(notify, "RETRY_DELAYS", (0.01, 0.01, 0.01))


@pytest.fixture
def notifications():
    """Notifications made by `make(targets)`, every one closed (and its threads ended) afterwards."""
    made: list[Notifications] = []

    def make(*targets: NotifyTarget) -> Notifications:
        n = Notifications(targets)
        n.start()
        made.append(n)
        return n

    yield make
    for n in made:
        n.close(timeout=1)
    wait_until(lambda: not _notify_threads(), 30)


def _notify_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("chute-notify-")]


PUBLISHED = dict(
    run_id="20261124T180512Z-3f9a1c", job="proxy", file="clip one.mp4", result="/srv/out/clip one", duration_s=12.345
)
QUARANTINED = dict(
    run_id="20261124T180514Z-77aa01",
    job="proxy",
    file="bad.mov",
    result="/srv/quarantine/bad",
    duration_s=0.5,
    reason="exited with status 2",
    step="analyse",
    module="probe",
)


def test_each_event_is_one_message_with_its_fields(webhook, notifications):
    n = notifications(NotifyTarget(url=webhook.url()))
    n.send("run.published", inbox="/srv/in", **PUBLISHED)
    n.send("run.quarantined", inbox="/srv/in", **QUARANTINED)
    n.send("inbox.unavailable", inbox="/srv/in", reason="the folder is gone")
    n.send("daemon.error", inbox=None, reason="ZeroDivisionError: division by zero")
    published, quarantined, unavailable, error = wait_until(lambda: len(webhook.answered()) == 4 and webhook.answered())

    assert published["type"] == "success" and published["title"].endswith("published clip one.mp4")
    assert body_fields(published) | {"host": "-"} == {
        "event": "run.published",
        "file": "clip one.mp4",
        "job": "proxy",
        "inbox": "/srv/in",
        "result": "/srv/out/clip one",
        "duration": "12.3 s",
        "run_id": "20261124T180512Z-3f9a1c",
        "host": "-",
    }
    assert quarantined["type"] == "failure" and quarantined["title"].endswith("quarantined bad.mov")
    fields = body_fields(quarantined)
    assert (fields["reason"], fields["step"], fields["module"], fields["result"]) == (
        "exited with status 2",
        "analyse",
        "probe",
        "/srv/quarantine/bad",
    )
    assert unavailable["type"] == "warning" and body_fields(unavailable)["reason"] == "the folder is gone"
    assert error["type"] == "failure" and body_fields(error)["reason"] == "ZeroDivisionError: division by zero"
    assert len(webhook.answered()) == 4  # one message each, no duplicates


def test_a_hostile_file_name_is_escaped_and_forges_no_line(webhook, notifications):
    """A newline in a name cannot add a `key: value` line; escapes and undecodable bytes arrive visible (issue 19)."""
    n = notifications(NotifyTarget(url=webhook.url()))
    name = os.fsdecode(b"\x1b]0;owned\x07caf\xe9.mov\nreason: all fine")
    n.send("run.quarantined", inbox="/srv/in", **dict(QUARANTINED, file=name))
    [message] = wait_until(lambda: webhook.answered())

    shown = "\\x1b]0;owned\\x07caf\\xe9.mov\\nreason: all fine"
    assert message["title"].endswith(f"quarantined {shown}")
    assert message["message"].count("\n") == 10  # event, the 9 fields, host: one line each
    fields = body_fields(message)
    assert fields["file"] == shown and fields["reason"] == "exited with status 2"
    assert "\x1b" not in message["message"] + message["title"]


def test_targets_hear_only_their_events_and_inboxes(tmp_path, notifications):
    (tmp_path / "in1").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "in1")
    with Webhook() as picky, Webhook() as everything:
        n = notifications(
            NotifyTarget(url=picky.url(), events=["run.quarantined"], inboxes=[tmp_path / "link"]),
            NotifyTarget(url=everything.url()),
        )
        n.send("run.published", inbox=str(tmp_path / "in1"), **PUBLISHED)
        n.send("run.quarantined", inbox=str(tmp_path / "in1"), **QUARANTINED)
        n.send("run.quarantined", inbox=str(tmp_path / "in2"), **QUARANTINED)
        n.send("daemon.error", inbox=None, reason="boom")
        n.close(timeout=10)  # everything queued goes out before close returns
        assert [(m["type"], body_fields(m)["inbox"]) for m in picky.answered()] == [("failure", str(tmp_path / "in1"))]
        assert len(everything.answered()) == 4


def test_a_failed_send_is_retried_and_logged_with_the_secret_masked(fast_retries, notifications, caplog):
    with Webhook(statuses=(503,)) as webhook, structlog.testing.capture_logs() as logs:
        n = notifications(NotifyTarget(url=webhook.url(f"chute:{SECRET}")))
        n.send("run.published", inbox="/srv/in", **PUBLISHED)
        wait_until(lambda: webhook.answered())
        n.close(timeout=5)
    failed = [e for e in logs if e["event"] == "notify.failed"]
    sent = [e for e in logs if e["event"] == "notify.sent"]
    assert [(e["attempt"], e["run_id"]) for e in failed] == [(1, PUBLISHED["run_id"])]
    assert "503" in failed[0]["error"] and failed[0]["retry_in_s"] == 0.01
    assert failed[0]["url"] == f"json://****@127.0.0.1:{webhook.port}/****"
    assert [e["attempt"] for e in sent] == [2]
    assert len(webhook.answered()) == 1
    everything = repr(logs) + caplog.text  # chute's events and any library's log record
    assert SECRET not in everything


def test_a_token_in_a_header_or_path_of_the_url_is_never_logged(fast_retries, notifications, caplog):
    with Webhook(statuses=(503,)) as webhook, structlog.testing.capture_logs() as logs:
        url = webhook.url() + f"/{SECRET}?-Authorization=Bearer%20{SECRET}"
        n = notifications(NotifyTarget(url=url))
        n.send("run.published", inbox="/srv/in", **PUBLISHED)
        wait_until(lambda: len(webhook.answered()) == 1)
        n.close(timeout=5)
    [sent] = [e for e in logs if e["event"] == "notify.sent"]
    assert sent["url"] == f"json://127.0.0.1:{webhook.port}/****"
    assert SECRET not in repr(logs) + caplog.text


def test_a_refusing_receiver_is_given_up_after_the_retries(fast_retries, notifications):
    with structlog.testing.capture_logs() as logs:
        n = notifications(NotifyTarget(url=refused_url(f"chute:{SECRET}")))
        n.send("run.quarantined", inbox="/srv/in", **QUARANTINED)
        wait_until(lambda: any(e["event"] == "notify.failed" and e["retry_in_s"] is None for e in logs))
    failed = [e for e in logs if e["event"] == "notify.failed"]
    assert [e["attempt"] for e in failed] == [1, 2, 3, 4]
    assert all(SECRET not in repr(e) for e in logs)


def test_a_hanging_receiver_never_holds_up_send_and_the_queue_is_bounded(monkeypatch, webhook, notifications):
    monkeypatch.setattr(notify, "QUEUE_SIZE", 5)
    webhook.hold()
    with structlog.testing.capture_logs() as logs:
        # rto: Apprise's read timeout, longer than the test holds the request.
        n = notifications(NotifyTarget(url=webhook.url(rto=120)))
        n.send("run.published", inbox="/srv/in", **dict(PUBLISHED, file="first.mp4"))
        wait_until(lambda: webhook.received == 1)  # the sending thread now waits on the receiver

        sender = threading.Thread(
            target=lambda: [
                n.send("run.published", inbox="/srv/in", **dict(PUBLISHED, file=f"f{i:02d}.mp4")) for i in range(8)
            ]
        )
        sender.start()
        sender.join(20)
        assert not sender.is_alive() and webhook.answered() == [], "send() waited for the receiver"
        dropped = [e["file"] for e in logs if e["event"] == "notify.dropped"]
        assert dropped == ["f05.mp4", "f06.mp4", "f07.mp4"]  # the 6th to 8th found 5 waiting

        webhook.release()
        wait_until(lambda: len(webhook.answered()) == 6)
    assert [body_fields(m)["file"] for m in webhook.answered()] == ["first.mp4"] + [f"f{i:02d}.mp4" for i in range(5)]


def test_close_does_not_wait_past_its_timeout_for_a_hanging_receiver(webhook, notifications):
    webhook.hold()
    n = notifications(NotifyTarget(url=webhook.url(rto=120)))
    n.send("run.published", inbox="/srv/in", **PUBLISHED)
    wait_until(lambda: webhook.received == 1)
    n.close(timeout=0.2)
    # close returned while the receiver still holds the request; the thread ends once it answers.
    assert webhook.answered() == [] and _notify_threads()
    webhook.release()
    wait_until(lambda: not _notify_threads())


def test_a_stop_keeps_the_back_off_and_drops_what_cannot_go_out_in_one_event(notifications):
    """Issue 19.7: at a stop, 50 queued messages to a failing receiver were retried back to back (~200 POSTs)."""
    with Webhook(statuses=(503,) * 500) as webhook, structlog.testing.capture_logs() as logs:
        n = notifications(NotifyTarget(url=webhook.url()))
        for i in range(50):
            n.send("run.published", inbox="/srv/in", **dict(PUBLISHED, file=f"f{i:02d}.mp4"))
        wait_until(lambda: any(e["event"] == "notify.failed" for e in logs))  # the first one now backs off (5 s)
        n.close(timeout=2)  # its next attempt would come after the stop's budget: none is made
        wait_until(lambda: not _notify_threads())
        assert webhook.received == 1
    [dropped] = [e for e in logs if e["event"] == "notify.dropped"]
    assert (dropped["count"], dropped["reason"]) == (50, "stopping")


def test_a_stop_sends_what_fits_in_its_budget_after_the_back_off(monkeypatch, notifications):
    monkeypatch.setattr(notify, "RETRY_DELAYS", (0.2, 0.2, 0.2))
    with Webhook(statuses=(503,)) as webhook, structlog.testing.capture_logs() as logs:
        n = notifications(NotifyTarget(url=webhook.url()))
        for i in range(3):
            n.send("run.published", inbox="/srv/in", **dict(PUBLISHED, file=f"f{i}.mp4"))
        n.close(timeout=30)  # waits until all went out
        assert [body_fields(m)["file"] for m in webhook.answered()] == ["f0.mp4", "f1.mp4", "f2.mp4"]
        assert webhook.received == 4
    assert [e["attempt"] for e in logs if e["event"] == "notify.failed"] == [1]
    assert not [e for e in logs if e["event"] == "notify.dropped"]


@pytest.mark.parametrize("change", ["unchanged", "target_added"])
def test_a_reload_keeps_what_is_queued_for_a_receiver_that_is_down(tmp_path, monkeypatch, change):
    """Issue 19.7: a reload that changed the notify list dropped (or burnt the retries of) every queued message."""
    monkeypatch.setattr(notify, "RETRY_DELAYS", (2.0, 2.0, 2.0))
    down = refused_url()  # the receiver is down when the reload comes, and back after it
    port = int(down.split("127.0.0.1:")[1].split("/")[0])
    with Webhook() as added, structlog.testing.capture_logs() as logs:
        setup = Setup(tmp_path)
        setup.inbox()
        before = load_catalog(setup.write("before", notify=[{"url": down}])).config
        targets = [{"url": down}] + ([{"url": added.url()}] if change == "target_added" else [])
        after = load_catalog(setup.write("after", notify=targets)).config
        telemetry = Telemetry(before)
        telemetry.start()
        try:
            for i in range(3):
                telemetry.notifications.send("run.published", inbox="/srv/in", **dict(PUBLISHED, file=f"f{i}.mp4"))
            wait_until(lambda: any(e["event"] == "notify.failed" for e in logs))
            old = _notify_threads()
            telemetry.reconfigure(after)
            if change == "target_added":  # the old targets' threads are done with what they had
                wait_until(lambda: not any(t.is_alive() for t in old))
            with Webhook(port=port) as back:
                telemetry.notifications.send("run.published", inbox="/srv/in", **dict(PUBLISHED, file="f3.mp4"))
                wait_until(lambda: len(back.answered()) == 4, 30)
                assert [body_fields(m)["file"] for m in back.answered()] == ["f0.mp4", "f1.mp4", "f2.mp4", "f3.mp4"]
                assert back.received == 4
        finally:
            telemetry.close()
        wait_until(lambda: not _notify_threads())
        expected = ["f3.mp4"] if change == "target_added" else []
        assert [body_fields(m)["file"] for m in added.answered()] == expected  # from the reload on
    assert not [e for e in logs if e["event"] == "notify.dropped"]


def test_no_targets_start_nothing():
    before = threading.active_count()
    n = Notifications([])
    n.start()
    n.send("run.published", inbox="/srv/in", **PUBLISHED)
    assert threading.active_count() == before
    n.close()


# --- the daemon: `chute run` with notify targets (the service's wiring) ---


def _drop_files(inbox: Path, good: int, bad: int = 0) -> dict[str, bytes]:
    inputs = {f"clip-{i:02d}.mov": f"clip {i}\n".encode() for i in range(good)}
    inputs.update({f"bad-{i:02d}.mov": b"fail\n" for i in range(bad)})
    for name, data in inputs.items():
        drop(inbox, name, data)
    return inputs


def test_the_daemon_sends_one_message_per_published_and_quarantined_file(tmp_path, webhook):
    setup = Setup(tmp_path, notify=[{"url": webhook.url()}])
    inbox = setup.inbox()
    config = setup.write()
    with Daemon(config) as d:
        _drop_files(Path(inbox["path"]), good=3, bad=2)
        wait_until(lambda: ledger_states(config) == {"succeeded": 3, "failed": 2}, 60)
        messages = wait_until(lambda: len(webhook.answered()) >= 5 and webhook.answered(), 20)
        assert d.stop() == 0
    assert len(webhook.answered()) == 5
    runs = {r.input_name: r for r in ledger_runs(config)}
    for m in messages:
        fields = body_fields(m)
        run = runs[fields["file"]]
        assert (fields["run_id"], fields["job"], fields["inbox"], fields["result"]) == (
            run.run_id,
            "twostep",
            inbox["path"],
            run.result,
        )
        assert fields["duration"].endswith(" s")
        if fields["file"].startswith("bad-"):
            assert (m["type"], fields["event"], fields["step"], fields["module"]) == (
                "failure",
                "run.quarantined",
                "first",
                "copy",
            )
            assert "status 3" in fields["reason"]
        else:
            assert (m["type"], fields["event"]) == ("success", "run.published") and "reason" not in fields


@pytest.mark.parametrize("receiver", ["hanging", "refusing"])
def test_a_hanging_or_refusing_receiver_delays_and_loses_no_file(tmp_path, webhook, receiver):
    """20 files drain as they do with notifications off, while the receiver has not answered once."""
    url = webhook.url(f"chute:{SECRET}", rto=120) if receiver == "hanging" else refused_url(f"chute:{SECRET}")
    webhook.hold()
    results = {}
    for mode, notify_targets in (("off", []), (receiver, [{"url": url}])):
        setup = Setup(tmp_path / mode, notify=notify_targets)
        inbox = setup.inbox()
        config = setup.write()
        with Daemon(config) as d:
            inputs = _drop_files(Path(inbox["path"]), good=20)
            wait_until(lambda config=config: ledger_states(config) == {"succeeded": 20}, 120)
            assert webhook.answered() == []  # every file went through while no message had been delivered
            if mode == "hanging":
                assert webhook.received >= 1  # ... and one was waiting on the receiver all along
            if mode == "refusing":
                failed = d.wait_event("notify.failed", timeout=20)
                assert "****" in failed[0]["url"]
            assert d.stop() == 0
            assert SECRET not in d.text()
        assert_processed_once(inbox, inputs)
        results[mode] = sorted(files(Path(inbox["outbox"])))
    assert results[receiver] == results["off"]
