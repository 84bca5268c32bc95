"""One run, start to end: workspace, steps, then publish or quarantine (a plain function of plain data)."""

from __future__ import annotations

import errno
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import claims, logs, publish
from .errors import ClaimLost
from .pipeline import Emit, Outcome, RunSpec, failure, prepare_workspace, run_steps, utcnow

# Errors of the place results go to, not of the file: the run is retried later, never quarantined.
OUTAGE_ERRNOS = {errno.ENOSPC, errno.EIO, errno.ESTALE, errno.ENOENT, errno.EROFS, errno.EDQUOT,
                 errno.ENOTCONN, errno.EHOSTDOWN, errno.ETIMEDOUT, errno.EACCES}


@dataclass(frozen=True)
class RunResult:
    run_id: str
    status: str  # succeeded | failed | released | lost | deferred
    result_dir: str | None = None
    error: dict[str, Any] | None = None
    input_size: int | None = None
    input_sha256: str | None = None
    archived_to: str | None = None


def execute(spec: RunSpec, emit: Emit | None = None) -> RunResult:
    """Run `spec` and deliver its result; never raises for what a module or a file did."""
    log = logs.get("chute.runner").bind(**spec.context())
    ws = Path(spec.work_dir) / spec.run_id
    try:
        try:
            if spec.claim:
                claims.mark(Path(spec.claim), claims.RUNNING)  # from here a daemon death counts as a crash
            ws = prepare_workspace(spec)
            input_info = publish.describe_input(spec)
        except OSError as exc:
            log.error("run.deferred", reason=f"cannot prepare the workspace: {exc}")
            return RunResult(spec.run_id, "deferred", error=failure(f"cannot prepare the workspace: {exc}"))
        log.info("run.started", size=input_info["size"], sha256=input_info["sha256"])
        outcome = run_steps(spec, ws, emit)
        if outcome.status == "cancelled":
            return RunResult(spec.run_id, "released", error=outcome.error, input_size=input_info["size"],
                             input_sha256=input_info["sha256"])
        return _deliver(spec, outcome, ws, input_info, log)
    finally:
        shutil.rmtree(ws, ignore_errors=True)


def _deliver(spec: RunSpec, outcome: Outcome, ws: Path, input_info: dict[str, Any], log) -> RunResult:
    base = {"input_size": input_info["size"], "input_sha256": input_info["sha256"]}
    claim = Path(spec.claim) if spec.claim else None
    try:
        if claim is not None:
            claim = claims.commit(claim)  # a daemon that lost its claim to a take-over stops here
        input_path = (claim / spec.input_name) if claim is not None else Path(spec.input_path)
        if outcome.status == "succeeded":
            build = publish.build_result(spec, outcome, ws, input_info)
            if claim is not None:
                claims.mark(claim, claims.REVEALING)
            final = publish.reveal(build, publish.result_name(spec.input_name))
            log.info("run.published", result=str(final))
            archived = None
            if claim is not None:
                archived = publish.dispose_input(input_path, spec.input_name, spec.on_success, spec.archive)
                claims.remove(claim)
            return RunResult(spec.run_id, "succeeded", str(final), archived_to=archived, **base)
        build = publish.build_report(spec, outcome, ws, input_info)
        if claim is not None:
            claims.mark(claim, claims.QUARANTINING)
        publish.add_input(build, input_path, spec.input_name, move=claim is not None)
        final = publish.reveal(build, publish.result_name(spec.input_name))
        if claim is not None:
            claims.remove(claim)
        log.warning("run.quarantined", result=str(final), **(outcome.error or {}))
        return RunResult(spec.run_id, "failed", str(final), error=outcome.error, **base)
    except ClaimLost:
        log.warning("run.discarded", reason="another daemon took over this claim")
        return RunResult(spec.run_id, "lost", error=failure("another daemon took over this claim"), **base)
    except OSError as exc:
        if claim is not None:
            claims.uncommit(claim)
        reason = f"cannot deliver the result: {exc.strerror or exc} ({getattr(exc, 'filename', '') or ''})"
        log.error("run.deferred", reason=reason)
        return RunResult(spec.run_id, "deferred", error=failure(reason), **base)


__all__ = ["RunResult", "RunSpec", "execute", "utcnow"]
