"""A run's delivery checked before anything runs: its checksums verified, each of its files read once.

The main file is hashed while it is staged when staging must copy it (another
filesystem), so its bytes are read once; a linked or reflinked stage reads nothing,
and the verifying read is the only one. Nothing is recorded as verified: a run that
dies in the middle of it verifies again from the start.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import checksums, staging
from .delivery import Fence
from .publish import INPUTS, input_object
from .run import RunSpec


@dataclass(frozen=True)
class Checked:
    """A workspace holding the staged input, and what checking the delivery came to."""

    ws: Path
    verification: checksums.Verification
    main: checksums.Digest  # the main file's size and hashes (xxh128, sha256 and what its checksums use)

    def input_info(self, spec: RunSpec) -> dict[str, Any]:
        """The manifest's `input` object, carrying the delivery's files (listed as the manifest's `inputs`)."""
        info = input_object(spec.input_name, self.main.size, self.main.hashes.get("sha256"), spec.inbox)
        return info | {INPUTS: inputs(self.verification)}


def inputs(verification: checksums.Verification) -> list[dict[str, Any]]:
    return [i.as_manifest() for i in verification.inputs]


def delivery(fence: Fence) -> tuple[Path, tuple[str, ...], str]:
    """The delivery's root, its files (relative to the root) and its main file: the claimed file alone."""
    return fence.input.parent, (fence.input.name,), fence.input.name


def prepare(spec: RunSpec, fence: Fence, claim_dir: Path | None) -> Checked:
    """Stage the input in a fresh workspace and check the delivery, reading each byte once.

    Raises staging.Unreadable (the file's problem) and OSError (the machine's: an I/O error,
    a share gone, no space); the workspace is removed when it raises.
    """
    root, files, main = delivery(fence)
    mode = checksums.Mode(spec.verify)
    planned = checksums.plan(root, files, mode, main)
    algorithms = planned.algorithms(main) | {"sha256"}
    copied: dict[str, checksums.Digest] = {}

    def copy(src: Path, dst: Path) -> None:
        copied[main] = checksums.copy_hashing(src, dst, algorithms)

    ws = staging.prepare(spec, fence.input, claim_dir, copy)
    try:
        checked = checksums.check(root, files, planned, mode=mode, main=main, known=copied)
    except BaseException:
        shutil.rmtree(ws, ignore_errors=True)
        raise
    digest = next(checksums.Digest(i.size, i.hashes) for i in checked.inputs if i.name == main)
    return Checked(ws, checked, digest)
