"""One run, start to end, wherever it executes: workspace, steps, then publish or quarantine.

A plain function of plain values (`RunSpec` in, `RunResult` out): a local pool
worker, `chute submit` and a Dask worker all call `execute`.
"""

from __future__ import annotations

import dataclasses
import shutil
import time
from pathlib import Path
from typing import Any

from . import bind, claims, keep, logs, package, staging, verification
from .attempt import Modules
from .delivery import ClaimFence, Fence, deferred, deliver, fence_of, finish, lost, quarantine_without_run
from .pipeline import Cancel, Emit, run_steps
from .run import (
    EntryStat,
    Fault,
    Outcome,
    OutcomeStatus,
    RunResult,
    RunSpec,
    RunStatus,
    Verdict,
    failure,
    os_reason,
    utcnow,
)


def execute(
    spec: RunSpec, cancel: Cancel | None = None, emit: Emit | None = None, modules: Modules | None = None
) -> RunResult:
    """Run `spec` and deliver its result; never raises for what a module, a file or a folder did."""
    started = time.monotonic()
    fence = fence_of(spec)
    result = _resume(spec, fence) if isinstance(fence, ClaimFence) else None
    if result is None:
        result = _run(spec, fence, cancel, emit, modules)
    return RunResult(**{**result.__dict__, "duration_s": round(time.monotonic() - started, 3)})


def _resume(spec: RunSpec, fence: ClaimFence) -> RunResult | None:
    """What a claim says before anything runs: a delivery to finish, a poison file, or the input's own mode back."""
    if fence.is_committed:
        result = finish(spec, fence)
        if result is not None:
            return result
    try:
        claims.restore_mode(fence.dir, fence.input)  # an earlier attempt died holding it read-only
        kept = keep.find(spec, staging.tree_size(fence.input))
        if kept is not None:
            return _deliver_kept(spec, fence, kept)
        if spec.poison is not None:
            return quarantine_without_run(spec, spec.poison, fence)
        claims.mark(fence.dir, claims.RUNNING)  # from here a death counts as a crash
    except OSError as exc:
        return lost(spec, {}) if fence.lost() else deferred(spec, f"cannot start: {os_reason(exc)}", Fault.OUTAGE, {})
    return None


def _deliver_kept(spec: RunSpec, fence: ClaimFence, kept: keep.Kept) -> RunResult:
    """An earlier attempt built the result and could not deliver it: deliver it now, running no module."""
    logs.get("chute.runner").info(
        "run.resumed_delivery", **spec.context(), kept=str(kept.path), status=kept.status.value
    )
    stamp = utcnow()
    outcome = Outcome(started_at=stamp, finished_at=stamp, verdict=Verdict(kept.status, kept.error))
    base = {"input_size": kept.input_size, "input_sha256": kept.input_sha256}
    return deliver(spec, outcome, None, {}, fence, base, kept=kept)


def _run(spec: RunSpec, fence: Fence, cancel: Cancel | None, emit: Emit | None, modules: Modules | None) -> RunResult:
    log = logs.get("chute.runner").bind(**spec.context())
    ws: Path | None = None
    try:
        prepared = _prepare(spec, fence)
        if isinstance(prepared, RunResult):
            return prepared
        ws, info, spec = prepared  # the spec's job bound to the delivery (bind.py)
        log.info("run.started", size=info["size"], sha256=info["sha256"], workspace=str(ws))
        outcome = run_steps(spec, ws, cancel, emit, modules)
        base = {"input_size": info["size"], "input_sha256": info["sha256"], "entries": _stats(outcome)}
        base["output_size"] = _output_size(spec, ws, outcome)
        try:
            if isinstance(fence, ClaimFence):
                if fence.lost():  # taken over while it ran (this daemon was frozen, or thought dead)
                    return lost(spec, base)
                claims.restore_mode(fence.dir, fence.input)
            if outcome.status is OutcomeStatus.CANCELLED:
                return RunResult(spec.run_id, RunStatus.RELEASED, error=outcome.error, **base)
            if outcome.status is OutcomeStatus.DEFERRED and not _crashed_too_often(spec, fence, outcome):
                return RunResult(spec.run_id, RunStatus.DEFERRED, error=outcome.error, fault=outcome.fault, **base)
        except OSError as exc:  # the claim's share went away meanwhile
            if isinstance(fence, ClaimFence) and fence.lost():
                return lost(spec, base)
            return deferred(spec, f"cannot reach the claim: {os_reason(exc)}", Fault.OUTAGE, base)
        return deliver(spec, outcome, ws, info, fence, base)
    finally:
        if ws is not None:
            shutil.rmtree(ws, ignore_errors=True)


def _prepare(spec: RunSpec, fence: Fence) -> tuple[Path, dict[str, Any], RunSpec] | RunResult:
    """The workspace, the input's description and the bound spec, or why the run cannot start (and whose fault)."""
    try:
        claim_dir = fence.dir if isinstance(fence, ClaimFence) else None
        delivery = package.of(spec)
        bound = bind.bind(spec.job, delivery)  # before anything is staged: a delivery lacking a file runs nothing
        size = staging.tree_size(fence.input)
        need, free = staging.needs(spec, size, fence.input, claim_dir), staging.free_bytes(spec.work_dir)
        if free < need:
            reason = f"work_dir {spec.work_dir} has {free >> 20} MiB free; this run needs {need >> 20} MiB"
            return deferred(spec, reason, Fault.MACHINE, {})
        root = delivery.root

        def sidecars(ws: Path, copy: staging.Copy) -> None:  # staged before the check, with its hashing copy
            bind.stage(bound, ws, root, claim_dir, copy)

        checked = verification.prepare(spec, fence, claim_dir, sidecars)
        if checked.verification.reason is not None:  # the delivery is not what its checksums say: nothing runs
            return _refuse(spec, fence, checked)
        return checked.ws, checked.input_info(spec), dataclasses.replace(spec, job=bound.plan)
    except bind.Unbound as exc:  # the delivery's fault: it lacks a file the job needs
        return quarantine_without_run(spec, str(exc), fence)
    except staging.Unreadable as exc:  # the file's own problem: quarantined with the reason, never retried for ever
        return quarantine_without_run(spec, f"chute cannot read the file: {exc}", fence)
    except OSError as exc:
        if isinstance(fence, ClaimFence) and fence.lost():
            return lost(spec, {})
        if staging.machine_errno(exc) or not spec.work_dir.is_dir() or staging.within(exc.filename, spec.work_dir):
            return deferred(spec, f"cannot prepare the workspace: {os_reason(exc)}", Fault.MACHINE, {})
        return deferred(spec, f"cannot read the input: {os_reason(exc)}", Fault.OUTAGE, {})


def _refuse(spec: RunSpec, fence: Fence, checked: verification.Checked) -> RunResult:
    """Quarantine a delivery that failed verification, with the reason and its files as they were read."""
    shutil.rmtree(checked.ws, ignore_errors=True)
    if isinstance(fence, ClaimFence):
        claims.restore_mode(fence.dir, fence.input)  # a linked stage took its write bits away
    reason = checked.verification.reason
    assert reason is not None
    return quarantine_without_run(spec, reason, fence, checked.input_info(spec))


def _crashed_too_often(spec: RunSpec, fence: Fence, outcome: Outcome) -> bool:
    """A run killed under the file (the OOM killer, a dead launcher) counts as a crash; too many quarantine it."""
    if outcome.fault != Fault.CRASH or not isinstance(fence, ClaimFence):
        return False
    count = claims.count_crash(fence.dir)
    if count < spec.max_crashes:
        return False
    error = dict(outcome.error or failure("killed"))
    error["reason"] = f"{error['reason']}; in {count} runs of this file"
    outcome.verdict = Verdict.failed(error)
    return True


def _stats(outcome: Outcome) -> tuple[EntryStat, ...]:
    return tuple(
        EntryStat(r.plan.module, r.status, round(r.duration_s, 3), r.attempts)
        for _, records in outcome.steps
        for r in records
        if r.attempts
    )


def _output_size(spec: RunSpec, ws: Path, outcome: Outcome) -> int | None:
    """The bytes of the public artifacts a succeeded run publishes (the web page's bytes out)."""
    if outcome.status is not OutcomeStatus.SUCCEEDED:
        return None
    return sum(p.stat().st_size for a in spec.job.public if (p := ws / a.name).is_file())
