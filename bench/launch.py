"""What starting a module costs: a fresh interpreter against a warm launcher (chute.launcher).

Usage: .venv/bin/python bench/launch.py [--runs 50] [--module "import av, numpy"]

The module is a script that does nothing but its imports (by default PyAV and numpy, what the
bundled modules import). Each run is timed from the start of the spawn to the moment the exit is
known: ``subprocess.Popen`` (as chute starts a module: own session, stdin from /dev/null, fds
closed) then ``wait``, against ``Launcher.spawn`` then ``collect`` when its fileno is readable.
Fresh and warm runs alternate, so both see the same load. The launcher's own start (its preloads)
is paid once, on the first spawn, and is printed apart.
"""

from __future__ import annotations

import argparse
import os
import selectors
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from chute.launcher import Launcher


def main() -> int:
    args = _arguments()
    with tempfile.TemporaryDirectory(prefix="chute-bench-") as folder:
        (Path(folder) / "main.py").write_text(args.module + "\n")
        env = {**os.environ, "TMPDIR": folder, "PYTHONUNBUFFERED": "1", "CHUTE_MODULE": "bench"}
        argv = [sys.executable, "main.py"]
        null = os.open(os.devnull, os.O_WRONLY)
        with Launcher(environ=os.environ) as launcher:
            started = time.monotonic()
            _warm(launcher, argv, folder, env, null)
            start_cost = time.monotonic() - started
            fresh, warm = [], []
            for _ in range(args.runs):
                fresh.append(_fresh(argv, folder, env, null))
                warm.append(_warm(launcher, argv, folder, env, null))
            skipped = launcher.skipped
        os.close(null)
    _print_table(args, fresh, warm, start_cost, skipped)
    return 0


def _arguments():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=50)
    parser.add_argument("--module", default="import av, numpy", help="the module's whole source")
    return parser.parse_args()


def _fresh(argv, folder, env, null) -> float:
    started = time.monotonic()
    process = subprocess.Popen(
        argv,
        cwd=folder,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=null,
        stderr=null,
        start_new_session=True,
        close_fds=True,
    )
    if process.wait() != 0:
        raise SystemExit(f"the module failed fresh: exit status {process.returncode}")
    return time.monotonic() - started


def _warm(launcher, argv, folder, env, null) -> float:
    started = time.monotonic()
    pid = launcher.spawn(argv, folder, env, null, null)
    with selectors.DefaultSelector() as selector:
        selector.register(launcher.fileno(), selectors.EVENT_READ)
        while not (exits := [e for e in launcher.collect() if e.pid == pid]):
            selector.select()
    if exits[0].returncode != 0:
        raise SystemExit(f"the module failed warm: {exits[0]}")
    return time.monotonic() - started


def _print_table(args, fresh, warm, start_cost, skipped) -> None:
    print(
        f"module: {args.module!r}; python {sys.version.split()[0]}, {os.cpu_count()} CPUs, "
        f"load {os.getloadavg()[0]:.2f}; {args.runs} runs each, alternating"
    )
    if skipped:
        print(f"preloads skipped: {skipped}")
    print(f"\n{'start':<8} {'median ms':>10} {'p10 ms':>8} {'p90 ms':>8}")
    for name, times in (("fresh", fresh), ("warm", warm)):
        deciles = statistics.quantiles(times, n=10)
        print(
            f"{name:<8} {1000 * statistics.median(times):>10.1f} {1000 * deciles[0]:>8.1f} {1000 * deciles[-1]:>8.1f}"
        )
    print(f"\nratio fresh/warm (medians): {statistics.median(fresh) / statistics.median(warm):.1f}x")
    print(f"the launcher's own start (first spawn, preloads): {1000 * start_cost:.0f} ms")


if __name__ == "__main__":
    sys.exit(main())
