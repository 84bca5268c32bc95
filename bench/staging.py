"""What it costs to put a run's input into its workspace (staging.stage), by filesystem and user.

Usage: .venv/bin/python bench/staging.py [--size-mb 1024]

Rows, each the median of 3 stagings of one file of `--size-mb` MiB (page cache warm):
- same filesystem, as this user: as root (CAP_DAC_OVERRIDE) a private copy, since a read-only
  link protects nothing from a process that may write any file;
- same filesystem, as an unprivileged user (what the systemd unit runs as): a read-only hard link;
- XFS with reflink, where mkfs.xfs is installed and we may mount a loop file: a reflink;
- across filesystems (a tmpfs work_dir): a copy, the baseline every other row is compared with.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# One staging in a child process (so it can run as another user): prints {"how": ..., "seconds": ...}.
CHILD = """
import json, os, sys, time
from pathlib import Path
sys.path.insert(0, sys.argv[1])
from chute import staging
src, dst, claim = Path(sys.argv[2]), Path(sys.argv[3]), Path(sys.argv[4])
t0 = time.perf_counter()
how = staging.stage(src, dst, claim)
seconds = time.perf_counter() - t0
os.unlink(dst)
staging.claims.restore_mode(claim, src)
print(json.dumps({"how": how, "seconds": seconds}))
"""


def make_input(path: Path, size_mb: int) -> None:
    with open(path, "wb") as f:
        chunk = os.urandom(1 << 20)
        for _ in range(size_mb):
            f.write(chunk)


def stage(src: Path, work: Path, user: str | None = None, rounds: int = 3) -> tuple[str, float]:
    claim = src.parent / "claim"
    claim.mkdir(exist_ok=True)
    argv = [sys.executable, "-c", CHILD, str(ROOT / "daemon"), str(src), str(work / "input.bin"), str(claim)]
    if user is not None:
        argv = [
            "setpriv",
            f"--reuid={user}",
            "--regid=nogroup",
            "--clear-groups",
            "--inh-caps=-all",
            "--bounding-set=-all",
            "--",
            *argv,
        ]
    times, how = [], "?"
    for _ in range(rounds):
        proc = subprocess.run(argv, capture_output=True, text=True)
        if proc.returncode:
            raise SystemExit(f"staging failed: {proc.stderr.strip().splitlines()[-1:]}")
        row = json.loads(proc.stdout)
        how, _ = row["how"], times.append(row["seconds"])
    return how, statistics.median(times)


def mounted(kind: str, where: Path, *options: str) -> bool:
    return (
        subprocess.run(
            ["mount", "-t", kind, *options, kind, str(where)] if kind == "tmpfs" else ["mount", *options, str(where)],
            capture_output=True,
        ).returncode
        == 0
    )


def xfs(root: Path, size_mb: int) -> Path | None:
    """A loop-mounted XFS with reflink, or None where it cannot be made here."""
    if shutil.which("mkfs.xfs") is None:
        return None
    image, where = root / "xfs.img", root / "xfs"
    with open(image, "wb") as f:
        f.truncate((size_mb * 3 + 512) << 20)
    if subprocess.run(["mkfs.xfs", "-q", "-m", "reflink=1", str(image)], capture_output=True).returncode:
        return None
    where.mkdir()
    if subprocess.run(["mount", "-o", "loop", str(image), str(where)], capture_output=True).returncode:
        return None
    return where


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size-mb", type=int, default=1024)
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory(prefix="chute-staging-", dir=ROOT) as tmp:
        root = Path(tmp)
        same = root / "same"
        (same / "work").mkdir(parents=True)
        src = same / "input.bin"
        make_input(src, args.size_mb)
        rows.append(("same filesystem, this user", *stage(src, same / "work")))
        if os.geteuid() == 0:
            os.chmod(root, 0o755)
            shutil.chown(same, "nobody", "nogroup")
            for p in (src, same / "work", same / "claim"):
                shutil.chown(p, "nobody", "nogroup")
            rows.append(("same filesystem, unprivileged user", *stage(src, same / "work", user="nobody")))
        where = xfs(root, args.size_mb)
        if where is not None:
            try:
                (where / "work").mkdir()
                shutil.copyfile(src, where / "input.bin")
                rows.append(("XFS (reflink)", *stage(where / "input.bin", where / "work")))
            finally:
                subprocess.run(["umount", str(where)], capture_output=True)
        tmpfs = root / "tmpfs"
        tmpfs.mkdir()
        if mounted("tmpfs", tmpfs, "-o", f"size={args.size_mb + 64}m"):
            try:
                rows.append(("across filesystems (tmpfs work_dir)", *stage(src, tmpfs)))
            finally:
                subprocess.run(["umount", str(tmpfs)], capture_output=True)
    base = next((s for name, _, s in rows if name.startswith("across")), None)
    print(f"\nstaging a {args.size_mb} MiB input into a workspace (median of 3)\n")
    print("| where | how | seconds | vs a copy across filesystems |")
    print("|---|---|---|---|")
    for name, how, seconds in rows:
        ratio = f"{seconds / base:.3f}×" if base else "-"
        print(f"| {name} | {how} | {seconds:.4f} | {ratio} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
