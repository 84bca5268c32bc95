"""What `chute web` costs on a big ledger: p50/p95 of every page and API call, and its idle CPU.

Usage: .venv/bin/python bench/web.py [--runs 1000000] [--repeat 40] [--idle 60] [--keep DIR]

Builds a ledger of `--runs` runs as bench/status.py does (most succeeded, some failed with a reason;
finished over the last 90 days; eight inboxes), or reuses the one in `--keep DIR` (opened once first,
which migrates it to this chute's schema, as the daemon would). A config names its eight inboxes. Then
`chute web` (the `chute` beside this Python) is started on a free loopback port with a token, each
endpoint is asked once to warm up and `--repeat` times more, one request at a time on a new connection
(as a browser's poll), and the median and 95th percentile are printed against the issue's target of
200 ms. Last, the web process is left alone for `--idle` seconds and the CPU it used is read from /proc.
No daemon runs: the control socket answers "no daemon" at once, so the times are the ledger's and the
page's own.
"""

from __future__ import annotations

import argparse
import http.client
import importlib.util
import json
import os
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import date, timedelta
from pathlib import Path

from chute.ledger import FILE, Ledger

ROOT = Path(__file__).resolve().parents[1]
CHUTE = Path(sys.executable).with_name("chute")
TARGET_MS = 200
TOKEN = "bench-token-0123456789abcdef"
_spec = importlib.util.spec_from_file_location("bench_status", ROOT / "bench" / "status.py")
assert _spec and _spec.loader
status_bench = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(status_bench)


def config_for(folder: Path) -> Path:
    """A config over the bench ledger's eight inboxes, with a token file for `chute web`."""
    token = folder / "web-token"
    token.write_text(TOKEN)
    token.chmod(0o600)
    inboxes = "".join(
        f"  - {{path: /srv/media/inbox/library-{i}, job: example_job, outbox: {folder}/out, quarantine: {folder}/q,"
        f" on_success: delete}}\n"
        for i in range(8)
    )
    config = folder / "web.yaml"
    config.write_text(
        f"modules_path: [{json.dumps(str(ROOT / 'modules'))}]\njobs_path: [{json.dumps(str(ROOT / 'jobs'))}]\n"
        f"state_dir: {json.dumps(str(folder / 'state'))}\nwork_dir: {json.dumps(str(folder / 'work'))}\n"
        f"web: {{token_file: {json.dumps(str(token))}}}\nlog: {{format: json}}\ninboxes:\n{inboxes}"
    )
    return config


def start(config: Path, log: Path) -> tuple[subprocess.Popen, int]:
    out = open(log, "wb")
    proc = subprocess.Popen(
        [str(CHUTE), "web", "--config", str(config), "--listen", "127.0.0.1:0"], stdout=out, stderr=out
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        for line in log.read_text().splitlines():
            event = json.loads(line)
            if event.get("event") == "web.started":
                return proc, int(event["listen"].rsplit(":", 1)[1])
        if proc.poll() is not None:
            raise SystemExit(f"chute web exited {proc.returncode}: {log.read_text()}")
        time.sleep(0.1)
    raise SystemExit("chute web did not start within 60 s")


def ask(port: int, path: str) -> tuple[float, bool]:
    """Milliseconds for one GET on a new connection, body read, and whether the answer was whole (not a
    search stopped at its budget); SystemExit on anything but 200."""
    begin = time.perf_counter()
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    conn.request("GET", path, headers={"Authorization": f"Bearer {TOKEN}"})
    reply = conn.getresponse()
    body = reply.read()
    conn.close()
    if reply.status != 200:
        raise SystemExit(f"GET {path}: {reply.status}")
    stopped = reply.getheader("x-chute-complete") == "false" or b"The search stopped" in body
    stopped = stopped or (path.startswith("/api/runs?") and not json.loads(body)["complete"])
    return (time.perf_counter() - begin) * 1000, not stopped


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def with_figures(state: Path) -> None:
    """Every finished run gets the figures the daemon records (four entries, bytes out), for /stats."""
    entries = [["probe", "succeeded", 0.4], ["proxy", "succeeded", 12.5], ["loudness", "succeeded", 2.2]]
    db = sqlite3.connect(state / FILE, isolation_level=None)
    try:
        if "figures" in {row[1] for row in db.execute("PRAGMA table_info(runs)")}:
            figures = json.dumps({"entries": [*entries, ["waveform", "succeeded", 1.1]], "bytes_out": 12_345_678})
            db.execute("UPDATE runs SET figures = ? WHERE state IN ('succeeded', 'failed')", (figures,))
    finally:
        db.close()


def endpoints(state: Path) -> list[str]:
    ledger = Ledger(state, readonly=True)
    try:
        some = ledger.recent(1)[0].run_id
    finally:
        ledger.close()
    inbox = "/srv/media/inbox/library-3"
    today, month_ago = date.today(), date.today() - timedelta(days=30)
    return [
        "/",
        "/fragments/overview",
        "/runs",
        "/runs?offset=450",
        "/runs?state=failed",
        "/runs?job=example_job",
        f"/runs?inbox={inbox}",
        "/runs?q=clip-0999",  # a name part few runs have: past the newest runs, the trigram index
        "/runs?q=nosuchname",  # nothing matches
        "/runs?q=no",  # too short for the index: read newest first, to its budget
        f"/runs?since={month_ago}&until={today}",
        "/failures",
        "/failures?q=clip-00",
        f"/runs/{some}",
        "/stats",  # the last 48 hours' figures: ~22,000 runs of the million
        "/api/inboxes",
        "/api/runs",
        "/api/runs?state=failed&limit=500",
        "/api/runs?q=clip-0999",
        f"/api/runs/{some}",
        f"/api/runs.csv?state=failed&since={today}",  # an export of a day's failures
        "/api/runs.csv?q=clip-09999",  # an export of a filter that matches only old runs
        "/api/openapi.json",
    ]


def main() -> None:
    sys.stdout.reconfigure(line_buffering=True)  # each line as it is measured, into a file too
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=40)
    parser.add_argument("--idle", type=float, default=60.0)
    parser.add_argument("--keep", type=Path, help="build the ledger here and leave it; reuse the one there")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="chute-bench-web-") as tmp:
        folder = args.keep or Path(tmp)
        folder.mkdir(parents=True, exist_ok=True)
        begin = time.perf_counter()
        if (folder / "state" / FILE).is_file():
            Ledger(folder / "state").close()  # migrated, when the chute under test is newer than its maker
            print(f"ledger: reused from {folder}, opened (migrated) in {time.perf_counter() - begin:.1f} s")
        else:
            status_bench.build(folder, args.runs)
            Ledger(folder / "state").close()
            with_figures(folder / "state")
            print(f"ledger: {args.runs} runs, built in {time.perf_counter() - begin:.1f} s")
        print(f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
        proc, port = start(config_for(folder), folder / "web.log")
        try:
            worst = 0.0
            for path in endpoints(folder / "state"):
                ask(port, path)
                answers = [ask(port, path) for _ in range(args.repeat)]
                times = sorted(ms for ms, _ in answers)
                p95 = times[min(len(times) - 1, int(len(times) * 0.95))]
                worst = max(worst, p95)
                verdict = "ok" if p95 <= TARGET_MS else f"over {TARGET_MS} ms"
                stopped = sum(not whole for _, whole in answers)
                verdict += f", {stopped} of {len(answers)} stopped at the budget" if stopped else ""
                print(f"{path:<45} p50 {statistics.median(times):7.1f} ms  p95 {p95:7.1f} ms  {verdict}")
            print(f"worst p95: {worst:.1f} ms (target {TARGET_MS} ms)")
            before = cpu_seconds(proc.pid)
            time.sleep(args.idle)
            used = cpu_seconds(proc.pid) - before
            print(f"idle CPU over {args.idle:.0f} s: {used:.3f} s ({100 * used / args.idle:.2f} %)")
        finally:
            proc.terminate()
            proc.wait(30)


if __name__ == "__main__":
    main()
