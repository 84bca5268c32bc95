"""`chute web`'s JSON API and pages against a real `chute web` process and a real daemon (contract §13).

One daemon and one web process serve the whole module: files are dropped once (one succeeds, three
fail), and each test reads or acts on what they left. Every security rule has its own test.
"""

from __future__ import annotations

import csv
import io
import os
import sqlite3
import threading
from pathlib import Path

import pytest
from chute.control_client import request
from chute.ledger import FILE

from tests.harness import Daemon, Setup, drop, files, ledger_runs, state_dir_of, status_json, wait_until
from tests.web import Web, csrf_of

TOKEN = "t0ken-" + "a1b2c3d4e5f6a7b8c9d0"


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    root = tmp_path_factory.mktemp("web")
    setup = Setup(root)
    inbox = setup.inbox("in")
    other = setup.inbox("other")
    token_file = root / "web-token"
    token_file.write_text(TOKEN + "\n")
    token_file.chmod(0o600)
    config = setup.write(web={"token_file": str(token_file), "allowed_hosts": ["chute.test"]})
    daemon = Daemon(config).start()
    web = Web(config, token=TOKEN).__enter__()
    try:
        drop(Path(inbox["path"]), "good-1.bin", b"ok\n")
        for name in ("broken-1.bin", "bulk-1.bin", "bulk-2.bin"):
            drop(Path(inbox["path"]), name, b"fail\n")
        wait_until(lambda: len([r for r in ledger_runs(config) if r.finished_at]) == 4, 30)
        yield {"config": config, "inbox": inbox, "other": other, "web": web, "daemon": daemon, "root": root}
    finally:
        try:
            web.stop()
        finally:
            problems = daemon.finish()
    assert not problems, problems


def run_named(config: Path, name: str):
    """The first run of this name (a retried input that fails again makes a second one, later)."""
    return min((r for r in ledger_runs(config) if r.input_name == name), key=lambda r: r.queued_at)


def state_of(config: Path, run_id: str) -> str:
    return next(r.state.value for r in ledger_runs(config) if r.run_id == run_id)


def test_api_inboxes_says_each_inbox_state_and_counts_and_the_daemon(site):
    web, inbox = site["web"], site["inbox"]
    document = web.get("/api/inboxes").json()
    assert document["daemon"]["up"] and document["daemon"]["pid"] == site["daemon"].daemon_pid()
    row = next(i for i in document["inboxes"] if i["inbox"] == inbox["path"])
    assert row | {"waiting": 0, "running": 0} == {
        "inbox": inbox["path"],
        "job": "twostep",
        "state": "watching",
        "paused": False,
        "waiting": 0,
        "running": 0,
        "done_today": 1,
        "failed_today": 3,
    }
    assert [d["pid"] for d in document["daemons"]] == [site["daemon"].daemon_pid()]
    assert document["daemons"][0]["heartbeat_age_s"] < 60
    # The pool's two workers, each with the age of its last heartbeat as the daemon saw it.
    assert len(document["workers"]) == 2 and all(w["heartbeat_age_s"] < 60 for w in document["workers"])
    assert all(w["worker"] in web.get("/fragments/overview").text for w in document["workers"])


def test_api_runs_filters_by_state_job_inbox_and_name(site):
    web, inbox = site["web"], site["inbox"]
    names = lambda query: sorted(r["input_name"] for r in web.get(f"/api/runs?{query}").json()["runs"])  # noqa: E731
    assert names("") == ["broken-1.bin", "bulk-1.bin", "bulk-2.bin", "good-1.bin"]
    assert names("state=failed") == ["broken-1.bin", "bulk-1.bin", "bulk-2.bin"]
    assert names("state=succeeded&job=twostep") == ["good-1.bin"]
    assert names("q=BULK") == ["bulk-1.bin", "bulk-2.bin"]
    assert len(names(f"inbox={inbox['path']}")) == 4 and names(f"inbox={site['other']['path']}") == []
    assert names("job=nosuchjob") == []
    assert names("since=2000-01-01&until=2000-01-02") == []
    page = web.get("/api/runs?limit=2").json()
    assert len(page["runs"]) == 2 and page["complete"] and "offset=2" in page["next"]
    rest = web.get(page["next"]).json()["runs"]
    assert {r["run_id"] for r in rest}.isdisjoint(r["run_id"] for r in page["runs"])
    assert web.get("/api/runs?state=nosuchstate").status == 400
    assert web.get("/api/runs?limit=100000").status == 400


def test_api_one_run_has_its_row_reason_and_manifest_or_report(site):
    web, config = site["web"], site["config"]
    good = web.get(f"/api/runs/{run_named(config, 'good-1.bin').run_id}").json()
    assert good["state"] == "succeeded" and good["manifest"]["status"] == "succeeded"
    broken = web.get(f"/api/runs/{run_named(config, 'broken-1.bin').run_id}").json()
    assert broken["state"] == "failed" and broken["reason"] and broken["report"] is not None
    assert web.get("/api/runs/nosuchrun").status == 404


def test_exports_hold_what_the_filter_shows(site):
    web = site["web"]
    rows = list(csv.DictReader(io.StringIO(web.get("/api/runs.csv?state=failed").text)))
    assert sorted(r["input_name"] for r in rows) == ["broken-1.bin", "bulk-1.bin", "bulk-2.bin"]
    assert all(r["reason"] for r in rows)
    document = web.get("/api/runs.json?q=good").json()
    assert [r["input_name"] for r in document["runs"]] == ["good-1.bin"] and document["complete"]
    assert web.get("/api/runs.xml").status == 404
    assert web.get("/api/openapi.json").json()["paths"]["/api/runs"]["get"]


def test_pages_show_inboxes_running_history_and_failures(site):
    web, inbox = site["web"], site["inbox"]
    overview = web.get("/").text
    assert inbox["path"] in overview and 'hx-get="/fragments/overview"' in overview
    assert inbox["path"] in web.get("/fragments/overview").text
    history = web.get("/runs?q=good").text
    assert "good-1.bin" in history and "bulk-1.bin" not in history
    assert "/api/runs.csv?q=good" in history  # the export of the same filter
    failures = web.get("/failures").text
    assert all(n in failures for n in ("broken-1.bin", "bulk-1.bin", "bulk-2.bin")) and "good-1.bin" not in failures
    assert "Retry all 3 matching" in failures


def test_pause_and_resume_an_inbox_through_the_api_and_the_form(site):
    web, inbox = site["web"], site["inbox"]
    assert web.post("/api/inboxes/pause", {"inbox": inbox["path"]}).json()["changed"] == [inbox["path"]]
    assert status_json(site["config"])["paused"] == [inbox["path"]]
    row = next(i for i in web.get("/api/inboxes").json()["inboxes"] if i["inbox"] == inbox["path"])
    assert row["state"] == "paused"
    csrf = csrf_of(web.get("/").text)
    form = f"csrf={csrf}&inbox={inbox['path']}".encode()
    done = web.post("/inboxes/resume", form, headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert done.status == 303
    assert status_json(site["config"])["paused"] == []
    assert web.post("/api/inboxes/pause", {"inbox": "/no/such/inbox"}).status == 404


def test_retry_one_through_the_daemon_then_it_succeeds_and_a_second_retry_says_as_what(site):
    web, config, inbox = site["web"], site["config"], site["inbox"]
    broken = run_named(config, "broken-1.bin")
    (Path(broken.result) / "broken-1.bin").write_bytes(b"fixed\n")  # what the operator fixed
    answer = web.post(f"/api/runs/{broken.run_id}/retry", {})
    assert answer.status == 200 and answer.json() == {"retried": 1, "problems": []}
    site["daemon"].wait_event("run.retried", run_id=broken.run_id)
    wait_until(lambda: "broken-1.bin" in " ".join(files(Path(inbox["archive"]))), 30)
    again = web.post(f"/api/runs/{broken.run_id}/retry", {})
    assert again.status == 409 and "already retried as" in again.json()["problems"][0]
    good = run_named(config, "good-1.bin")
    assert "not a quarantined run" in web.post(f"/api/runs/{good.run_id}/retry", {}).json()["problems"][0]
    assert web.post("/api/runs/nosuchrun/retry", {}).status == 404


def test_bulk_retry_of_a_filter_returns_the_count(site):
    web, config = site["web"], site["config"]
    ids = [run_named(config, n).run_id for n in ("bulk-1.bin", "bulk-2.bin")]
    answer = web.post("/api/runs/retry", {"filter": {"q": "bulk-"}})
    assert answer.status == 200 and answer.json()["retried"] == 2
    assert [state_of(config, i) for i in ids] == ["retried", "retried"]
    assert web.post("/api/runs/retry", {"runs": "not a list"}).status == 400


# --- security (docs/web.md, "Security"): each rule fails its test without it ---


def test_every_request_needs_the_token(site):
    web = site["web"]
    for path in ("/", "/runs", "/failures", "/api/inboxes", "/api/runs", "/api/runs.csv", "/fragments/overview"):
        assert web.get(path, auth=False).status == 401, path
        assert web.get(path, auth=False, headers={"Authorization": "Bearer wrong-token-xxxxxxxx"}).status == 401
    assert web.post("/api/inboxes/pause", {"inbox": site["inbox"]["path"]}, auth=False).status == 401
    assert status_json(site["config"])["paused"] == []
    assert 'name="token"' in web.get("/", auth=False).text  # a browser is shown the login form


def test_login_sets_a_strict_http_only_cookie_and_a_cookie_post_needs_csrf(site):
    web = site["web"]
    login = web.get("/login", auth=False)
    csrf = csrf_of(login.text)
    form = {"Content-Type": "application/x-www-form-urlencoded"}
    wrong = web.post("/login", f"csrf={csrf}&token=nope".encode(), auth=False, headers=form)
    assert wrong.status == 401 and "set-cookie" not in wrong.headers
    done = web.post("/login", f"csrf={csrf}&token={TOKEN}".encode(), auth=False, headers=form)
    cookie = done.headers["set-cookie"]
    assert done.status == 303 and "HttpOnly" in cookie and "SameSite=strict" in cookie.replace("Strict", "strict")
    assert TOKEN not in cookie
    session = {"Cookie": cookie.split(";")[0]}
    assert web.get("/api/inboxes", auth=False, headers=session).status == 200
    # The login form's CSRF token, which anyone may see, is not the one of the pages behind it.
    stolen = f"csrf={csrf}&inbox={site['inbox']['path']}".encode()
    assert web.post("/inboxes/pause", stolen, auth=False, headers=session | form).status == 403
    csrf = csrf_of(web.get("/", auth=False, headers=session).text)
    pause = {"inbox": site["inbox"]["path"]}
    assert web.post("/api/inboxes/pause", pause, auth=False, headers=session).status == 403
    assert status_json(site["config"])["paused"] == []
    with_csrf = session | {"X-CSRF-Token": csrf}
    assert web.post("/api/inboxes/resume", pause, auth=False, headers=with_csrf).status == 200


def test_a_form_post_without_its_csrf_token_is_refused(site):
    web, inbox = site["web"], site["inbox"]
    form = {"Content-Type": "application/x-www-form-urlencoded"}
    for body in (f"inbox={inbox['path']}", f"csrf=0000&inbox={inbox['path']}"):
        assert web.post("/inboxes/pause", body.encode(), headers=form).status == 403
    assert status_json(site["config"])["paused"] == []


def test_an_unknown_host_is_refused_and_allowed_hosts_are_not(site):
    web = site["web"]
    assert web.get("/api/inboxes", headers={"Host": "evil.example"}).status == 400
    assert web.get("/api/inboxes", headers={"Host": "evil.example:8765"}).status == 400
    assert web.get("/api/inboxes", headers={"Host": "chute.test:8765"}).status == 200
    assert web.get("/api/inboxes", headers={"Host": "localhost"}).status == 200


def test_artifacts_are_served_only_from_the_result_folder(site):
    web, config, root = site["web"], site["config"], site["root"]
    good = run_named(config, "good-1.bin")
    served = web.get(f"/files/{good.run_id}/result.bin")
    assert served.body == b"ok\n" and "sandbox" in served.headers.get_all("content-security-policy")
    outside = root / "secret.txt"
    outside.write_text("secret")
    os.symlink(outside, Path(good.result) / "escape.txt")
    for path in (
        "../../secret.txt",
        "%2e%2e/%2e%2e/secret.txt",
        "..%2f..%2fsecret.txt",
        "%2e%2e%2f%2e%2e%2fsecret.txt",
        "escape.txt",
        "nosuchfile",
        "",
    ):
        answer = web.get(f"/files/{good.run_id}/{path}")
        assert answer.status == 404 and b"secret" not in answer.body, path
    assert web.get("/files/nosuchrun/result.bin").status == 404


def test_answers_carry_the_security_headers_and_no_secret(site):
    web = site["web"]
    for path in ("/", "/runs", "/failures", "/login", "/api/inboxes"):
        answer = web.get(path)
        assert "script-src 'self'" in answer.headers["content-security-policy"]
        assert "'unsafe-inline'" not in answer.headers["content-security-policy"]
        assert answer.headers["x-frame-options"] == "DENY" and answer.headers["x-content-type-options"] == "nosniff"
        assert TOKEN not in answer.text
        assert "<script>" not in answer.text and " onclick=" not in answer.text
    assert TOKEN not in web.text() and TOKEN not in site["daemon"].text()


def test_a_running_run_shows_its_step_and_progress_live(site):
    web, config, inbox = site["web"], site["config"], site["inbox"]
    drop(Path(inbox["path"]), "slow-1.bin", b"sleep=3\n")
    running = wait_until(lambda: [r for r in ledger_runs(config) if r.input_name == "slow-1.bin" and r.started_at], 20)
    run_id = running[0].run_id

    def progress():
        document = web.get(f"/api/runs/{run_id}").json()
        entries = (document.get("progress") or {}).get("entries") or []
        return document if any(e.get("fraction") for e in entries) else None

    document = wait_until(progress, 20)
    assert document["state"] == "running" and document["progress"]["step"] == "first"
    assert document["progress"]["elapsed_s"] >= 0
    fragment = web.get("/fragments/overview").text
    assert f'data-run="{run_id}"' in fragment and "<progress" in fragment and "step 1/2" in fragment
    assert "<span>copy</span>" in fragment  # the entry by its module, as `chute status` names it
    row = next(i for i in web.get("/api/inboxes").json()["inboxes"] if i["inbox"] == inbox["path"])
    assert row["running"] == 1
    wait_until(lambda: run_named(config, "slow-1.bin").state.value == "succeeded", 30)


def test_the_failures_page_retries_the_ticked_runs_and_all_that_match_once_confirmed(site):
    web, config, inbox = site["web"], site["config"], site["inbox"]
    for name in ("form-1.bin", "form-2.bin"):
        drop(Path(inbox["path"]), name, b"fail\n")
    wait_until(
        lambda: sum(r.state.value == "failed" and r.input_name.startswith("form-") for r in ledger_runs(config)) == 2
    )
    page = web.get("/failures?q=form-").text
    assert "Retry all 2 matching" in page
    form = {"Content-Type": "application/x-www-form-urlencoded"}
    confirm = f"csrf={csrf_of(page)}&all=1&q=form-&count="
    stale = web.post("/failures/retry", (confirm + "3").encode(), headers=form)
    assert stale.status == 409 and "2 runs match now, not 3" in stale.text  # nothing retried
    first = run_named(config, "form-1.bin").run_id
    ticked = web.post("/failures/retry", f"csrf={csrf_of(page)}&run={first}".encode(), headers=form)
    assert ticked.status == 200 and "Retried 1" in ticked.text
    # form-1's input, back in the inbox, fails again meanwhile: "all that match" names form-2 alone.
    rest = web.post("/failures/retry", f"csrf={csrf_of(page)}&all=1&q=form-2&count=1".encode(), headers=form)
    assert rest.status == 200 and "Retried 1" in rest.text
    assert {state_of(config, run_named(config, n).run_id) for n in ("form-1.bin", "form-2.bin")} == {"retried"}


def test_a_name_that_is_not_utf8_is_shown_escaped_in_pages_and_exact_in_the_api(site):
    web, config, inbox = site["web"], site["config"], site["inbox"]
    name = os.fsdecode(b"caf\xe9-1.bin")  # from a Latin-1 client of a share
    drop(Path(inbox["path"]), name, b"ok\n")
    wait_until(lambda: any(r.input_name == name and r.state.value == "succeeded" for r in ledger_runs(config)), 30)
    page = web.get("/runs?q=caf")
    assert page.status == 200 and "caf\\xe9-1.bin" in page.text
    [row] = web.get("/api/runs?q=caf").json()["runs"]
    assert row["input_name"] == "caf\\xe9-1.bin" and row["input_name_b64"] == "Y2Fm6S0xLmJpbg=="


def test_the_daemon_answers_status_while_a_retry_it_runs_waits(site):
    """A retry moves files on a thread of its own: the control socket still answers meanwhile (control.py)."""
    config, inbox = site["config"], site["inbox"]
    drop(Path(inbox["path"]), "lock-1.bin", b"fail\n")
    run = wait_until(lambda: next((r for r in ledger_runs(config) if r.input_name == "lock-1.bin" and r.result), None))
    state_dir = state_dir_of(config)
    # The ledger held by another writer: the retry moves the file, then waits to record it.
    holder = sqlite3.connect(state_dir / FILE, isolation_level=None, timeout=30)
    holder.execute("BEGIN IMMEDIATE")
    answer: dict = {}
    retry = threading.Thread(target=lambda: answer.update(request(state_dir, {"op": "retry", "runs": [run.run_id]})))
    retry.start()
    try:
        wait_until(lambda: not (Path(run.result) / "lock-1.bin").exists())
        assert request(state_dir, {"op": "status"}, timeout=5)["ok"]
        assert retry.is_alive()
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    retry.join(30)
    assert answer["results"] == [{"run_id": run.run_id, "ok": True, "message": answer["results"][0]["message"]}]
