"""Results kept on local disk while their delivery waits, so a deferred delivery never runs the modules again.

When the steps are done but the outbox (or the quarantine) cannot take the result,
the result folder's content (the public artifacts and manifest.json, or report.json
and the logs) is kept in `work_dir/results/<run_id>/result/`, beside `kept.json`
naming the claim it belongs to. It is assembled inside the run's workspace, fsynced
and renamed into place: a crash leaves either a whole kept result or none (the
half-built one goes with the dead owner's workspaces).

The claim's next attempt (this daemon later, after a restart, or a daemon on this
host that took the claim over) delivers it through the claim's fence, as any
result; it is removed once delivered. One that no claim holds any more (delivered,
then a crash before its removal) is only ever removed, never delivered: a delivery
needs its claim.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import claims, logs, publish
from .fileops import fsync_dir, sync_tree
from .run import COMMIT_SUFFIX, Outcome, OutcomeStatus, RunSpec, utcnow

RESULTS = "results"  # work_dir/results/<run_id>/
RECORD = "kept.json"
CONTENT = "result"
SCHEMA = "chute.kept/1"
STAGING = ".kept"  # inside the run's workspace while it is assembled

log = logs.get("chute.keep")


@dataclass(frozen=True)
class Kept:
    """A complete kept result: its folder (the result folder's content) and what the run came to."""

    path: Path
    status: OutcomeStatus  # succeeded | failed
    error: dict[str, Any] | None
    input_size: int | None
    input_sha256: str | None

    @property
    def content(self) -> Path:
        return self.path / CONTENT


def folder(work_dir: Path, run_id: str) -> Path:
    return work_dir / RESULTS / run_id


def keep(spec: RunSpec, outcome: Outcome, ws: Path, input_info: dict[str, Any]) -> Path:
    """Keep a run's built result in work_dir for a later delivery; returns its folder (OSError: not kept)."""
    staged = ws / STAGING
    shutil.rmtree(staged, ignore_errors=True)
    content = staged / CONTENT
    try:
        content.mkdir(parents=True)
        if outcome.status is OutcomeStatus.SUCCEEDED:
            publish.fill_result(content, spec, outcome, ws, input_info)  # hard links: same filesystem
        else:
            publish.fill_report(content, spec, outcome, ws / ".logs", input_info)
        record = {
            "schema": SCHEMA,
            "run_id": spec.run_id,
            "claim": str(spec.claim),
            "inbox": str(spec.inbox),
            "input": spec.input_name,
            "input_size": input_info.get("size"),
            "input_sha256": input_info.get("sha256"),
            "job_sha256": spec.job.sha256,
            "status": outcome.status.value,
            "error": outcome.error,
            "owner": spec.owner,
            "kept_at": utcnow(),
        }
        (staged / RECORD).write_text(json.dumps(record, indent=2, default=str))
        sync_tree(staged)
        root = spec.work_dir / RESULTS
        root.mkdir(exist_ok=True)
        target = root / spec.run_id
        shutil.rmtree(target, ignore_errors=True)  # an older one of this claim that find() did not accept
        os.rename(staged, target)
        fsync_dir(root)
    except BaseException:
        shutil.rmtree(staged, ignore_errors=True)
        raise
    return target


def find(spec: RunSpec, input_size: int) -> Kept | None:
    """The complete kept result of this claim, if there is one it may deliver; a stale one is removed."""
    path = folder(spec.work_dir, spec.run_id)
    try:
        record = json.loads((path / RECORD).read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        _drop(path, spec, f"unreadable record: {exc}")
        return None
    why = _stale(record, spec, input_size)
    if why is not None:
        _drop(path, spec, why)
        return None
    return Kept(
        path, OutcomeStatus(record["status"]), record.get("error"), record.get("input_size"), record.get("input_sha256")
    )


def _stale(record: dict, spec: RunSpec, input_size: int) -> str | None:
    """Why a kept result may not be delivered for `spec`'s claim, or None."""
    if record.get("schema") != SCHEMA or record.get("status") not in ("succeeded", "failed"):
        return "not a kept result of this chute"
    if (record.get("run_id"), record.get("input")) != (spec.run_id, spec.input_name):
        return "it belongs to another run"
    if record.get("job_sha256") != spec.job.sha256:
        return "the job definition changed since it was built"
    if record.get("input_size") is not None and record["input_size"] != input_size:
        return "the claimed input is not the one it was built from"
    return None


def drop(work_dir: Path, run_id: str) -> None:
    """Remove the kept result of a claim (its delivery committed); nothing if there is none."""
    path = folder(work_dir, run_id)
    if path.exists():
        shutil.rmtree(path, ignore_errors=True)


def _drop(path: Path, spec: RunSpec, reason: str) -> None:
    log.warning("run.kept_dropped", **spec.context(), kept=str(path), reason=reason)
    shutil.rmtree(path, ignore_errors=True)


def sweep(work_dir: Path) -> list[Path]:
    """Remove the kept results that no claim holds any more (delivered, then a crash); returns them.

    A claim may have moved to another daemon's folder (a take-over), so every owner's
    folder of its inbox is looked at; an inbox that is not there (an unmounted share)
    says nothing, and its kept results stay.
    """
    removed: list[Path] = []
    try:
        kept = list((work_dir / RESULTS).iterdir())
    except OSError:
        return removed
    for path in kept:
        try:
            record = json.loads((path / RECORD).read_text())
            held = _held(Path(record["inbox"]), record["run_id"])
        except (OSError, ValueError, KeyError, TypeError):
            held = False  # the record is written before the rename: without one it is nobody's result
        if held is False:
            shutil.rmtree(path, ignore_errors=True)
            removed.append(path)
    return removed


def _held(inbox: Path, run_id: str) -> bool | None:
    """Whether a claim `run_id` exists in `inbox` (any owner's, committed or not); None when it cannot be told."""
    root = claims.claimed_root(inbox)
    try:
        owners = list(root.iterdir())
    except OSError:
        return None
    return any((owner / run_id).is_dir() or (owner / (run_id + COMMIT_SUFFIX)).is_dir() for owner in owners)
