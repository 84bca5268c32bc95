"""Whether 50 open overview pages slow the daemon's drain: bench/drain.py's drain, with and without them.

Usage: .venv/bin/python bench/web_load.py [--files 200] [--workers 2] [--pages 50] [--rounds 3] [--keep DIR]

Each round drains `--files` small files through bench/drain.py's job (left + right, then join; one
inbox, `watch: events`, `settle: 0`) twice, alternately: once with no `chute web` at all, once with
`chute web` running and `--pages` pollers asking it for what an open overview page asks: the live
fragment (`GET /fragments/overview`, which asks the daemon's control socket for its status) every
2 s (pages.POLL_S, htmx's `every 2s`), each on its own kept-alive connection with the token, their
starts spread over the first 2 s; they run in a child process at nice 19. The drain's time is
drain.py's: from starting `chute run` to the last input archived with its ledger row written.
Alternating the two rows, and comparing medians, keeps a change of load on a shared machine from
reading as the page's cost. The CPU each side spent is printed too: on a busy shared machine the
wall times vary by far more than 5 % from one drain to the next, and the CPU is the steadier figure.

The pollers are HTTP clients, not chromium pages: 50 chromium renderers on this 2-core machine would
measure chromium's own CPU, not what the page costs the daemon (a desk's browsers run on the desk's
machines), and what reaches chute from a page is exactly these requests. The web process itself runs
here, on the daemon's cores, as it would on a real host.

Prints each drain's time, the median of each row, their ratio (the issue's target: <= 1.05), and the
pollers' request count, failures and answer times.
"""

from __future__ import annotations

import argparse
import http.client
import multiprocessing
import os
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.drain import configure, run_chute  # noqa: E402
from bench.proctime import cpu  # noqa: E402
from tests.web import Web  # noqa: E402

POLL_S = 2.0  # chute.web.pages.POLL_S: how often an open overview asks for its live part
TOKEN = "bench-token-0123456789abcdef"
TARGET = 1.05


class Pollers:
    """`count` threads, each an open overview page asking for its live fragment every POLL_S seconds."""

    def __init__(self, port: int, count: int):
        self.port, self.count = port, count
        self.stop = threading.Event()
        self.times: list[float] = []
        self.failures = 0
        self.lock = threading.Lock()
        self.threads = [threading.Thread(target=self._page, args=(i,), daemon=True) for i in range(count)]

    def __enter__(self) -> Pollers:
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop.set()
        for t in self.threads:
            t.join(30)

    def _page(self, i: int) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        headers = {"Host": f"127.0.0.1:{self.port}", "Authorization": f"Bearer {TOKEN}", "HX-Request": "true"}
        due = time.monotonic() + POLL_S * i / self.count
        while not self.stop.wait(max(0.0, due - time.monotonic())):
            due += POLL_S
            begin = time.perf_counter()
            try:
                conn.request("GET", "/fragments/overview", headers=headers)
                reply = conn.getresponse()
                reply.read()
                ok = reply.status == 200
            except (OSError, http.client.HTTPException):
                conn.close()  # reconnects on the next request
                ok = False
            with self.lock:
                self.times.append(time.perf_counter() - begin)
                self.failures += not ok
        conn.close()


def config_for(root: Path, workers: int) -> Path:
    """drain.py's config, with a token for `chute web`."""
    config = configure(root, workers, None)
    assert config is not None
    token = root / "web-token"
    token.write_text(TOKEN + "\n")
    token.chmod(0o600)
    data = yaml.safe_load(config.read_text())
    data["web"] = {"token_file": str(token)}
    config.write_text(yaml.safe_dump(data, sort_keys=False))
    return config


def _poll(port: int, count: int, stop: Any, out: Any) -> None:
    """In a child process at nice 19: the pollers stand for browsers on other machines, so their own CPU
    here should weigh as little as it can on the drain measured (the web process keeps its priority)."""
    os.nice(19)
    with Pollers(port, count) as pollers:
        stop.wait()
    out.put((pollers.times, pollers.failures, cpu(os.getpid())))


def drain(root: Path, args, pages: int) -> tuple[dict, list[float], int]:
    """One drain (drain.py's figures, `web_cpu`, `poller_cpu`), the pollers' answer times and failures.

    With `pages` > 0, `chute web` and the pollers run through it.
    """
    config = config_for(root, args.workers)
    if not pages:
        return run_chute(root, config, args.files, args.timeout) | {"web_cpu": 0.0, "poller_cpu": 0.0}, [], 0
    ctx = multiprocessing.get_context("fork")
    stop, out = ctx.Event(), ctx.Queue()
    with Web(config, TOKEN) as web:
        assert web.proc is not None
        child = ctx.Process(target=_poll, args=(web.port, pages, stop, out))
        child.start()
        before = cpu(web.proc.pid)
        measured = run_chute(root, config, args.files, args.timeout)
        measured["web_cpu"] = cpu(web.proc.pid) - before
        stop.set()
        times, failures, measured["poller_cpu"] = out.get(timeout=60)
        child.join(30)
    return measured, times, failures


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--files", type=int, default=200)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--pages", type=int, default=50)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--timeout", type=float, default=3600)
    p.add_argument("--keep", type=Path, help="work in this folder and leave it (default: a temporary one)")
    args = p.parse_args()
    without: list[float] = []
    with_pages: list[float] = []
    answers: list[float] = []
    failures = 0
    with tempfile.TemporaryDirectory(prefix="chute-web-load-") as tmp:
        base = args.keep or Path(tmp)
        for r in range(args.rounds):
            alone, _, _ = drain(base / f"{r}-alone", args, 0)
            without.append(alone["wall"])
            print(
                f"round {r + 1}: without pages {alone['wall']:6.2f} s (daemon CPU {alone['daemon_cpu']:.2f} s)", end=""
            )
            paged, times, failed = drain(base / f"{r}-pages", args, args.pages)
            with_pages.append(paged["wall"])
            answers += times
            failures += failed
            print(
                f"   with {args.pages} pages {paged['wall']:6.2f} s (daemon CPU {paged['daemon_cpu']:.2f} s,"
                f" web CPU {paged['web_cpu']:.2f} s, pollers' {paged['poller_cpu']:.2f} s, {len(times)} polls)",
                flush=True,
            )
    ratio = statistics.median(with_pages) / statistics.median(without)
    answers.sort()
    p95 = answers[min(len(answers) - 1, int(0.95 * len(answers)))] if answers else 0.0
    print(f"{args.files} files, workers {args.workers}; {args.pages} pages polling every {POLL_S:g} s")
    print(f"median drain: without {statistics.median(without):.2f} s, with {statistics.median(with_pages):.2f} s")
    print(f"ratio {ratio:.3f} (target <= {TARGET}): {'ok' if ratio <= TARGET else 'over'}")
    print(
        f"polls: {len(answers)}, failed {failures}; answer p50 {1000 * statistics.median(answers or [0]):.1f} ms,"
        f" p95 {1000 * p95:.1f} ms"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
