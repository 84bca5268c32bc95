"""A job bound to one delivery (contract §12): its `match` inputs found, its `for_each` entries expanded.

Binding reads only the delivery's list of files (package.py's `Package`) and the job's plan;
it runs before anything is staged, so a delivery it cannot bind is quarantined (`Unbound`,
the delivery's fault) before any module runs. The bound plan is what the step engine runs.
"""

from __future__ import annotations

import json
import os
import stat
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Protocol

from . import claims, globs, staging
from .fileops import private_copy, reflink
from .plan import Artifact, Binding, EntryPlan, JobPlan, Skipped, StepPlan
from .run import EntryRecord, EntryStatus

# for_each instances of one step running at once (a card of 500 clips must not start 500 transcodes together)
AT_ONCE = max(4, os.cpu_count() or 1)
EACH = ".each"  # in a workspace: `.each/<file>/<output>`, a for_each entry's outputs for one file
RESERVED = ("manifest.json", "report.json", "ascmhl")  # names of a result folder that are not artifacts


class Delivery(Protocol):
    """What binding needs of a delivery: package.Package."""

    @property
    def unit(self) -> str: ...

    @property
    def root(self) -> Path: ...

    @property
    def main(self) -> str | None: ...

    @property
    def files(self) -> tuple[str, ...]: ...


class Unbound(Exception):
    """The delivery lacks a file the job needs, or has several where it needs one: the delivery's fault."""


@dataclass(frozen=True)
class Bound:
    """The plan to run, and the sidecar files to stage: (artifact name, the file relative to the delivery)."""

    plan: JobPlan
    sidecars: tuple[tuple[str, str], ...]


def bind(plan: JobPlan, delivery: Delivery) -> Bound:
    """Bind `plan`'s inputs to the files of `delivery`; raises Unbound with a one-line reason."""
    if plan.folder and delivery.unit != "folder":
        raise Unbound(
            f"job {plan.name!r} takes a whole folder (`type: folder`): deliver a folder to a `unit: folder` inbox"
        )
    main = delivery.main
    if plan.main_match and main is not None and not globs.matches(plan.main_match, main):
        raise Unbound(f"missing input: the main file {main!r} does not match {globs.shown(plan.main_match)}")
    absent: set[str] = set()
    sidecars: list[tuple[str, str]] = []
    others = [f for f in delivery.files if f != delivery.main]
    for sc in plan.sidecars:
        found = globs.select(sc.match, others)
        if not found and sc.optional:
            absent.add(sc.name)
        elif not found:
            raise Unbound(f"missing input: no file matches {globs.shown(sc.match)} (input {sc.name!r})")
        elif len(found) > 1:
            some = ", ".join(found[:5]) + (", ..." if len(found) > 5 else "")
            raise Unbound(f"ambiguous input: {len(found)} files match {globs.shown(sc.match)} ({some}) for {sc.name!r}")
        else:
            sidecars.append((sc.name, found[0]))
    if not any(e.for_each for e in plan.entries()) and not absent:
        return Bound(plan, tuple(sidecars))
    return Bound(_expand(plan, delivery.files, absent), tuple(sidecars))


def _expand(plan: JobPlan, files: tuple[str, ...], absent: set[str]) -> JobPlan:
    """The plan with entries needing an absent input left out, and each for_each entry once per file."""
    folder = plan.input_names[0] if plan.folder else ""
    steps: list[StepPlan] = []
    skipped: list[Skipped] = []
    made: dict[str, tuple[str, ...]] = {}  # a for_each output's name -> the files it is made for
    for step in plan.steps:
        entries: list[EntryPlan] = []
        for e in step.entries:
            missing = next((b.artifact for b in e.inputs if b.artifact in absent), None)
            if missing is not None:
                skipped.append(Skipped(e.step, e.module, f"its input {missing!r} is absent"))
                absent.update(b.artifact for b in e.outputs)
                continue
            if not e.for_each:
                entries.append(e)
                continue
            matched = globs.select(e.for_each, files)
            if not matched:
                raise Unbound(
                    f"missing input: no file matches for_each {globs.shown(e.for_each)} ({e.step}, {e.module})"
                )
            entries += [_instance(e, rel, folder, made) for rel in matched]
            made.update({b.artifact: tuple(matched) for b in e.outputs})
        steps.append(StepPlan(step.name, tuple(entries)))
    artifacts = _artifacts(plan, absent, made)
    _no_clash(artifacts)
    return replace(plan, steps=tuple(steps), artifacts=artifacts, skipped=tuple(skipped))


def _instance(e: EntryPlan, rel: str, folder: str, made: dict[str, tuple[str, ...]]) -> EntryPlan:
    """Entry `e` for the delivery's file `rel`: that file (or its earlier outputs) in, its own outputs out."""

    def path(b: Binding) -> Binding:
        if b.artifact == folder:
            return replace(b, artifact=f"{folder}/{rel}")
        if b.artifact in made:
            return replace(b, artifact=each_path(rel, b.artifact))
        return b

    outputs = tuple(replace(b, artifact=each_path(rel, b.artifact)) for b in e.outputs)
    return replace(e, inputs=tuple(path(b) for b in e.inputs), outputs=outputs, file=rel)


def each_path(rel: str, name: str) -> str:
    """Where a for_each entry's output `name` for the file `rel` lies in the workspace."""
    return f"{EACH}/{rel}/{name}"


def _artifacts(plan: JobPlan, absent: set[str], made: dict[str, tuple[str, ...]]) -> tuple[Artifact, ...]:
    out: list[Artifact] = []
    for a in plan.artifacts:
        if a.name in absent:
            continue
        if a.name not in made:
            out.append(a)
            continue
        out += [replace(a, name=each_path(rel, a.name), file=rel, declared=a.name) for rel in made[a.name]]
    return tuple(out)


def _no_clash(artifacts: tuple[Artifact, ...]) -> None:
    """A file's folder in the result must not take the name of a flat public artifact (or the manifest)."""
    flat = {a.name for a in artifacts if a.public and a.file is None} | set(RESERVED)
    for a in artifacts:
        if a.public and a.file is not None and a.file.split("/", 1)[0] in flat:
            raise Unbound(f"the delivery's file {a.file!r} would share its result folder's name with an artifact")


def stage(bound: Bound, ws: Path, root: Path, claim_dir: Path | None, copy: staging.Copy = private_copy) -> None:
    """Put the bound sidecars into workspace `ws`, and make the for_each outputs' folders.

    A sidecar is never linked writable: it is reflinked, or hard-linked once it is read-only
    (a stem's sidecars are made so here, their modes kept in the claim's `.modes` for
    claims.restore_modes; a folder's tree was staged so), else copied with `copy` (verification's
    hashing copy, so the check reads it no more).
    """
    plan = bound.plan
    pairs = [(ws / name, ws / plan.input_names[0] / rel if plan.folder else root / rel) for name, rel in bound.sidecars]
    if claim_dir is not None and not plan.folder:
        _read_only(claim_dir, [src for _, src in pairs if staging.links(src, ws)])
    for dst, src in pairs:
        if reflink(src, dst):
            continue
        if not os.stat(src).st_mode & 0o222 and staging.links(src, ws):
            os.link(src, dst)
        else:
            copy(src, dst)
    for e in plan.entries():
        for b in e.outputs:
            (ws / b.artifact).parent.mkdir(parents=True, exist_ok=True)


def _read_only(claim_dir: Path, files: list[Path]) -> None:
    """Take the write bits of a stem's sidecars while the run holds them, recorded first (durably) to be given back."""
    modes = {str(f.relative_to(claim_dir)): stat.S_IMODE(os.stat(f).st_mode) for f in files}
    if not any(mode & 0o222 for mode in modes.values()):
        return
    claims.mark(claim_dir, claims.MODES, json.dumps({k: f"{m:o}" for k, m in modes.items()}).encode())
    for f in files:
        os.chmod(f, stat.S_IMODE(os.stat(f).st_mode) & ~0o222)


def to_start(records: Sequence[EntryRecord], running: list[int], at_once: int = AT_ONCE) -> list[int]:
    """The entries of a step to start now: every one not started, but at most `at_once` for_each instances running."""
    room = at_once - sum(1 for i in running if records[i].plan.file is not None)
    out = []
    for i, rec in enumerate(records):
        if rec.status is not EntryStatus.PENDING or i in running:
            continue
        if rec.plan.file is not None:
            if room <= 0:
                continue
            room -= 1
        out.append(i)
    return out
