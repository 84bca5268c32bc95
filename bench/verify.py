"""What verifying a delivery costs, against what a user would script instead (issue 22).

Usage: .venv/bin/python bench/verify.py [--gib 2] [--files 8] [--repeat 3] [--stage-dir /dev/shm]

A folder delivery of `--gib` GiB in `--files` clips is made under /var/tmp and read once
(page cache warm, as a card just copied in is). Stages by copy go to `--stage-dir`: another
filesystem, as a copied stage is, and a tmpfs by default, so that the disk's writeback does
not set the pace. Each row is the median of `--repeat` runs, chute's and the baseline's in
turn; `read MiB` is what the row's process and its children read (rchar of /proc/self/io:
read(2), sendfile and copy_file_range), so a row that reads the card twice shows twice its size.

- md5 list, verify + stage by copy: chute's run with a copied stage (checksums.plan, a hashing
  copy of every file, checksums.check with what the copy hashed) against `md5sum -c MD5SUMS`
  followed by `cp -r` (what a user scripts: the card read twice).
- md5 list, verify only (a linked or reflinked stage): checksums.check against `md5sum -c`.
- xxh128 list, verify only: checksums.check against `xxh128sum -c` (installed with
  `apt-get install xxhash` if missing).
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "daemon"))

from chute import checksums  # noqa: E402
from chute.package import walk  # noqa: E402


def rchar() -> int:
    """Bytes read so far by this process and its reaped children."""
    for line in Path("/proc/self/io").read_text().splitlines():
        if line.startswith("rchar:"):
            return int(line.split()[1])
    raise RuntimeError("no rchar in /proc/self/io")


def make_card(root: Path, gib: float, count: int) -> None:
    """`count` clips of together `gib` GiB, each of its own bytes (a block repeated, a counter in each MiB)."""
    per = int(gib * (1 << 30)) // count
    block = bytearray(os.urandom(1 << 20))
    (root / "CLIPS").mkdir(parents=True)
    for i in range(count):
        with open(root / "CLIPS" / f"A001C{i:03d}.mov", "wb") as f:
            for mib in range(per >> 20):
                block[:16] = f"{i:08d}{mib:08d}".encode()
                f.write(block)
    (root / "A001.xml").write_text("<clipinfo/>\n")


def tool_list(root: Path, tool: str, name: str) -> None:
    files = [f for f in walk(root) if not f.endswith(("SUMS",))]
    out = subprocess.run([tool, *files], cwd=root, check=True, capture_output=True, text=True).stdout
    (root / name).write_text(out)


def compare(ours: Callable[[], object], theirs: Callable[[], object], repeat: int) -> tuple[Sample, Sample]:
    """Median seconds and bytes read of each, run in turn (a busy machine slows both alike)."""
    samples: tuple[list[tuple[float, int]], list[tuple[float, int]]] = ([], [])
    for _ in range(repeat):
        for fn, into in ((ours, samples[0]), (theirs, samples[1])):
            before, t0 = rchar(), time.perf_counter()
            fn()
            into.append((time.perf_counter() - t0, rchar() - before))
    return _median(samples[0]), _median(samples[1])


Sample = tuple[float, int]


def _median(samples: list[tuple[float, int]]) -> Sample:
    return statistics.median(t for t, _ in samples), int(statistics.median(r for _, r in samples))


def chute_verify(root: Path, stage: Path | None) -> Callable[[], object]:
    def run() -> object:
        files = walk(root)
        planned = checksums.plan(root, files)
        copied = {}
        if stage is not None:
            shutil.rmtree(stage, ignore_errors=True)
            for name in files:
                (stage / name).parent.mkdir(parents=True, exist_ok=True)
                copied[name] = checksums.copy_hashing(root / name, stage / name, planned.algorithms(name))
        result = checksums.check(root, files, planned, known=copied)
        assert result.reason is None, result.reason
        return result

    return run


def baseline(root: Path, tool: str, sums: str, stage: Path | None) -> Callable[[], object]:
    def run() -> object:
        subprocess.run([tool, "-c", "--quiet", sums], cwd=root, check=True)
        if stage is not None:
            shutil.rmtree(stage, ignore_errors=True)
            subprocess.run(["cp", "-r", str(root), str(stage)], check=True)
        return None

    return run


def row(title: str, ours: tuple[float, int], theirs: tuple[float, int], size: int) -> None:
    (t1, r1), (t2, r2) = ours, theirs
    print(
        f"{title:<44} chute {t1:6.2f} s {r1 >> 20:6d} MiB read | baseline {t2:6.2f} s {r2 >> 20:6d} MiB read"
        f" | ratio {t1 / t2:4.2f} | chute {size / t1 / (1 << 20):6.0f} MiB/s"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--gib", type=float, default=2.0)
    parser.add_argument("--files", type=int, default=8)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--stage-dir", type=Path, default=Path("/dev/shm"))
    args = parser.parse_args()
    if shutil.which("xxh128sum") is None and os.geteuid() == 0:
        subprocess.run(["apt-get", "install", "-y", "-qq", "xxhash"], check=False, capture_output=True)
    with tempfile.TemporaryDirectory(dir="/var/tmp", prefix="chute-bench-verify-") as tmp:
        card, stage = Path(tmp) / "A001", args.stage_dir / f"chute-bench-stage-{os.getpid()}"
        make_card(card, args.gib, args.files)
        size = sum((card / f).stat().st_size for f in walk(card))
        tool_list(card, "md5sum", "MD5SUMS")
        checksums.check(card, walk(card), checksums.Plan())  # page cache warm
        print(f"card: {size >> 20} MiB in {args.files} clips; {os.cpu_count()} CPUs; median of {args.repeat}")
        try:
            md5sum = baseline(card, "md5sum", "MD5SUMS", stage)
            row("md5 list, verify + stage by copy", *compare(chute_verify(card, stage), md5sum, args.repeat), size)
            md5sum = baseline(card, "md5sum", "MD5SUMS", None)
            row("md5 list, verify only", *compare(chute_verify(card, None), md5sum, args.repeat), size)
        finally:
            shutil.rmtree(stage, ignore_errors=True)  # not in `tmp`: removed here
        if shutil.which("xxh128sum"):
            (card / "MD5SUMS").unlink()
            tool_list(card, "xxh128sum", "XXH128SUMS")
            xxh = baseline(card, "xxh128sum", "XXH128SUMS", None)
            row("xxh128 list, verify only", *compare(chute_verify(card, None), xxh, args.repeat), size)
        else:
            print("xxh128sum is not installed (apt-get install xxhash): no xxh128 row")


if __name__ == "__main__":
    main()
