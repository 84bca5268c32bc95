"""What each bundled module costs on a 30-second 1280x720 clip.

Usage: .venv/bin/python bench/modules_cost.py [--seconds 30] [--width 1280]
       [--height 720] [--keep DIR]

Writes a synthetic clip (tests/media.py: H.264 + AAC, 25 fps, cuts every
7 s), runs every module on it the way chute does (a subprocess of
``python main.py --input ... --output ... --option default`` in the module's
folder; loudness and waveform read example_module's WAV, as in the
media_ingest job), and prints wall time, CPU time (user + sys, from
``os.wait4``'s rusage of that one child) and peak memory for each.
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
MODULES = ROOT / "modules"
# (module, input: "clip" or "wav", output file name), in media_ingest's order.
RUNS = [
    ("probe", "clip", "probe.json"),
    ("thumbnails", "clip", "contact_sheet.jpg"),
    ("example_module", "clip", "audio.wav"),
    ("proxy", "clip", "proxy.mp4"),
    ("scenes", "clip", "scenes.json"),
    ("loudness", "wav", "loudness.json"),
    ("waveform", "wav", "waveform.png"),
]


def main() -> int:
    args = _arguments()
    with tempfile.TemporaryDirectory(prefix="chute-bench-") as scratch:
        folder = Path(args.keep or scratch)
        folder.mkdir(parents=True, exist_ok=True)
        clip = folder / "clip.mp4"
        started = time.monotonic()
        _make_clip(clip, args)
        print(
            f"clip: {args.seconds:g} s {args.width}x{args.height} 25 fps H.264 + AAC, "
            f"{clip.stat().st_size / 1e6:.1f} MB, written in {time.monotonic() - started:.1f} s"
        )
        print(f"python {sys.version.split()[0]}, {os.cpu_count()} CPUs\n")
        rows = [
            _measure(name, clip if source == "clip" else folder / "audio.wav", folder / output, folder)
            for name, source, output in RUNS
        ]
    _print_table(rows)
    return 0 if all(row["exit"] == 0 for row in rows) else 1


def _arguments():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--width", type=int, default=1280)
    parser.add_argument("--height", type=int, default=720)
    parser.add_argument("--keep", type=Path, help="write the clip and outputs here")
    return parser.parse_args()


def _make_clip(clip, args):
    # In a child process: this one stays small, because a child's peak RSS
    # (ru_maxrss) counts the memory of the parent it was forked from.
    code = (
        "import sys; from tests.media import make_clip; "
        f"make_clip(sys.argv[1], seconds={args.seconds}, width={args.width}, "
        f"height={args.height}, fps=25, cuts={tuple(range(7, int(args.seconds), 7))})"
    )
    subprocess.run([sys.executable, "-c", code, str(clip)], cwd=ROOT, check=True)


def _measure(name, source, output, folder):
    """Run one module; its wall time and its own rusage (not the parent's)."""
    argv = [sys.executable, "main.py", "--input", str(source), "--output", str(output)]
    for option, value in _defaults(name).items():
        argv += [f"--{option}", str(value).lower() if isinstance(value, bool) else str(value)]
    environ = {**os.environ, "TMPDIR": str(folder), "CHUTE_MODULE": name}
    started = time.monotonic()
    process = subprocess.Popen(argv, cwd=MODULES / name, env=environ, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(process.pid, 0)
    wall = time.monotonic() - started
    error = process.stderr.read().decode(errors="replace").strip()
    process.stderr.close()
    process.returncode = os.waitstatus_to_exitcode(status)
    return {
        "module": name,
        "exit": process.returncode,
        "wall": wall,
        "user": usage.ru_utime,
        "sys": usage.ru_stime,
        "rss_mb": usage.ru_maxrss / 1024,  # Linux reports KiB
        "output_mb": output.stat().st_size / 1e6 if output.exists() else 0.0,
        "error": error.splitlines()[-1] if process.returncode and error else "",
    }


def _defaults(name):
    manifest = yaml.safe_load((MODULES / name / "manifest.yaml").read_text())
    return {option["name"]: option["default"] for option in manifest.get("options", [])}


def _print_table(rows):
    header = (
        f"{'module':<15} {'exit':>4} {'wall s':>7} {'user s':>7} {'sys s':>6} "
        f"{'cpu s':>6} {'cpu/wall':>8} {'peak MB':>8} {'out MB':>7}"
    )
    print(header)
    print("-" * len(header))
    for row in rows:
        cpu = row["user"] + row["sys"]
        print(
            f"{row['module']:<15} {row['exit']:>4} {row['wall']:>7.2f} {row['user']:>7.2f} "
            f"{row['sys']:>6.2f} {cpu:>6.2f} {cpu / row['wall']:>8.2f} "
            f"{row['rss_mb']:>8.0f} {row['output_mb']:>7.2f}"
        )
        if row["error"]:
            print(f"  {row['error']}")
    total_wall = sum(row["wall"] for row in rows)
    total_cpu = sum(row["user"] + row["sys"] for row in rows)
    print("-" * len(header))
    print(f"{'total':<15} {'':>4} {total_wall:>7.2f} {'':>7} {'':>6} {total_cpu:>6.2f}")


if __name__ == "__main__":
    sys.exit(main())
