"""How fast chute drains a pile of files through a 3-module job, against `xargs -P` running the same modules.

Usage: .venv/bin/python bench/drain.py [--files 200] [--workers 2] [--launcher both|warm|fresh|none]
       [--backlog 5000] [--keep DIR]

The job (written by this bench into a temporary folder): step `first` runs two
trivial Python modules in parallel, `left` and `right` (each reads the input and
writes a copy), step `second` runs `join` (reads both, writes their
concatenation, the one public artifact). One inbox, `watch: events`, `settle: 0`,
`workers: --workers`, `on_success: archive`.

Default mode: `--files` files are dropped into the inbox *before* `chute run`
starts; chute's time is from starting `chute run` to the timestamp of the last
`run.published` in its JSON log (startup included). The baseline, run in the same
process just before and again just after chute's rows (the mean of the two is the
ratio's base, so a change of load on a shared machine shows rather than skews the
ratio), is `xargs -P <workers>` running for each file a small sh
script that starts `left` and `right` in parallel, waits, then runs `join` (each in
its module folder, with the same interpreter chute gives modules): the same work
with no daemon around it. Prints both times and chute's as a ratio of the
baseline's.

`--launcher` picks the rows: the config key `launcher: {mode: warm|fresh}`, set per
row. A chute whose `chute check` refuses that key gets "n/a" in those rows, and one
row without the key instead. `none` is that row alone.

`--backlog N`: N files instead (no xargs row). Reports the daemon's own CPU time
(user + system of the `chute run` process, all its threads, from /proc/<pid>/stat)
against the CPU time of its runs (everything below it: the pool workers and the
modules, live ones from /proc and reaped ones from their parents' cutime + cstime),
read when the last result is in the outbox, and their ratio.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.proctime import cpu, reaped, tree_cpu  # noqa: E402
from tests.harness import CHUTE, Daemon, Setup, event_time  # noqa: E402

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


def outbox_count(folder: Path) -> int:
    try:
        return sum(1 for n in os.listdir(folder) if not n.startswith("."))
    except FileNotFoundError:
        return 0


def run_chute(root: Path, config: Path, files: int, timeout: float) -> dict:
    """Drain `files` dropped files with `chute run`; wall time and CPU times of the daemon and its runs."""
    drop_files(root / "in", files)
    d = Daemon(config)
    started = time.time()
    d.start(wait=False)
    try:
        deadline = time.monotonic() + timeout
        while outbox_count(root / "in-out") < files:
            if not d.alive() or time.monotonic() > deadline:
                raise SystemExit(f"chute did not drain {files} files:\n{d.text()[-3000:]}")
            time.sleep(0.25)  # a light poll: this process must not take the cores the daemon measures on
        daemon_cpu, runs_cpu = cpu(d.pid), tree_cpu(d.pid) + reaped(d.pid)
        published = d.events("run.published")
        failed = d.events("run.quarantined")
        assert len(published) == files and not failed, (len(published), len(failed))
        last = max(event_time(e) for e in published)
        d.stop(60)
    finally:
        d.kill()
    return {"wall": last - started, "daemon_cpu": daemon_cpu, "runs_cpu": runs_cpu}


def run_xargs(root: Path, modules: Path, files: int, workers: int) -> float:
    """Wall time of `xargs -P workers` running the baseline script once per file."""
    paths = drop_files(root / "in", files)
    script = root / "one.sh"
    script.write_text(BASELINE)
    work = root / "work"
    work.mkdir()
    argv = ["xargs", "-0", "-n", "1", "-P", str(workers), "sh", str(script), str(modules), sys.executable, str(work)]
    started = time.time()
    subprocess.run(argv, input=b"".join(bytes(p) + b"\0" for p in paths), check=True)
    return time.time() - started


def chute_rows(base: Path, args, files: int) -> list[tuple[str, dict | None]]:
    """One row per launcher mode asked for (None where this chute refuses the setting)."""
    modes = {"both": ["fresh", "warm"], "none": []}.get(args.launcher, [args.launcher])
    rows = []
    for mode in modes:
        root = base / f"chute-{mode}"
        config = configure(root, args.workers, mode)
        rows.append(
            (f"chute, launcher {mode}", None if config is None else run_chute(root, config, files, args.timeout))
        )
    if all(result is None for _, result in rows):
        root = base / "chute"
        rows.append(
            ("chute (no launcher key)", run_chute(root, configure(root, args.workers, None), files, args.timeout))
        )
    return rows


def baseline(root: Path, args) -> float:
    """Wall time of the xargs baseline on `--files` files, checked to have made every result."""
    setup = Setup(root)
    write_definitions(setup)
    wall = run_xargs(root, setup.defs / "modules", args.files, args.workers)
    made = sum(1 for f in (root / "work").iterdir() if (f / "result.bin").is_file())
    assert made == args.files, f"the baseline made {made} results of {args.files}"
    return wall


def print_drain(rows, baselines: tuple[float, float], args) -> None:
    baseline = sum(baselines) / 2
    print(f"{args.files} files through left+right, then join; workers {args.workers}; watch: events, settle 0")
    print(f"{'row':<28} {'wall s':>7} {'files/s':>8} {'ratio to xargs':>15}")
    for label, result in rows:
        if result is None:
            print(f"{label:<28} {NA}")
            continue
        wall = result["wall"]
        print(f"{label:<28} {wall:7.2f} {args.files / wall:8.1f} {wall / baseline:15.2f}")
    print(
        f"{f'xargs -P {args.workers} (baseline)':<28} {baseline:7.2f} {args.files / baseline:8.1f} {1.0:15.2f}"
        f"   (mean of {baselines[0]:.2f} s before and {baselines[1]:.2f} s after chute's rows)"
    )


def print_backlog(rows, args) -> None:
    print(f"backlog of {args.backlog} files through left+right, then join; workers {args.workers}; watch: events")
    print(
        f"{'row':<28} {'wall s':>7} {'files/s':>8} {'daemon CPU s':>12} {'runs CPU s':>10} "
        f"{'daemon/runs':>11} {'daemon % core':>13}"
    )
    for label, result in rows:
        if result is None:
            print(f"{label:<28} {NA}")
            continue
        wall, own, runs = result["wall"], result["daemon_cpu"], result["runs_cpu"]
        print(
            f"{label:<28} {wall:7.1f} {args.backlog / wall:8.1f} {own:12.1f} {runs:10.1f} "
            f"{own / runs:11.3f} {100 * own / wall:12.0f}%"
        )
    print("target (issue #12): daemon/runs <= 0.10")


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
            print_backlog(chute_rows(base, args, args.backlog), args)
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
