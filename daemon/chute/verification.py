"""A run's delivery checked before anything runs: its checksums verified, each of its files read once.

A file is hashed while it is staged when staging must copy it (another filesystem,
or chute running as root), so its bytes are read once; a linked or reflinked stage
reads nothing, and the verifying read is the only one. Nothing is recorded as verified: a run that
dies in the middle of it verifies again from the start.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import checksums, logs, names, package, staging
from .delivery import Fence
from .publish import INPUTS, input_object
from .run import RunSpec


@dataclass(frozen=True)
class Checked:
    """A workspace holding the staged input, and what checking the delivery came to."""

    ws: Path
    verification: checksums.Verification
    main: str | None  # the main file (file, stem); None for a folder delivery

    def input_info(self, spec: RunSpec) -> dict[str, Any]:
        """The manifest's `input` object, carrying the delivery's files (listed as the manifest's `inputs`).

        A folder delivery's `input` has its files' bytes together and no one sha256 (each file's are in `inputs`).
        """
        files = self.verification.inputs
        main = next((i for i in files if i.name == self.main), None)
        size = main.size if main is not None else sum(i.size for i in files)
        sha256 = main.hashes.get("sha256") if main is not None else None
        return input_object(spec.input_name, size, sha256, spec.inbox) | {INPUTS: inputs(self.verification)}


def inputs(verification: checksums.Verification) -> list[dict[str, Any]]:
    """The manifest's `inputs`: a name that is not UTF-8 gets its `name_b64` twin, as `input.name` does."""
    return [i.as_manifest() | names.fields("name", i.name) for i in verification.inputs]


def prepare(
    spec: RunSpec, fence: Fence, claim_dir: Path | None, stage_more: Callable[[Path, staging.Copy], None] | None = None
) -> Checked:
    """Stage the input (and, by `stage_more(ws, copy)`, a stem's bound sidecars) in a fresh workspace and
    check the delivery, reading each byte once: what must be copied is hashed as it is copied.

    Raises staging.Unreadable (the file's problem) and OSError (the machine's: an I/O error,
    a share gone, no space); the workspace is removed when it raises.
    """
    log = logs.get("chute.verification").bind(**spec.context())
    started = time.monotonic()
    delivery = package.of(spec)
    root, files, main = delivery.root, delivery.files, delivery.main
    mode = checksums.Mode(spec.verify)
    planned = checksums.plan(root, files, mode, main)
    log.info("run.verifying", files=len(files), checksums=len({e.source for e in planned.expected}), verify=mode.value)
    copied: dict[str, checksums.Digest] = {}
    copy = _hashing_copy(root, main, planned, copied)
    ws = staging.prepare(spec, fence.input, claim_dir, copy)
    try:
        if stage_more is not None:
            stage_more(ws, copy)
        checked = checksums.check(root, files, planned, mode=mode, main=main, known=copied)
    except BaseException:
        shutil.rmtree(ws, ignore_errors=True)
        raise
    verified = sum(1 for i in checked.inputs if i.verified_by)
    size = sum(i.size for i in checked.inputs)
    duration_s = round(time.monotonic() - started, 3)
    log.info(
        "run.verified",
        files=len(files),
        verified=verified,
        bytes=size,
        problems=len(checked.problems),
        duration_s=duration_s,
    )
    return Checked(ws, checked, main)


def _hashing_copy(
    root: Path, main: str | None, planned: checksums.Plan, copied: dict[str, checksums.Digest]
) -> staging.Copy:
    """Staging's private copy of a file of the delivery, hashed as it is copied (its digest kept in `copied`)."""

    def copy(src: Path, dst: Path) -> None:
        if not src.is_relative_to(root):
            checksums.copy_hashing(src, dst)  # not a file of the delivery: nothing to record
            return
        name = src.relative_to(root).as_posix()
        extra = {"sha256"} if name == main else set()  # the manifest's `input.sha256` (contract §6)
        copied[name] = checksums.copy_hashing(src, dst, planned.algorithms(name) | extra)

    return copy
