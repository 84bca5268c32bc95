"""Moves that never lose a file: atomic renames, and copy + fsync + rename + unlink across filesystems."""

from __future__ import annotations

import ctypes
import errno
import fcntl
import os
import secrets
import shutil
from pathlib import Path

_RENAME_NOREPLACE = 1
_AT_FDCWD = -100
_libc = ctypes.CDLL(None, use_errno=True)
_renameat2 = getattr(_libc, "renameat2", None)
_FICLONE = 0x40049409  # linux/fs.h: _IOW(0x94, 9, int)
NAME_MAX = 255  # bytes in one file name (Linux, and SMB/NFS shares)
COPY_PREFIX = ".chute-copy-"
GONE_PREFIX = ".chute-gone-"  # a folder moved across filesystems, being removed from where it was
COPY_CHUNK = 8 * 1024 * 1024  # bytes per read of a copy across filesystems


def fsync_dir(path: Path) -> None:
    """Make a rename or a new entry in `path` durable."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def rename_noreplace(src: Path, dst: Path) -> None:
    """Rename `src` to `dst` atomically, failing with FileExistsError if `dst` exists.

    renameat2(RENAME_NOREPLACE) where the filesystem has it; elsewhere (some network
    filesystems) a link-then-unlink for files, and a plain rename for folders, which
    refuses a non-empty target by itself.
    """
    if _renameat2 is not None:
        rc = _renameat2(_AT_FDCWD, os.fsencode(src), _AT_FDCWD, os.fsencode(dst), _RENAME_NOREPLACE)
        if rc == 0:
            return
        err = ctypes.get_errno()
        if err not in (errno.EINVAL, errno.ENOSYS, errno.ENOTSUP):
            raise OSError(err, os.strerror(err), str(src), None, str(dst))
    if os.path.isdir(src) and not os.path.islink(src):
        if os.path.lexists(dst):
            raise FileExistsError(errno.EEXIST, "target exists", str(dst))
        os.rename(src, dst)
        return
    os.link(src, dst, follow_symlinks=False)  # fails with EEXIST rather than replacing
    os.unlink(src)


def copy_file(src: Path, dst: Path) -> None:
    """Copy a file's bytes and mode to a new `dst` and fsync it (fails if `dst` exists)."""
    with open(src, "rb") as fin, open(dst, "xb") as fout:
        shutil.copyfileobj(fin, fout, COPY_CHUNK)
        fout.flush()
        os.fsync(fout.fileno())
    shutil.copymode(src, dst)


def move_file(src: Path, dst: Path, tag: str = "") -> None:
    """Move one file, symbolic link or folder to `dst`, which must not exist.

    Across filesystems: copy to a hidden name beside `dst` (`.chute-copy-<tag>-<name>`),
    fsync, rename into place, fsync the folder, and only then unlink `src`. A crash
    leaves `src` whole, plus at worst that hidden partial copy, which the next delivery
    with the same `tag` removes (`remove_copies`); never a partial file under `dst`'s name.
    """
    try:
        rename_noreplace(src, dst)
        fsync_dir(dst.parent)
        return
    except OSError as exc:
        if exc.errno != errno.EXDEV:
            raise
    tmp = dst.with_name(_fit(f"{COPY_PREFIX}{tag}-{dst.name}"))
    folder = os.path.isdir(src) and not os.path.islink(src)
    try:
        if os.path.islink(src):
            os.symlink(os.readlink(src), tmp)  # a link moves as itself: its target is never read
        elif folder:
            shutil.copytree(src, tmp, symlinks=True, copy_function=shutil.copy2)  # a folder delivery, whole
            sync_tree(tmp)
        else:
            copy_file(src, tmp)
        rename_noreplace(tmp, dst)
    except BaseException:
        _remove(tmp)
        raise
    fsync_dir(dst.parent)
    if folder:
        # Out of its name first (one rename): a crash during the removal never leaves a part of it as the input.
        gone = Path(src).with_name(_fit(f"{GONE_PREFIX}{tag}-{Path(src).name}"))
        os.rename(src, gone)
        shutil.rmtree(gone)
    else:
        os.unlink(src)
    fsync_dir(src.parent)


def _remove(path: Path) -> None:
    if os.path.isdir(path) and not os.path.islink(path):
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def remove_copies(folder: Path, tag: str) -> None:
    """Remove the hidden partial copies an interrupted `move_file(..., tag=tag)` left in `folder`."""
    head = os.fsencode(f"{COPY_PREFIX}{tag}-")
    try:
        names = os.listdir(os.fsencode(folder))
    except OSError:
        return
    for name in names:
        if name.startswith(head):
            try:
                _remove(Path(os.fsdecode(os.path.join(os.fsencode(folder), name))))
            except OSError:
                pass


def _fit(head: str, tail: str = "") -> str:
    """`head + tail`, `head` shortened until the name fits NAME_MAX, which counts bytes
    (a 247-byte Japanese name is only 85 characters)."""
    while head and len(os.fsencode(head + tail)) > NAME_MAX:
        head = head[:-1]
    return head + tail


def free_name(folder: Path, name: str) -> Path:
    """`folder/name`, or `folder/stem-2.ext`, `-3`, ... whichever does not exist yet."""
    candidate = folder / name
    n = 2
    stem, dot, ext = name.rpartition(".") if "." in name.lstrip(".") else (name, "", "")
    while os.path.lexists(candidate):
        candidate = folder / (_fit(stem, f"-{n}.{ext}") if dot else _fit(name, f"-{n}"))
        n += 1
    return candidate


def place(src: Path, folder: Path, name: str, *, move: bool, tag: str = "") -> Path:
    """Move (or copy) `src` into `folder` under `name`, or `name-2`, ... never overwriting: returns where it went."""
    while True:
        dst = free_name(folder, name)
        try:
            if move:
                move_file(src, dst, tag)
            else:
                copy_file(src, dst)
                fsync_dir(folder)
            return dst
        except FileExistsError:
            continue  # somebody took that name between the check and the rename
        except OSError as exc:
            if exc.errno == errno.ENOTEMPTY:  # a folder renamed onto an existing one
                continue
            raise


def write_atomic(path: Path, data: bytes, *, sync: bool = True) -> None:
    """Write `path` whole or not at all: a hidden temporary beside it (its own: writers may race), then a rename."""
    tmp = path.with_name(_fit(f".{path.name}", f".{secrets.token_hex(4)}.tmp"))
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            if sync:
                f.flush()
                os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    if sync:
        fsync_dir(path.parent)


def link_or_copy(src: Path, dst: Path) -> None:
    """A hard link where possible (same filesystem), else an fsynced copy."""
    try:
        os.link(src, dst)
    except OSError as exc:
        if exc.errno not in (errno.EXDEV, errno.EPERM, errno.EMLINK, errno.ENOTSUP):
            raise
        copy_file(src, dst)


def reflink(src: Path, dst: Path) -> bool:
    """Clone `src` to a new `dst` sharing its blocks copy-on-write (FICLONE: btrfs, XFS); False where it cannot."""
    with open(src, "rb") as fin, open(dst, "xb") as fout:
        try:
            fcntl.ioctl(fout.fileno(), _FICLONE, fin.fileno())
            return True
        except OSError:
            pass
    os.unlink(dst)
    return False


def private_copy(src: Path, dst: Path) -> None:
    """A copy of `src` at `dst` that shares no inode with it (not fsynced: for workspaces)."""
    shutil.copyfile(src, dst)  # sendfile(2) where it can


def sync_tree(root: Path) -> None:
    """fsync every file and folder below `root` (before it is renamed into view)."""
    for folder, _dirs, files in os.walk(root):
        for f in files:
            fd = os.open(os.path.join(folder, f), os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        fsync_dir(Path(folder))
