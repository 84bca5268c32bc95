"""Result folders from values: the outbox folder and its manifest, the quarantine folder and its report (contract §6).

A folder is assembled under a hidden name (`.chute-build-<run_id>`), fsynced, and
renamed into view under a new name: nobody ever sees a half-filled result. A
configured root (outbox, quarantine, archive) is never created here: a missing
one is an unmounted share, and the delivery waits (FileNotFoundError).
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import shutil
from pathlib import Path
from typing import Any

from . import checksums, names, package
from .checksums import generation
from .fileops import copy_file, free_name, fsync_dir, link_or_copy, move_file, place, remove_copies, sync_tree
from .run import Outcome, OutcomeStatus, RunSpec

SCHEMA = "chute.manifest/1"
INPUTS = "inputs"  # every file of the delivery: name, size, hashes, verified_by (checksums.InputFile)
MHL_COMMENT = "chute: the inputs, their sizes and the hashes their delivery's checksums verified are in manifest.json"
BUILD_PREFIX = ".chute-build-"
# Markers a delivery leaves in the claim folder (delivery.py), read back by recovery:
REVEALING = ".revealing"  # the result folder is complete and being renamed into view
QUARANTINING = ".quarantining"  # the input is going into its quarantine folder
ARCHIVING = ".archiving"  # where a move across filesystems is putting the input


def sha256_of(path: Path) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def describe_input(path: Path, name: str, inbox: Path | None) -> dict[str, Any]:
    """The manifest's `input` object (a folder delivery: its files' bytes together, and no one sha256)."""
    if path.is_dir():
        size = sum(os.lstat(path / rel).st_size for rel in package.walk(path))
        return input_object(name, size, None, inbox)
    return input_object(name, os.stat(path).st_size, sha256_of(path), inbox)


def input_object(name: str, size: int, sha256: str | None, inbox: Path | None) -> dict[str, Any]:
    """The manifest's `input` object from its values: a name or inbox that is not UTF-8 gets its `_b64` twin."""
    return {
        **names.fields("name", name),
        "size": size,
        "sha256": sha256,
        **(names.fields("inbox", str(inbox)) if inbox is not None else {"inbox": None}),
    }


def input_name(manifest: dict[str, Any]) -> str:
    """The input's exact name, as a manifest.json or report.json records it."""
    return names.original(manifest["input"], "name")


def manifest(
    spec: RunSpec, outcome: Outcome, input_info: dict[str, Any], artifacts: list[dict[str, Any]]
) -> dict[str, Any]:
    """The manifest.json (or report.json) of contract §6."""
    info = dict(input_info)
    inputs = info.pop(INPUTS, None)  # the delivery's files ride with the input's description; listed at the top
    return {
        "schema": SCHEMA,
        "run_id": spec.run_id,
        "status": "succeeded" if outcome.status is OutcomeStatus.SUCCEEDED else "failed",
        "job": {"name": spec.job.name, "version": spec.job.version, "sha256": spec.job.sha256},
        "input": info,
        **({"inputs": inputs} if inputs is not None else {}),
        "host": spec.host,
        "started_at": outcome.started_at,
        "finished_at": outcome.finished_at,
        "steps": [{"name": name, "entries": [r.as_manifest() for r in records]} for name, records in outcome.steps],
        "artifacts": artifacts,
        "error": outcome.error,
    } | _skipped(spec)


def _skipped(spec: RunSpec) -> dict[str, Any]:
    """The entries left out for an absent optional input (contract §12), when there are any."""
    if not spec.job.skipped:
        return {}
    return {"skipped": [{"step": s.step, "module": s.module, "reason": s.reason} for s in spec.job.skipped]}


def result_name(input_name: str) -> str:
    """The result folder's name: the input's name without its extension."""
    stem = Path(input_name).stem
    return stem if stem and not stem.startswith(".") else "result"


def build_dir(folder: Path, run_id: str) -> Path:
    return folder / f"{BUILD_PREFIX}{run_id}"


def require_root(folder: Path) -> None:
    """FileNotFoundError unless `folder` (a configured outbox, quarantine or archive) is there."""
    if not folder.is_dir():
        raise FileNotFoundError(errno.ENOENT, "the folder is not there (an unmounted share?)", str(folder))


def _fresh_build(folder: Path, run_id: str) -> Path:
    require_root(folder)
    build = build_dir(folder, run_id)
    if build.exists():
        shutil.rmtree(build)
    build.mkdir()
    return build


def _write_json(path: Path, data: dict[str, Any]) -> None:
    # A name that is not UTF-8 (a Latin-1 share) arrives as lone surrogates, which strict JSON readers
    # reject: `names.strict` writes each such byte as the text \xNN (the exact bytes are in `name_b64`).
    with open(path, "x", encoding="utf-8") as f:
        json.dump(names.strict(data), f, indent=2, ensure_ascii=False)
        f.write("\n")


def reveal(build: Path, input_name: str) -> Path:
    """Rename a finished build folder into view under the input's stem (or `stem-2`, ...); never replaces."""
    return place(build, build.parent, result_name(input_name), move=True)


def build_result(spec: RunSpec, outcome: Outcome, ws: Path, input_info: dict[str, Any]) -> Path:
    """The public artifacts and manifest.json, assembled and fsynced in a hidden folder of the outbox."""
    build = _fresh_build(spec.outbox, spec.run_id)
    try:
        fill_result(build, spec, outcome, ws, input_info)
        sync_tree(build)
    except BaseException:
        shutil.rmtree(build, ignore_errors=True)  # ENOSPC and friends: no partial folder stays
        raise
    return build


def fill_result(folder: Path, spec: RunSpec, outcome: Outcome, ws: Path, input_info: dict[str, Any]) -> None:
    """Put the public artifacts of workspace `ws` and manifest.json (and with `mhl`, ascmhl/) into `folder`."""
    artifacts, digests = [], {}
    for a in spec.job.public:
        src = ws / a.name
        if a.file is not None:  # a for_each output: `<file>/<name>` (contract §12)
            (folder / a.result_path).parent.mkdir(parents=True, exist_ok=True)
        link_or_copy(src, folder / a.result_path)
        digest = checksums.hash_file(src, ("sha256",))  # one read: the manifest's sha256 and ASC MHL's xxh128
        digests[a.result_path] = digest
        artifacts.append(
            {
                "name": a.declared or a.name,
                "type": a.type,
                "size": digest.size,
                "sha256": digest.hashes["sha256"],
                "step": a.step,
                "module": a.module,
            }
            | ({} if a.file is None else {"path": a.result_path, "file": a.file})
        )
    _write_json(folder / "manifest.json", manifest(spec, outcome, input_info, artifacts))
    if spec.mhl:
        # Every file the folder holds, whoever put it there (a for_each's output folders too): the reference
        # tool calls a file the generation does not list "new", and fails.
        every = {name: digests.get(name) or checksums.hash_file(folder / name) for name in package.walk(folder)}
        generation.write(folder, result_name(spec.input_name), every, MHL_COMMENT)


def build_report(spec: RunSpec, outcome: Outcome, logs: Path | None, input_info: dict[str, Any]) -> Path:
    """report.json and the entries' logs, in a hidden folder of the quarantine (the input joins later)."""
    build = _fresh_build(spec.quarantine, spec.run_id)
    try:
        fill_report(build, spec, outcome, logs, input_info)
        sync_tree(build)
    except BaseException:
        shutil.rmtree(build, ignore_errors=True)
        raise
    return build


def fill_report(folder: Path, spec: RunSpec, outcome: Outcome, logs: Path | None, input_info: dict[str, Any]) -> None:
    """Put report.json and the entries' logs into `folder` (not fsynced)."""
    _write_json(folder / "report.json", manifest(spec, outcome, input_info, []))
    if logs is not None and logs.is_dir() and any(logs.iterdir()):
        (folder / "logs").mkdir()
        for log in sorted(logs.iterdir()):
            copy_file(log, folder / "logs" / log.name)


def build_copy(kept: Path, folder: Path, run_id: str) -> Path:
    """A hidden build folder in `folder` holding a copy of the result folder `kept` (keep.py), fsynced."""
    build = _fresh_build(folder, run_id)
    try:
        for src in sorted(kept.rglob("*")):
            dst = build / src.relative_to(kept)
            if src.is_dir():
                dst.mkdir()
            else:
                link_or_copy(src, dst)
        sync_tree(build)
    except BaseException:
        shutil.rmtree(build, ignore_errors=True)
        raise
    return build


def add_input(build: Path, input_path: Path, input_name: str, *, move: bool, tag: str) -> None:
    """Put the input into a quarantine build folder: moved (daemon runs) or copied (`chute submit`)."""
    dst = build / input_name
    remove_copies(build, tag)
    try:
        if move:
            move_file(input_path, dst, tag)  # a rejected symlink: the link itself goes, its target is never read
        else:
            copy_file(input_path, dst)
            fsync_dir(build)
    except BaseException:
        # ENOSPC and friends: no hidden half-built folder stays behind, unless it holds
        # the only copy of the input (the move got as far as unlinking the source).
        if os.path.lexists(input_path):
            shutil.rmtree(build, ignore_errors=True)
        raise


def dispose_input(input_path: Path, spec: RunSpec, note: Path, name: str | None = None) -> Path | None:
    """After a published success: the claimed input goes to the archive (never overwriting) or is deleted.

    `note` (a marker in the claim folder) records where a move across filesystems is
    putting the input, so that a crash between its rename and its unlink is finished
    by recovery instead of archiving the file twice.
    """
    name = name or spec.input_name
    if spec.on_success == "delete":
        remove_input(input_path)
        return None
    if spec.on_success != "archive" or spec.archive is None:
        return None
    require_root(spec.archive)
    earlier = _archived_before(input_path, note)
    if earlier is not None:
        remove_input(input_path)
        return earlier
    remove_copies(spec.archive, spec.run_id)
    while True:
        dst = free_name(spec.archive, name)
        if os.stat(spec.archive).st_dev != os.stat(input_path).st_dev:
            _write_note(note, dst)  # a copy, then a rename, then an unlink: a crash may land between
        try:
            move_file(input_path, dst, spec.run_id)
            return dst
        except FileExistsError:
            continue
        except OSError:
            if not os.path.lexists(dst):
                note.unlink(missing_ok=True)  # not renamed in: the name may go to another file meanwhile
            raise


def remove_input(path: Path) -> None:
    """Delete a delivered input: a file, or a folder delivery whole (its copy is out, or it was to be deleted)."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        os.unlink(path)
    fsync_dir(path.parent)


def _write_note(note: Path, dst: Path) -> None:
    with open(note, "wb") as f:
        f.write(os.fsencode(dst))
        f.flush()
        os.fsync(f.fileno())


def _archived_before(input_path: Path, note: Path) -> Path | None:
    """Where an earlier move across filesystems already put a whole copy of the input, if it did."""
    try:
        dst = Path(os.fsdecode(note.read_bytes()))
        if input_path.is_dir():  # a folder is renamed in only once whole and fsynced (fileops.move_file)
            return dst if dst.is_dir() and package.walk(dst) == package.walk(input_path) else None
        if dst.stat().st_size == input_path.stat().st_size and sha256_of(dst) == sha256_of(input_path):
            return dst
    except OSError:
        pass
    return None
