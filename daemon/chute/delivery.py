"""The one delivery protocol: a run's result out to the outbox, or its input and report to the quarantine.

Every delivery goes through a fence. For a daemon run the fence is the claim:
committing it (one rename) is what only one daemon can do, so a run whose claim
was taken over delivers nothing; markers in the committed claim tell recovery
how far a delivery got, and a crash at any line is finished by `finish()`
without running the file again. `chute submit` has no claim: its fence moves
nothing, and an outage leaves no hidden build folder behind.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path
from typing import Any

from structlog.stdlib import BoundLogger

from . import claims, keep, logs, publish
from .errors import ClaimLost
from .run import Fault, Outcome, OutcomeStatus, RunResult, RunSpec, RunStatus, Verdict, failure, os_reason, utcnow


class ClaimFence:
    """A daemon run's claim folder: the input lives in it until delivery moves it out."""

    moves_input = True

    def __init__(self, spec: RunSpec):
        assert spec.claim is not None and spec.committed is not None  # fence_of: only a claimed run has one
        self.spec = spec
        self.committed = spec.committed
        self.dir = spec.committed if spec.committed.is_dir() else spec.claim

    @property
    def input(self) -> Path:
        return self.dir / self.spec.input_name

    @property
    def is_committed(self) -> bool:
        return self.dir == self.committed

    def commit(self) -> None:
        self.dir = claims.commit(self.dir)  # ClaimLost: another daemon took it over

    def mark(self, marker: str) -> None:
        claims.mark(self.dir, marker)

    def undo(self) -> None:
        """Before anything went out: back to a plain claim, to be delivered (or run) again later."""
        _remove_builds(self.spec)  # the next attempt may end the other way: nothing may stay hidden
        self.dir = claims.uncommit(self.dir)
        for marker in (publish.REVEALING, publish.QUARANTINING):
            (self.dir / marker).unlink(missing_ok=True)

    def delivering(self) -> bool:
        return any(claims.marked(self.dir, m) for m in (publish.REVEALING, publish.QUARANTINING))

    def members(self) -> list[str]:
        """The delivery's members still in the claim: the main file (or folder) last."""
        main = self.spec.input_name
        return [n for n in claims.members_of(self.dir) if n != main] + [main]

    def dispose(self) -> Path | None:
        """Archive or delete every member; returns where the main file (or folder) went."""
        where = None
        for name in self.members():
            # Each member its own note: two members with the same bytes must never pass for one archived.
            note = publish.ARCHIVING if name == self.spec.input_name else f"{publish.ARCHIVING}-{_tag(name)}"
            if os.path.lexists(self.dir / name):
                where = publish.dispose_input(self.dir / name, self.spec, self.dir / note, name)
        return where

    def done(self) -> None:
        claims.remove(self.dir)
        keep.drop(self.spec.work_dir, self.spec.run_id)  # a crash before this leaves it to keep.sweep

    def lost(self) -> bool:
        return claims.taken(self.dir)


class NoFence:
    """`chute submit`: the user's own file, read in place and never moved."""

    moves_input = False
    is_committed = False

    def __init__(self, spec: RunSpec):
        self.spec = spec
        self.input = spec.input_path

    def commit(self) -> None:
        pass

    def mark(self, marker: str) -> None:
        pass

    def undo(self) -> None:
        _remove_builds(self.spec)  # no recovery finishes a hidden build folder of a submit: none may stay

    def delivering(self) -> bool:
        return False

    def dispose(self) -> Path | None:
        return None

    def done(self) -> None:
        pass

    def lost(self) -> bool:
        return False


Fence = ClaimFence | NoFence


def _tag(name: str) -> str:
    return hashlib.sha1(os.fsencode(name)).hexdigest()[:12]


def _remove_builds(spec: RunSpec) -> None:
    """The hidden build folders of a delivery that did not go out (no marker says it was going)."""
    for folder in (spec.outbox, spec.quarantine):
        shutil.rmtree(publish.build_dir(folder, spec.run_id), ignore_errors=True)


def fence_of(spec: RunSpec) -> Fence:
    return ClaimFence(spec) if spec.claim is not None else NoFence(spec)


def deliver(
    spec: RunSpec,
    outcome: Outcome,
    ws: Path | None,
    input_info: dict[str, Any],
    fence: Fence,
    base: dict[str, Any],
    kept: keep.Kept | None = None,
) -> RunResult:
    """Publish a succeeded outcome or quarantine a failed one; an outage defers it with the claim kept.

    The result comes from the workspace `ws`, or from a result `kept` by an earlier attempt.
    A deferred delivery of a daemon run keeps its result, so its next attempt runs no module.
    """
    log = logs.get("chute.delivery").bind(**spec.context())
    try:
        fence.commit()
        if outcome.status is OutcomeStatus.SUCCEEDED:
            if kept is not None:
                build = publish.build_copy(kept.content, spec.outbox, spec.run_id)
            else:
                assert ws is not None
                build = publish.build_result(spec, outcome, ws, input_info)
            fence.mark(publish.REVEALING)
            final = publish.reveal(build, spec.input_name)
            log.info("run.published", result=str(final))
            archived = fence.dispose()
            fence.done()
            return RunResult(spec.run_id, RunStatus.SUCCEEDED, final, archived_to=archived, **base)
        final = _quarantine(spec, outcome, None if ws is None else ws / ".logs", input_info, fence, kept)
        log.warning("run.quarantined", result=str(final), **(outcome.error or {}))
        return RunResult(spec.run_id, RunStatus.FAILED, final, error=outcome.error, **base)
    except ClaimLost:
        return lost(spec, base)
    except OSError as exc:
        if fence.lost():
            return lost(spec, base)  # taken over after our commit: the new owner delivers
        reason = f"cannot deliver the result: {os_reason(exc)}"
        if fence.delivering():  # once a marker says the result is going out, it is finished, never re-run
            return deferred(spec, reason, Fault.OUTAGE, base)
        fence.undo()
        if kept is None and ws is not None and isinstance(fence, ClaimFence):
            kept = _keep(spec, outcome, ws, input_info, log)
        return deferred(spec, reason, Fault.OUTAGE, base, kept=kept is not None)


def _keep(spec: RunSpec, outcome: Outcome, ws: Path, input_info: dict[str, Any], log: BoundLogger) -> keep.Kept | None:
    """Keep the built result for the next attempt; None (it will run again) when work_dir cannot take it."""
    try:
        path = keep.keep(spec, outcome, ws, input_info)
    except OSError as exc:
        log.warning("run.keep_failed", reason=os_reason(exc))
        return None
    log.info("run.kept", kept=str(path), status=outcome.status.value)
    return keep.Kept(path, outcome.status, outcome.error, input_info.get("size"), input_info.get("sha256"))


def _quarantine(
    spec: RunSpec,
    outcome: Outcome,
    logs_dir: Path | None,
    input_info: dict[str, Any],
    fence: Fence,
    kept: keep.Kept | None = None,
) -> Path:
    if kept is not None:
        build = publish.build_copy(kept.content, spec.quarantine, spec.run_id)
    else:
        build = publish.build_report(spec, outcome, logs_dir, input_info)
    fence.mark(publish.QUARANTINING)
    for name in fence.members() if isinstance(fence, ClaimFence) else [spec.input_name]:
        publish.add_input(
            build,
            fence.dir / name if isinstance(fence, ClaimFence) else fence.input,
            name,
            move=fence.moves_input,
            tag=spec.run_id,
        )
    final = publish.reveal(build, spec.input_name)
    fence.done()
    return final


def quarantine_without_run(spec: RunSpec, reason: str, fence: Fence, info: dict[str, Any] | None = None) -> RunResult:
    """Quarantine a file no module ran on (a symlink, a poison file, an unreadable file), with report.json.

    `info`: the input as reading it found it (a failed verification: its size, hashes and files), for the report.
    """
    stamp = utcnow()
    outcome = Outcome(started_at=stamp, finished_at=stamp, verdict=Verdict.failed(failure(reason)))
    try:
        st = os.lstat(fence.input)
    except OSError as exc:
        if fence.lost():
            return lost(spec, {})
        return deferred(spec, f"cannot quarantine: {os_reason(exc)}", Fault.OUTAGE, {})
    info = info or publish.input_object(spec.input_name, st.st_size, None, spec.inbox)
    base = {"input_size": info["size"], "input_sha256": info.get("sha256")}
    return deliver(spec, outcome, None, info, fence, base)


def finish(spec: RunSpec, fence: ClaimFence) -> RunResult | None:
    """A committed claim whose delivery stopped (a crash, an outage): complete what its markers say.

    Returns the result when it is out, None when nothing went out and the file must run
    again (the claim is then uncommitted). An outage defers it: nothing is decided.
    """
    log = logs.get("chute.delivery").bind(**spec.context())
    try:
        status = _finish(spec, fence)
    except OSError as exc:
        if fence.lost():
            return lost(spec, {})
        return deferred(spec, f"cannot finish delivering the result: {os_reason(exc)}", Fault.OUTAGE, {})
    if status is None:
        fence.undo()
        if fence.is_committed:
            return deferred(spec, f"cannot take back the commit of {fence.dir}", Fault.OUTAGE, {})
        return None
    log.info("run.recovered", state=status.value)
    return RunResult(spec.run_id, status)


def _finish(spec: RunSpec, fence: ClaimFence) -> RunStatus | None:
    claim = fence.dir
    name = claims.input_of(claim)
    if claims.marked(claim, publish.REVEALING):
        build = publish.build_dir(spec.outbox, spec.run_id)
        publish.require_root(spec.outbox)  # an unmounted outbox hides the build too: that is not "revealed"
        if build.exists():
            publish.reveal(build, _named(build / "manifest.json", name))
        if name is not None:
            fence.dispose()
        fence.done()
        return RunStatus.SUCCEEDED
    if claims.marked(claim, publish.QUARANTINING):
        build = publish.build_dir(spec.quarantine, spec.run_id)
        publish.require_root(spec.quarantine)
        if build.exists():
            for member in [m for m in fence.members() if os.path.lexists(claim / m)]:
                if (build / member).exists():
                    # A move across filesystems renamed its whole copy in and stopped before the unlink.
                    publish.remove_input(claim / member)
                else:
                    publish.add_input(build, claim / member, member, move=True, tag=spec.run_id)
            publish.reveal(build, _named(build / "report.json", name))
        elif name is not None:
            return None  # its build folder was given up before the input moved: run it again
        fence.done()  # revealed, and stopped before the claim was removed
        return RunStatus.FAILED
    return None


def _named(doc: Path, name: str | None) -> str:
    """The input's name for a result folder: the claim's, or (its input gone already) what the manifest says."""
    if name is not None:
        return name
    return publish.input_name(json.loads(doc.read_text(encoding="utf-8")))


def lost(spec: RunSpec, base: dict[str, Any]) -> RunResult:
    """Another daemon took the claim over (we were thought dead): it runs the file; we deliver nothing.

    Never "deferred": a run retried on a claim that is gone would wait for ever.
    """
    reason = "another daemon took over this claim"
    logs.get("chute.delivery").warning("run.discarded", **spec.context(), reason=reason)
    return RunResult(spec.run_id, RunStatus.LOST, error=failure(reason), **base)


def deferred(spec: RunSpec, reason: str, fault: Fault, base: dict[str, Any], kept: bool = False) -> RunResult:
    """Not the file's fault: the claim is kept and the daemon tries again later (it logs run.deferred)."""
    return RunResult(spec.run_id, RunStatus.DEFERRED, error=failure(reason), fault=fault, kept=kept, **base)
