"""Results out: the outbox folder and its manifest, the quarantine folder and its report (SPEC §5, §6)."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path
from typing import Any

from .claims import ARCHIVING
from .fileops import copy_file, free_name, fsync_dir, link_or_copy, move_file, rename_noreplace, sync_tree
from .pipeline import Outcome, RunSpec

SCHEMA = "chute.manifest/1"
BUILD_PREFIX = ".chute-build-"


def sha256_of(path: Path) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def describe_input(spec: RunSpec) -> dict[str, Any]:
    path = Path(spec.input_path)
    return {"name": spec.input_name, "size": path.stat().st_size, "sha256": sha256_of(path), "inbox": spec.inbox}


def manifest(spec: RunSpec, outcome: Outcome, input_info: dict[str, Any], artifacts: list[dict[str, Any]]) -> dict[str, Any]:
    """The manifest.json (or report.json) of SPEC §6."""
    return {
        "schema": SCHEMA,
        "run_id": spec.run_id,
        "status": "succeeded" if outcome.status == "succeeded" else "failed",
        "job": {"name": spec.job.name, "version": spec.job.version, "sha256": spec.job.sha256},
        "input": input_info,
        "host": spec.host,
        "started_at": outcome.started_at,
        "finished_at": outcome.finished_at,
        "steps": [{"name": name, "entries": [r.as_manifest() for r in records]} for name, records in outcome.steps],
        "artifacts": artifacts,
        "error": outcome.error,
    }


def result_name(input_name: str) -> str:
    """The result folder's name: the input's name without its extension."""
    stem = Path(input_name).stem
    return stem if stem and not stem.startswith(".") else "result"


def build_dir(folder: Path, run_id: str) -> Path:
    return folder / f"{BUILD_PREFIX}{run_id}"


def _fresh_build(folder: Path, run_id: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    build = build_dir(folder, run_id)
    if build.exists():
        shutil.rmtree(build)
    build.mkdir()
    return build


def _write_json(path: Path, data: dict[str, Any]) -> None:
    # A file name that is not UTF-8 (a Latin-1 share) arrives as surrogate escapes; backslashreplace
    # writes each as the JSON escape \udcXX, so the manifest stays valid JSON and round-trips.
    with open(path, "x", encoding="utf-8", errors="backslashreplace") as f:
        json.dump(data, f, indent=2, ensure_ascii=False)
        f.write("\n")


def reveal(build: Path, name: str) -> Path:
    """Rename a finished build folder into view under a new name; never replaces anything."""
    while True:
        final = free_name(build.parent, name)
        try:
            rename_noreplace(build, final)
        except (FileExistsError, OSError) as exc:
            if isinstance(exc, FileExistsError) or exc.errno in (39, 17):  # ENOTEMPTY, EEXIST
                continue
            raise
        fsync_dir(build.parent)
        return final


def build_result(spec: RunSpec, outcome: Outcome, ws: Path, input_info: dict[str, Any]) -> Path:
    """The public artifacts and manifest.json, assembled and fsynced in a hidden folder of the outbox."""
    build = _fresh_build(Path(spec.outbox), spec.run_id)
    try:
        artifacts = []
        for a in spec.job.public:
            src = ws / a.name
            link_or_copy(src, build / a.name)
            artifacts.append({"name": a.name, "type": a.type, "size": src.stat().st_size,
                              "sha256": sha256_of(src), "step": a.step, "module": a.module})
        _write_json(build / "manifest.json", manifest(spec, outcome, input_info, artifacts))
        sync_tree(build)
    except BaseException:
        shutil.rmtree(build, ignore_errors=True)  # ENOSPC and friends: no partial folder stays
        raise
    return build


def build_report(spec: RunSpec, outcome: Outcome, ws: Path, input_info: dict[str, Any]) -> Path:
    """report.json and the entries' logs, in a hidden folder of the quarantine (the input joins later)."""
    build = _fresh_build(Path(spec.quarantine), spec.run_id)
    try:
        _write_json(build / "report.json", manifest(spec, outcome, input_info, []))
        logs = ws / ".logs"
        if logs.is_dir() and any(logs.iterdir()):
            (build / "logs").mkdir()
            for log in sorted(logs.iterdir()):
                copy_file(log, build / "logs" / log.name)
        sync_tree(build)
    except BaseException:
        shutil.rmtree(build, ignore_errors=True)
        raise
    return build


def add_input(build: Path, input_path: Path, input_name: str, *, move: bool) -> None:
    """Put the input into a quarantine build folder: moved (daemon runs) or copied (`chute submit`)."""
    dst = build / input_name
    try:
        if move:
            move_file(input_path, dst)
        else:
            copy_file(input_path, dst)
            fsync_dir(build)
    except BaseException:
        # ENOSPC and friends: no hidden half-built folder stays behind, unless it holds
        # the only copy of the input (the move got as far as unlinking the source).
        if os.path.lexists(input_path):
            shutil.rmtree(build, ignore_errors=True)
        raise


def dispose_input(input_path: Path, input_name: str, on_success: str, archive: str | None) -> str | None:
    """After a published success: the claimed input goes to the archive (never overwriting) or is deleted."""
    if on_success == "archive":
        assert archive is not None
        folder = Path(archive)
        folder.mkdir(parents=True, exist_ok=True)
        note = input_path.parent / ARCHIVING
        earlier = _archived_before(input_path, note)
        if earlier is not None:
            os.unlink(input_path)
            fsync_dir(input_path.parent)
            return str(earlier)
        while True:
            dst = free_name(folder, input_name)
            if os.stat(folder).st_dev != os.stat(input_path).st_dev:
                _write_note(note, dst)  # a copy, then a rename, then an unlink: a crash may land between
            try:
                move_file(input_path, dst)
                return str(dst)
            except FileExistsError:
                continue
            except OSError:
                if not os.path.lexists(dst):
                    note.unlink(missing_ok=True)  # not renamed in: the name may go to another file meanwhile
                raise
    if on_success == "delete":
        os.unlink(input_path)
        fsync_dir(input_path.parent)
    return None


def _write_note(note: Path, dst: Path) -> None:
    with open(note, "wb") as f:
        f.write(os.fsencode(dst))
        f.flush()
        os.fsync(f.fileno())


def _archived_before(input_path: Path, note: Path) -> Path | None:
    """Where an earlier move across filesystems already put a whole copy of the input, if it did.

    That move died after renaming its copy into the archive and before unlinking the
    input: archiving again would put the file there twice (`clip-2.mp4`).
    """
    try:
        dst = Path(os.fsdecode(note.read_bytes()))
        if dst.stat().st_size == input_path.stat().st_size and sha256_of(dst) == sha256_of(input_path):
            return dst
    except OSError:
        pass
    return None
