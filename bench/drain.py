"""How fast chute drains a pile of files through a 3-module job, against `xargs -P` running the same modules.

Usage: .venv/bin/python bench/drain.py [--files 200] [--workers 2] [--launcher both|warm|fresh|none]
       [--backlog 5000] [--keep DIR]

The job (written by this bench into a temporary folder): step `first` runs two
trivial Python modules in parallel, `left` and `right` (each reads the input and
writes a copy), step `second` runs `join` (reads both, writes their
concatenation, the one public artifact). One inbox, `watch: events`, `settle: 0`,
`workers: --workers`, `on_success: archive`.

Default mode: `--files` files are dropped into the inbox *before* `chute run`
starts; chute's time is from starting `chute run` until the last input is in the
archive and its ledger row is written (the latest `finished_at` in the ledger, every
run `succeeded`): start-up, claims, staging, modules, checks, publishing, archiving
and the ledger are all in it. The baseline, run in the same
process just before and again just after chute's rows (the mean of the two is the
ratio's base, so a change of load on a shared machine shows rather than skews the
ratio), is `xargs -P <workers>` running for each file a small sh
script that starts `left` and `right` in parallel, waits, then runs `join` (each in
its module folder, with the same interpreter chute gives modules): the same work
with no daemon around it, from starting `xargs` to its exit. Prints both times,
chute's as a ratio of the baseline's, and the CPU time each side spent in all (chute:
the daemon, its pool workers and launchers, and the modules; xargs: xargs, sh and the
modules).

`--launcher` picks the rows: the config key `launcher: {mode: warm|fresh}`, set per
row. A chute whose `chute check` refuses that key gets "n/a" in those rows, and one
row without the key instead. `none` is that row alone.

`--backlog N`: N files instead (the xargs baseline runs once, on `--files` files, for
its CPU time per file). Reports, read when the last input is archived and its ledger
row written, three CPU times (user + system, from /proc/<pid>/stat): the daemon's own
(the `chute run` process, all its threads); the run side's (the pool workers and the
warm launchers themselves: staging, checks, publishing, forking); and the modules'
(the module processes alone, from the cutime + cstime of the worker or launcher that
reaped them). The target ratio is the daemon's CPU over what xargs spends on the same
N files (xargs, sh and the modules as fresh interpreters, scaled from the sample):
chute's per-run work is in neither. The daemon's CPU over the modules' as chute ran
them is printed too (with a warm launcher they skip the interpreter's start-up).
"""

from __future__ import annotations

import argparse
import resource
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.proctime import children, cpu, reaped, tree_cpu  # noqa: E402
from tests.harness import CHUTE, Daemon, Setup, files, ledger_runs  # noqa: E402

NA = "n/a (this chute has no launcher setting)"
MODULE = """\
import sys
args = dict(zip(sys.argv[1::2], sys.argv[2::2]))
data = b"".join(open(args[k], "rb").read() for k in sorted(args) if k != "--output")
with open(args["--output"], "wb") as f:
    f.write(data)
"""
BASELINE = """\
# One file through the bench's job, as chute would run it: step first, then second.
set -e
m="$1"; py="$2"; w="$3/$(basename "$4")"; f="$4"
mkdir -p "$w"
(cd "$m/left" && exec "$py" main.py --input "$f" --output "$w/left.bin") &
(cd "$m/right" && exec "$py" main.py --input "$f" --output "$w/right.bin") &
wait
cd "$m/join" && "$py" main.py --left "$w/left.bin" --right "$w/right.bin" --output "$w/result.bin"
"""


def blob(name: str) -> dict:
    return {"name": name, "type": "blob"}


def write_definitions(setup: Setup) -> None:
    """The modules left, right and join and the job `drain` beside the harness's definitions."""
    specs = {"left": ["input"], "right": ["input"], "join": ["left", "right"]}
    for name, inputs in specs.items():
        folder = setup.defs / "modules" / name
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "main.py").write_text(MODULE)
        manifest = {
            "name": name,
            "description": "bench module",
            "entrypoint": "main.py",
            "version": "1.0",
            "inputs": [{"param_name": p, "type": "blob"} for p in inputs],
            "outputs": [{"param_name": "output", "type": "blob"}],
        }
        (folder / "manifest.yaml").write_text(yaml.safe_dump(manifest))

    def entry(module, ins, out, public=False):
        return {
            "module": module,
            "input_artifacts": [dict(blob(a), param_name=p) for p, a in ins],
            "output_artifacts": [dict(blob(out), param_name="output", public=public)],
        }

    job = {
        "name": "drain",
        "version": 1,
        "input_artifacts": [dict(blob("source.bin"), param_name="input")],
        "steps": [
            {
                "name": "first",
                "entries": [
                    entry("left", [("input", "source.bin")], "left.bin"),
                    entry("right", [("input", "source.bin")], "right.bin"),
                ],
            },
            {
                "name": "second",
                "entries": [entry("join", [("left", "left.bin"), ("right", "right.bin")], "result.bin", public=True)],
            },
        ],
    }
    (setup.defs / "jobs" / "drain.yaml").write_text(yaml.safe_dump(job, sort_keys=False))


def drop_files(folder: Path, count: int) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(count):
        path = folder / f"f-{i:05d}.bin"
        path.write_bytes(f"file {i}\n".encode() * 64)
        paths.append(path)
    return paths


def configure(root: Path, workers: int, launcher: str | None) -> Path | None:
    """The config of one chute row; None when this chute refuses the launcher setting."""
    setup = Setup(
        root, workers=workers, defaults={"settle": 0, "poll_interval": 5.0, "timeout": 120}, shutdown_timeout=30
    )
    if launcher is not None:
        setup.config["launcher"] = {"mode": launcher}
    write_definitions(setup)
    setup.inbox(job="drain", watch="events")
    config = setup.write()
    if launcher is None:
        return config
    done = subprocess.run([str(CHUTE), "check", "--config", str(config)], capture_output=True, text=True)
    if done.returncode != 0 and "launcher" in done.stdout + done.stderr:
        return None
    if done.returncode != 0:
        raise SystemExit(f"chute check refused the bench's config:\n{done.stdout}{done.stderr}")
    return config


def split_cpu(daemon: int) -> dict[str, float]:
    """CPU seconds of the daemon itself, of its run side (pool workers, launchers) and of the modules."""
    run_side = modules = 0.0
    for worker in children(daemon):
        run_side += cpu(worker)
        modules += reaped(worker)  # fresh interpreters: the worker started and reaped them
        for launcher in children(worker):  # a warm launcher forks and reaps the modules
            run_side += cpu(launcher)
            modules += reaped(launcher) + tree_cpu(launcher)
    # A worker or launcher that exited during the drain: its time (and its modules') is run side.
    run_side += reaped(daemon)
    return {"daemon_cpu": cpu(daemon), "run_side_cpu": run_side, "modules_cpu": modules}


def drained(config: Path, archive: Path, count: int) -> float | None:
    """When the last of `count` inputs was archived and its ledger row written; None until then."""
    if len(files(archive)) < count:  # cheap, so it is looked at first
        return None
    runs = ledger_runs(config)
    done = [r for r in runs if r.finished_at is not None]
    if len(done) < count:
        return None
    failed = [r for r in done if r.state.value != "succeeded"]
    assert not failed and len(done) == count, (len(done), [(r.input_name, r.state.value) for r in failed])
    return max(datetime.fromisoformat(r.finished_at.replace("Z", "+00:00")).timestamp() for r in done)


def run_chute(root: Path, config: Path, count: int, timeout: float) -> dict:
    """Drain `count` dropped files with `chute run`; wall time and CPU times of the daemon, run side and modules."""
    drop_files(root / "in", count)
    d = Daemon(config)
    started = time.time()
    d.start(wait=False)
    try:
        deadline = time.monotonic() + timeout
        while (last := drained(config, root / "in-archive", count)) is None:
            if not d.alive() or time.monotonic() > deadline:
                raise SystemExit(f"chute did not drain {count} files:\n{d.text()[-3000:]}")
            time.sleep(0.25)  # a light poll: this process must not take the cores the daemon measures on
        measured = split_cpu(d.pid)
        assert len(files(root / "in-out")) == count, "an input archived without its result"
        d.stop(60)
    finally:
        d.kill()
    return {"wall": last - started, **measured}


def run_xargs(root: Path, modules: Path, count: int, workers: int) -> tuple[float, float]:
    """Wall time and CPU time (xargs, sh and the modules) of `xargs -P workers` running the script once per file."""
    paths = drop_files(root / "in", count)
    script = root / "one.sh"
    script.write_text(BASELINE)
    work = root / "work"
    work.mkdir()
    argv = ["xargs", "-0", "-n", "1", "-P", str(workers), "sh", str(script), str(modules), sys.executable, str(work)]
    started, before = time.time(), _children_cpu()
    subprocess.run(argv, input=b"".join(bytes(p) + b"\0" for p in paths), check=True)
    return time.time() - started, _children_cpu() - before


def _children_cpu() -> float:
    """CPU seconds of this process's reaped children (and theirs)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def chute_rows(base: Path, args, count: int) -> list[tuple[str, dict | None]]:
    """One row per launcher mode asked for (None where this chute refuses the setting)."""
    modes = {"both": ["fresh", "warm"], "none": []}.get(args.launcher, [args.launcher])
    rows = []
    for mode in modes:
        root = base / f"chute-{mode}"
        config = configure(root, args.workers, mode)
        rows.append(
            (f"chute, launcher {mode}", None if config is None else run_chute(root, config, count, args.timeout))
        )
    if all(result is None for _, result in rows):
        root = base / "chute"
        config = configure(root, args.workers, None)
        assert config is not None
        rows.append(("chute (no launcher key)", run_chute(root, config, count, args.timeout)))
    return rows


def baseline(root: Path, args) -> tuple[float, float]:
    """Wall and CPU time of the xargs baseline on `--files` files, checked to have made every result."""
    setup = Setup(root)
    write_definitions(setup)
    measured = run_xargs(root, setup.defs / "modules", args.files, args.workers)
    made = sum(1 for f in (root / "work").iterdir() if (f / "result.bin").is_file())
    assert made == args.files, f"the baseline made {made} results of {args.files}"
    return measured


def print_drain(rows, baselines: tuple[tuple[float, float], tuple[float, float]], args) -> None:
    wall_base = (baselines[0][0] + baselines[1][0]) / 2
    cpu_base = (baselines[0][1] + baselines[1][1]) / 2
    print(f"{args.files} files through left+right, then join; workers {args.workers}; watch: events, settle 0")
    print(
        "wall: chute from starting `chute run` to the last input archived with its ledger row written;"
        " xargs from its start to its exit"
    )
    print("CPU: chute's daemon, pool workers, launchers and modules; xargs's xargs, sh and modules")
    print(f"{'row':<28} {'wall s':>7} {'files/s':>8} {'ratio to xargs':>15} {'CPU s':>7} {'CPU ratio':>9}")
    for label, result in rows:
        if result is None:
            print(f"{label:<28} {NA}")
            continue
        wall = result["wall"]
        spent = result["daemon_cpu"] + result["run_side_cpu"] + result["modules_cpu"]
        print(
            f"{label:<28} {wall:7.2f} {args.files / wall:8.1f} {wall / wall_base:15.2f}"
            f" {spent:7.2f} {spent / cpu_base:9.2f}"
        )
    print(
        f"{f'xargs -P {args.workers} (baseline)':<28} {wall_base:7.2f} {args.files / wall_base:8.1f} {1.0:15.2f}"
        f" {cpu_base:7.2f} {1.0:9.2f}"
        f"   (mean of {baselines[0][0]:.2f} s before and {baselines[1][0]:.2f} s after chute's rows)"
    )


def print_backlog(rows, sample: tuple[float, float], args) -> None:
    xargs_cpu = sample[1] / args.files * args.backlog
    print(f"backlog of {args.backlog} files through left+right, then join; workers {args.workers}; watch: events")
    print("wall: from starting `chute run` to the last input archived with its ledger row written")
    print(
        "CPU s: daemon, the `chute run` process itself; run side, the pool workers and warm launchers"
        " (staging, checks, publishing, forking); modules, the module processes alone as chute ran them"
    )
    print(
        f"xargs: what `xargs -P {args.workers}` spends on the same work (xargs, sh, the modules as fresh"
        f" interpreters): {sample[1]:.2f} s for {args.files} files, so {xargs_cpu:.1f} s for {args.backlog}"
    )
    print(
        f"{'row':<28} {'wall s':>7} {'files/s':>8} {'daemon':>7} {'run side':>8} {'modules':>8} "
        f"{'daemon/xargs':>12} {'daemon/modules':>14} {'daemon % core':>13}"
    )
    for label, result in rows:
        if result is None:
            print(f"{label:<28} {NA}")
            continue
        wall, own, side, modules = result["wall"], result["daemon_cpu"], result["run_side_cpu"], result["modules_cpu"]
        print(
            f"{label:<28} {wall:7.1f} {args.backlog / wall:8.1f} {own:7.1f} {side:8.1f} {modules:8.1f} "
            f"{own / xargs_cpu:12.3f} {own / modules:14.3f} {100 * own / wall:12.0f}%"
        )
    print("target: daemon/xargs <= 0.10 (the daemon's CPU against what the same modules cost without it)")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--files", type=int, default=200)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--launcher", choices=["both", "warm", "fresh", "none"], default="both")
    p.add_argument("--backlog", type=int, help="drain this many files and report CPU time instead of the baseline")
    p.add_argument("--timeout", type=float, default=3600, help="seconds one drain may take before the bench gives up")
    p.add_argument("--keep", type=Path, help="work in this folder and leave it (default: a temporary one)")
    args = p.parse_args()

    with tempfile.TemporaryDirectory(prefix="chute-drain-") as tmp:
        base = args.keep or Path(tmp)
        if args.backlog:
            sample = baseline(base / "xargs", args)
            print_backlog(chute_rows(base, args, args.backlog), sample, args)
            return 0
        # The baseline runs before and after chute's rows (their mean is the ratio's base), so
        # that a change of load on a shared machine during the bench shows instead of skewing it.
        before = baseline(base / "xargs-before", args)
        rows = chute_rows(base, args, args.files)
        after = baseline(base / "xargs-after", args)
    print_drain(rows, (before, after), args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
