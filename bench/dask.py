"""The Dask executor against the local pool: per-run overhead, and the speed-up of a second worker.

Usage: .venv/bin/python bench/dask.py [--runs 40] [--cpu-runs 4] [--rounds 3] [--burn 1.0] [--keep DIR]

Starts a real cluster on 127.0.0.1 (tests/dask_cluster.py: `dask scheduler`, and
`dask worker --nthreads 1` processes) and drives the executors directly, as the
daemon does (submit a RunSpec, wait for its RunResult), with `chute submit`'s
kind of run (no claim: the input is read in place, results go to an outbox).

1. Overhead: `--runs` runs of a one-step job whose module does nothing, one at a
   time, through the local pool (1 worker) and through Dask (1 worker),
   interleaved; the overhead is the difference of the medians. Target: <= 50 ms.
2. Scaling: a module that burns `--burn` seconds of CPU, on a cluster of 2
   workers (`--nthreads 1` each): batches of `--cpu-runs` runs sent one at a time
   (as on 1 worker: one is busy, the other idle) and two at a time (both busy),
   alternating for `--rounds` rounds so that whatever else loads the machine
   weighs on both alike. The speed-up is the ratio of the summed wall times.
   Target: >= 1.8 (on 2 cores). Beside it, the same module run directly, 1 then 2
   at a time: what this machine (and whatever else runs on it) allows at best.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import FIRST_COMPLETED, wait
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
# Run as a script, this file's folder comes first on sys.path, and this file would be `import dask`.
sys.path = [str(ROOT)] + [p for p in sys.path if Path(p or ".").resolve() != ROOT / "bench"]

from chute import logs  # noqa: E402
from chute.catalog import load_catalog  # noqa: E402
from chute.claims import new_run_id  # noqa: E402
from chute.config import Executor as ExecutorConfig  # noqa: E402
from chute.dask_executor import DaskExecutor  # noqa: E402
from chute.executor import LocalExecutor  # noqa: E402
from chute.leases import Identity  # noqa: E402
from chute.run import RunSpec, RunStatus  # noqa: E402
from chute.systemd import module_environ  # noqa: E402
from tests.dask_cluster import Cluster  # noqa: E402
from tests.harness import wait_until  # noqa: E402

NOOP = "import sys\nargs = dict(zip(sys.argv[1::2], sys.argv[2::2]))\nopen(args['--output'], 'w').write('ok')\n"
BURN = """\
import os, sys, time
args = dict(zip(sys.argv[1::2], sys.argv[2::2]))
end = time.process_time() + float(os.environ["BENCH_BURN"])
x = 0
while time.process_time() < end:
    x += sum(i * i for i in range(1000))
open(args['--output'], 'w').write(str(x))
"""


def module(root: Path, name: str, code: str) -> None:
    folder = root / "modules" / name
    folder.mkdir(parents=True)
    (folder / "main.py").write_text(code)
    (folder / "manifest.yaml").write_text(
        yaml.safe_dump(
            {
                "name": name,
                "description": "bench",
                "entrypoint": "main.py",
                "launcher": "fresh",
                "inputs": [{"param_name": "input", "type": "blob"}],
                "outputs": [{"param_name": "output", "type": "blob"}],
            }
        )
    )
    (root / "jobs").mkdir(exist_ok=True)
    (root / "jobs" / f"{name}.yaml").write_text(
        yaml.safe_dump(
            {
                "name": name,
                "version": 1,
                "input_artifacts": [{"param_name": "input", "type": "blob", "name": "in.bin"}],
                "steps": [
                    {
                        "name": "only",
                        "entries": [
                            {
                                "module": name,
                                "input_artifacts": [{"name": "in.bin", "param_name": "input", "type": "blob"}],
                                "output_artifacts": [
                                    {"name": "out.txt", "param_name": "output", "type": "blob", "public": True}
                                ],
                            }
                        ],
                    }
                ],
            },
            sort_keys=False,
        )
    )


def catalog(root: Path):
    module(root, "noop", NOOP)
    module(root, "burn", BURN)
    for folder in ("inbox/.chute", "work", "out", "quarantine"):  # the daemon makes them at start
        (root / folder).mkdir(parents=True)
    (root / "input.bin").write_bytes(b"bench\n")
    config = root / "chute.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "modules_path": [str(root / "modules")],
                "jobs_path": [str(root / "jobs")],
                "state_dir": str(root / "state"),
                "work_dir": str(root / "work"),
                "work_reserve_mb": 0,
                "inboxes": [
                    {
                        "path": str(root / "inbox"),
                        "job": "noop",
                        "outbox": str(root / "out"),
                        "quarantine": str(root / "quarantine"),
                        "on_success": "delete",
                    }
                ],
            }
        )
    )
    return load_catalog(config)


def spec(cat, job: str) -> RunSpec:
    cfg, inbox = cat.config, cat.config.inboxes[0]
    return RunSpec(
        run_id=new_run_id(),
        job=cat.jobs[job],
        input_path=cfg.inboxes[0].path.parent / "input.bin",
        input_name="input.bin",
        outbox=inbox.outbox,
        quarantine=inbox.quarantine,
        work_dir=cfg.work_dir,
        owner="bench",
        default_timeout=600,
        host="bench",
        environ=tuple(module_environ(os.environ).items()),
        python=sys.executable,
        work_reserve=0,
    )


def one(executor, s: RunSpec) -> float:
    started = time.perf_counter()
    result = executor.submit(s).result(timeout=120)
    assert result.status == RunStatus.SUCCEEDED, result
    return time.perf_counter() - started


def batch(executor, cat, runs: int, parallel: int) -> float:
    """Wall time of `runs` burn runs through `executor`, at most `parallel` at once, each sent as soon as it may."""
    started, pending, left = time.perf_counter(), set(), runs
    while left or pending:
        while left and len(pending) < parallel and executor.free() > 0:
            pending.add(executor.submit(spec(cat, "burn")))
            left -= 1
        done, pending = wait(pending, timeout=60, return_when=FIRST_COMPLETED)
        assert done and all(f.result().status == RunStatus.SUCCEEDED for f in done)
    return time.perf_counter() - started


def plain(root: Path, runs: int, parallel: int) -> float:
    """The machine's own baseline: the burn module run `runs` times directly, `parallel` at a time."""
    argv = [sys.executable, str(root / "modules" / "burn" / "main.py"), "--input", "-", "--output", os.devnull]
    started, procs, left = time.perf_counter(), [], runs
    while left or procs:
        while left and len(procs) < parallel:
            procs.append(subprocess.Popen(argv))
            left -= 1
        procs.pop(0).wait()
    return time.perf_counter() - started


def dask_executor(cluster: Cluster, cat, workers: int) -> DaskExecutor:
    cfg = cat.config.model_copy(update={"executor": ExecutorConfig(kind="dask", address=cluster.address)})
    executor = DaskExecutor(lambda: cfg)
    wait_until(lambda: executor.free() >= workers, 60)
    return executor


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--runs", type=int, default=40)
    p.add_argument("--cpu-runs", type=int, default=4, help="CPU-bound runs per batch")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--burn", type=float, default=1.0, help="CPU seconds each CPU-bound run burns")
    p.add_argument("--keep", type=Path, help="work in this folder and leave it (default: a temporary one)")
    args = p.parse_args()
    logs.configure("console", "warning", stream=sys.stderr)
    os.environ["BENCH_BURN"] = str(args.burn)  # the workers inherit it, as do the local pool's
    with tempfile.TemporaryDirectory(prefix="chute-bench-dask-") as tmp:
        root = args.keep or Path(tmp)
        root.mkdir(parents=True, exist_ok=True)
        cat = catalog(root)
        cluster = Cluster(root)
        try:
            cluster.add_worker("w1")
            cluster.wait_for_workers(1)
            local = LocalExecutor(cat.config.model_copy(update={"workers": 1}), Identity.mine())
            dask = dask_executor(cluster, cat, 1)
            times: dict[str, list[float]] = {"local": [], "dask": []}
            for _ in range(args.runs):
                times["local"].append(one(local, spec(cat, "noop")))
                times["dask"].append(one(dask, spec(cat, "noop")))
            cluster.add_worker("w2")
            wait_until(lambda: dask.free() >= 2, 60)
            # Rounds, alternating, so that whatever else loads the machine weighs on both sides alike.
            sums = {"dask 1": 0.0, "dask 2": 0.0, "plain 1": 0.0, "plain 2": 0.0}
            for _ in range(args.rounds):
                sums["dask 1"] += batch(dask, cat, args.cpu_runs, 1)
                sums["plain 1"] += plain(root, args.cpu_runs, 1)
                sums["dask 2"] += batch(dask, cat, args.cpu_runs, 2)
                sums["plain 2"] += plain(root, args.cpu_runs, 2)
            local.close()
            dask.close()
        finally:
            cluster.close()
    med = {k: statistics.median(v) for k, v in times.items()}
    overhead = (med["dask"] - med["local"]) * 1000
    print(
        f"per-run time, trivial job ({args.runs} runs each, median): local pool {med['local'] * 1000:.1f} ms, "
        f"dask {med['dask'] * 1000:.1f} ms"
    )
    print(f"dask overhead per run: {overhead:.1f} ms (target <= 50 ms)")
    one_worker, two_workers = sums["dask 1"], sums["dask 2"]
    print(
        f"CPU-bound, {args.rounds} x {args.cpu_runs} runs of {args.burn:g} s CPU: one at a time (1 worker busy) "
        f"{one_worker:.2f} s, two at a time (2 workers) {two_workers:.2f} s: "
        f"speed-up {one_worker / two_workers:.2f}x (target >= 1.8x)"
    )
    print(
        f"the machine itself, the same module run directly: 1 at a time {sums['plain 1']:.2f} s, "
        f"2 at a time {sums['plain 2']:.2f} s: speed-up {sums['plain 1'] / sums['plain 2']:.2f}x"
    )
    return 0 if overhead <= 50 and one_worker / two_workers >= 1.8 else 1


if __name__ == "__main__":
    sys.exit(main())
