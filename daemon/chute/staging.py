"""A run's workspace, and the input placed in it without letting a module spoil the user's file.

The cheapest safe way wins: a reflink (an instant copy-on-write clone, on btrfs
and XFS); on one filesystem, a hard link to the claimed file made read-only for
the run (only where module processes cannot override file modes, i.e. chute is
not running as root); otherwise a private copy. The step engine still checks
afterwards that the input is unchanged.
"""

from __future__ import annotations

import errno
import functools
import json
import os
import re
import shutil
import stat
from collections.abc import Callable
from pathlib import Path

from . import claims, package
from .fileops import private_copy, reflink, write_atomic
from .leases import Identity, alive_here
from .run import RunSpec

Copy = Callable[[Path, Path], object]  # how a private copy is made: fileops.private_copy, or a hashing copy
OWNER = ".owner"  # in work_dir/<owner>/: who made these workspaces, to tell a dead owner's from a live one's
_CAP_DAC_OVERRIDE = 1 << 1


def owner_dir(work_dir: Path, me: Identity, owner: str) -> Path:
    """`work_dir/<owner>/` with its owner record; every workspace of that owner lives in it."""
    folder = work_dir / owner
    folder.mkdir(parents=True, exist_ok=True)
    write_atomic(folder / OWNER, json.dumps(me.record()).encode(), sync=False)
    return folder


def remove_owner_dir(folder: Path) -> bool:
    """Remove an owner's folder at its clean stop, unless a workspace is still in it; True if it went."""
    try:
        if any(p.name != OWNER for p in folder.iterdir()):
            return False  # kept with its record: the next start removes it as a dead owner's
        # The record goes first: a crash in between leaves an empty folder, never a workspace without an owner.
        (folder / OWNER).unlink(missing_ok=True)
        folder.rmdir()
    except OSError:
        return False
    return True


class Unreadable(Exception):
    """chute may not read the input (its mode, its ACL): the file's problem, not the machine's."""


def prepare(spec: RunSpec, source: Path, claim_dir: Path | None, copy: Copy = private_copy) -> Path:
    """A fresh workspace holding the input under each of its bound names; returns it.

    `copy` makes the private copy where one is needed (a hashing copy: the bytes are read once).
    Raises Unreadable when the input cannot be read (the file's problem), OSError for
    the machine's (no space, work_dir gone or not writable).
    """
    try:
        if source.is_dir():
            package.walk(source)  # a folder delivery: every folder beneath must be readable
        else:
            with open(source, "rb"):
                pass  # unreadable (chmod 000)? say so now, as the file's fault, before anything runs
    except PermissionError as exc:
        raise Unreadable(f"{exc.strerror} ({exc.filename})" if exc.filename else exc.strerror) from exc
    ws = spec.new_workspace()
    (ws / ".tmp").mkdir(parents=True)
    (ws / ".logs").mkdir()
    try:
        first, *others = spec.job.input_names
        if source.is_dir():
            stage_tree(source, ws / first, claim_dir, copy)
            for name in others:
                os.symlink(first, ws / name)  # a second name of the one staged tree (hard links cannot be folders)
        else:
            stage(source, ws / first, claim_dir, copy)
            for name in others:
                os.link(ws / first, ws / name)
    except BaseException:
        shutil.rmtree(ws, ignore_errors=True)
        raise
    return ws


def stage(source: Path, dst: Path, claim_dir: Path | None, copy: Copy = private_copy) -> str:
    """Put `source` at `dst` the cheapest safe way; returns how: reflink, link or copy."""
    if reflink(source, dst):
        return "reflink"
    if claim_dir is not None and links(source, dst.parent):
        mode = stat.S_IMODE(os.stat(source).st_mode)
        if mode & 0o222:
            claims.mark(claim_dir, claims.MODE, f"{mode:o}".encode())  # restored before delivery, or by recovery
            os.chmod(source, mode & ~0o222)
        os.link(source, dst)
        return "link"
    copy(source, dst)
    return "copy"


def stage_tree(source: Path, dst: Path, claim_dir: Path | None, copy: Copy = private_copy) -> str:
    """Put a folder delivery at `dst` as a tree of read-only hard links (one filesystem), else a copy.

    Every file's write bits are recorded in the claim (`.modes`) before any is taken away, so a
    crash while the run holds them leaves what restores them all (claims.restore_modes).
    """
    files = package.walk(source)
    linked = claim_dir is not None and all(links(source / rel, dst.parent) for rel in files)
    if linked and claim_dir is not None:
        modes = {
            str((source / rel).relative_to(claim_dir)): stat.S_IMODE(os.stat(source / rel).st_mode) for rel in files
        }
        if any(mode & 0o222 for mode in modes.values()):
            claims.mark(claim_dir, claims.MODES, json.dumps({k: f"{m:o}" for k, m in modes.items()}).encode())
            for rel, mode in modes.items():
                os.chmod(claim_dir / rel, mode & ~0o222)
    for folder, _dirs, _files in os.walk(source):  # never follows a symlink
        (dst / Path(folder).relative_to(source)).mkdir(parents=True, exist_ok=True)
    for rel in files:
        if linked:
            os.link(source / rel, dst / rel)
        else:
            copy(source / rel, dst / rel)
    return "link" if linked else "copy"


def tree_size(path: Path) -> int:
    """Bytes of a file, or of every file beneath a folder."""
    if not path.is_dir():
        return os.stat(path).st_size
    return sum(os.lstat(path / rel).st_size for rel in package.walk(path))


def links(source: Path, folder: Path) -> bool:
    """Whether `source` is staged in `folder` as a hard link made read-only for the run.

    Only on one filesystem, for a file this process owns (so that it may take away and
    give back its write bits, and the kernel's protected_hardlinks lets it link), and
    where nothing here can write a read-only file.
    """
    try:
        st = os.stat(source)
        if st.st_dev != os.stat(folder).st_dev or st.st_uid != os.geteuid():
            return False
    except OSError:
        return False
    return not _overrides_modes()


@functools.cache
def _overrides_modes() -> bool:
    """Whether this process (and so its modules) may write files whatever their mode (CAP_DAC_OVERRIDE)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("CapEff:"):
                    return bool(int(line.split()[1], 16) & _CAP_DAC_OVERRIDE)
    except OSError:
        pass
    return os.geteuid() == 0


def needs(spec: RunSpec, size: int, source: Path, claim_dir: Path | None) -> int:
    """Bytes the run needs free in work_dir before it starts: the reserve, plus the input unless it is linked.

    `size` is the delivery's whole size: a folder delivery is linked only when every file of it can be.
    """
    if source.is_dir():
        linked = claim_dir is not None and all(links(source / rel, spec.work_dir) for rel in package.walk(source))
    else:
        linked = claim_dir is not None and links(source, spec.work_dir)
    return spec.work_reserve + (0 if linked else size)


def free_bytes(folder: Path) -> int:
    st = os.statvfs(folder)
    return st.f_bavail * st.f_frsize


def has_room(work_dir: Path, reserve: int) -> bool:
    """Whether work_dir is there with more than `reserve` bytes free (else claiming more would only defer them)."""
    try:
        return free_bytes(work_dir) >= reserve
    except OSError:
        return False


def within(path: str | bytes | os.PathLike | None, folder: Path) -> bool:
    """Whether an error's path (OSError.filename) is in `folder`."""
    return isinstance(path, (str, os.PathLike)) and Path(path).is_relative_to(folder)


def machine_errno(exc: OSError) -> bool:
    """An error of the machine running the run, not of the file: no space, quota, I/O."""
    return exc.errno in (errno.ENOSPC, errno.EDQUOT, errno.EIO, errno.EROFS)


def remove_dead_owners(work_dir: Path) -> list[Path]:
    """Remove the workspaces of owners no longer alive on this host (a killed daemon's); returns them.

    A live owner's (another daemon sharing this work_dir, a `chute submit`) are never touched.
    """
    removed: list[Path] = []
    try:
        entries = list(work_dir.iterdir())
    except OSError:
        return removed
    for folder in entries:
        try:
            record = json.loads((folder / OWNER).read_text())
        except (OSError, ValueError):
            record = None
        if record is not None and alive_here(record):
            continue
        if record is None and not _old_style(folder):
            continue
        shutil.rmtree(folder, ignore_errors=True)
        removed.append(folder)
    return removed


def _old_style(folder: Path) -> bool:
    """A workspace or cancel file of chute before per-owner workspaces (work_dir/<run_id>)."""
    return re.fullmatch(r"\d{8}T\d{6}Z-[0-9a-f]{6}(\.cancel)?", folder.name) is not None
