"""One run, start to end: workspace, steps, then publish or quarantine (a plain function of plain data)."""

from __future__ import annotations

import errno
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import claims, logs, publish
from .errors import ClaimLost
from .pipeline import Emit, Outcome, RunSpec, failure, prepare_workspace, run_steps, utcnow


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
    committed = Path(spec.claim + claims.COMMIT_SUFFIX) if spec.claim else None
    if committed is not None and committed.is_dir():
        resumed = _resume(spec, committed, log)
        if resumed is not None:
            return resumed
    ws = Path(spec.work_dir) / spec.run_id
    try:
        try:
            if spec.claim:
                claims.mark(Path(spec.claim), claims.RUNNING)  # from here a daemon death counts as a crash
            ws = prepare_workspace(spec)
            input_info = publish.describe_input(spec)
        except OSError as exc:
            if spec.claim and claims.taken(Path(spec.claim)):
                return _lost(spec, log, {"input_size": None, "input_sha256": None})
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
    delivering = False  # once a marker says the result is going out, an outage is finished later, never re-run
    try:
        if claim is not None:
            claim = claims.commit(claim)  # a daemon that lost its claim to a take-over stops here
        input_path = (claim / spec.input_name) if claim is not None else Path(spec.input_path)
        if outcome.status == "succeeded":
            build = publish.build_result(spec, outcome, ws, input_info)
            if claim is not None:
                claims.mark(claim, claims.REVEALING)
                delivering = True
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
            delivering = True
        publish.add_input(build, input_path, spec.input_name, move=claim is not None)
        final = publish.reveal(build, publish.result_name(spec.input_name))
        if claim is not None:
            claims.remove(claim)
        log.warning("run.quarantined", result=str(final), **(outcome.error or {}))
        return RunResult(spec.run_id, "failed", str(final), error=outcome.error, **base)
    except ClaimLost:
        return _lost(spec, log, base)
    except OSError as exc:
        if claim is not None and claims.taken(claim):
            return _lost(spec, log, base)  # taken over after our commit: the new owner delivers
        if claim is not None and not delivering:
            claims.uncommit(claim)
        elif claim is None:  # `chute submit`: no recovery will finish a hidden build folder, so none may stay
            for folder in (spec.outbox, spec.quarantine):
                shutil.rmtree(publish.build_dir(Path(folder), spec.run_id), ignore_errors=True)
        reason = f"cannot deliver the result: {exc.strerror or exc} ({getattr(exc, 'filename', '') or ''})"
        log.error("run.deferred", reason=reason)
        return RunResult(spec.run_id, "deferred", error=failure(reason), **base)


def _resume(spec: RunSpec, claim: Path, log) -> RunResult | None:
    """An earlier attempt committed this claim, then met an outage: finish its delivery.

    Its result may already be out (say the archive was full): running it again would
    publish it twice. Returns None when nothing of it went out and it must run again.
    """
    try:
        status = finish_delivery(spec, claim, claims.input_of(claim))
        if status is None and claims.uncommit(claim) == claim:
            raise OSError(f"cannot take back the commit of {claim}")
    except OSError as exc:
        if claims.taken(claim):
            return _lost(spec, log, {})
        reason = f"cannot finish delivering the result: {exc.strerror or exc} ({getattr(exc, 'filename', '') or ''})"
        log.error("run.deferred", reason=reason)
        return RunResult(spec.run_id, "deferred", error=failure(reason))
    if status is None:
        return None
    log.info("run.recovered", state=status)
    return RunResult(spec.run_id, status)


def finish_delivery(spec: RunSpec, claim: Path, name: str | None) -> str | None:
    """A committed claim whose delivery stopped (a crash, an outage): complete what its markers say.

    Returns "succeeded" or "failed" when its result is out, None when it must run again.
    OSError when a folder it needs is unavailable: then nothing is decided.
    """
    if (claim / claims.REVEALING).exists():
        outbox = Path(spec.outbox)
        build = publish.build_dir(outbox, spec.run_id)
        if build.exists():
            publish.reveal(build, publish.result_name(spec.input_name))
        elif not outbox.is_dir():
            # An unmounted outbox hides the build too: that is not "already revealed".
            raise FileNotFoundError(errno.ENOENT, "the outbox is not there", str(outbox))
        if name is not None:
            publish.dispose_input(claim / name, name, spec.on_success, spec.archive)
        claims.remove(claim)
        return "succeeded"
    if (claim / claims.QUARANTINING).exists():
        quarantine = Path(spec.quarantine)
        build = publish.build_dir(quarantine, spec.run_id)
        if not quarantine.is_dir():
            raise FileNotFoundError(errno.ENOENT, "the quarantine is not there", str(quarantine))
        if build.exists():
            if name is not None and (build / name).exists():
                # A move across filesystems renamed its whole copy in and stopped before the unlink.
                os.unlink(claim / name)
            elif name is not None:
                publish.add_input(build, claim / name, name, move=True)
            else:  # the input went into the build already: name the folder for it, as its report does
                name = json.loads((build / "report.json").read_text())["input"]["name"]
            publish.reveal(build, publish.result_name(name))
            claims.remove(claim)
            return "failed"
        if name is None:  # revealed, and then stopped before the claim was removed
            claims.remove(claim)
            return "failed"
    return None


def _lost(spec: RunSpec, log, base: dict[str, Any]) -> RunResult:
    """Another daemon took the claim over (we were thought dead): it runs the file; we deliver nothing.

    Never "deferred": a run retried on a claim that is gone would hold a worker slot forever.
    """
    log.warning("run.discarded", reason="another daemon took over this claim")
    return RunResult(spec.run_id, "lost", error=failure("another daemon took over this claim"), **base)


__all__ = ["RunResult", "RunSpec", "execute", "finish_delivery", "utcnow"]
