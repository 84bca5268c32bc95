"""A job's resolved plan (contract §3): plain, frozen, picklable values handed to the runner."""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

from .model import display_path
from .names import shown


@dataclass(frozen=True)
class Binding:
    """One `--param path` pair of an entry: which artifact file the flag gets."""

    param: str
    artifact: str
    type: str
    public: bool = False


@dataclass(frozen=True)
class EntryPlan:
    step: str
    index: int
    module: str
    module_version: str | None
    folder: str
    entrypoint: str
    inputs: tuple[Binding, ...]
    outputs: tuple[Binding, ...]
    options: tuple[tuple[str, str], ...]
    timeout: float | None
    retries: int
    launcher: str = "warm"  # warm | fresh (the module's manifest)
    for_each: tuple[str, ...] = ()  # run once per matching file of a folder delivery (contract §12)
    file: str | None = None  # bound at run time: the delivery's file this instance of a for_each entry is for

    @property
    def label(self) -> str:
        """A name for this entry that is unique in its job: `step1.0.example_module`."""
        return f"{self.step}.{self.index}.{self.module}"

    @property
    def fields(self) -> dict[str, str]:
        """What its log events say of it: step and module, and a for_each instance's file (`member`)."""
        return {"step": self.step, "module": self.module} | ({} if self.file is None else {"member": self.file})

    @property
    def slot(self) -> str:
        """A name unique in its run, even among a for_each entry's instances: its log's and TMPDIR's name."""
        if self.file is None:
            return self.label
        slot = f"{self.label}.{self.file.replace('/', '_')}"
        if len(os.fsencode(slot)) <= 200:
            return slot
        # A file name near the 255-byte limit would make the log's name too long: cut, kept unique by a hash.
        digest = hashlib.sha256(os.fsencode(self.file)).hexdigest()[:12]
        return f"{self.label}.{os.fsdecode(os.fsencode(self.file.replace('/', '_'))[-120:])}.{digest}"

    def argv(self, workspace: Path) -> list[str]:
        """The command-line arguments after the entrypoint (contract §2)."""
        args: list[str] = []
        for b in self.inputs + self.outputs:
            args += [f"--{b.param}", str(workspace / b.artifact)]
        for flag, value in self.options:
            args += [f"--{flag}", value]
        return args


@dataclass(frozen=True)
class StepPlan:
    name: str
    entries: tuple[EntryPlan, ...]


@dataclass(frozen=True)
class Artifact:
    name: str  # its path in the workspace: the declared name, or `.each/<file>/<name>` for a for_each output
    type: str
    step: str | None  # None: bound to the dropped file
    module: str | None
    public: bool
    for_each: tuple[str, ...] = ()  # made once per matching file (an output of a for_each entry)
    file: str | None = None  # bound at run time: the delivery's file it was made from
    declared: str | None = None  # bound at run time: its name as the job declares it

    @property
    def result_path(self) -> str:
        """Where it goes in the result folder: its name, or `<file>/<name>` for one made from one file."""
        return self.name if self.file is None else f"{self.file}/{self.declared}"


@dataclass(frozen=True)
class Sidecar:
    """A job input bound to one file of the delivery by a glob (`match`), other than the main input."""

    name: str
    type: str
    match: tuple[str, ...]
    optional: bool = False


@dataclass(frozen=True)
class Skipped:
    """An entry that did not run because an optional input was absent (the manifest's `skipped`)."""

    step: str
    module: str
    reason: str


@dataclass(frozen=True)
class JobPlan:
    name: str
    version: str
    sha256: str
    source: str
    input_type: str
    input_names: tuple[str, ...]
    steps: tuple[StepPlan, ...]
    artifacts: tuple[Artifact, ...]
    sidecars: tuple[Sidecar, ...] = ()  # inputs with `match` other than the main one
    main_match: tuple[str, ...] = ()  # the main input's `match` (which file of a stem group is the main one)
    skipped: tuple[Skipped, ...] = ()  # bound at run time: entries left out for an absent optional input

    @property
    def folder(self) -> bool:
        """Whether the main input is the whole delivery (`type: folder`)."""
        return self.input_type == "folder"

    @property
    def public(self) -> tuple[Artifact, ...]:
        return tuple(a for a in self.artifacts if a.public)

    def entries(self) -> list[EntryPlan]:
        return [e for s in self.steps for e in s.entries]


def describe(plan: JobPlan) -> list[str]:
    """`chute plan`: the job's inputs, steps, entries (a for_each entry once, with its file) and artifacts."""
    out = [f"job {plan.name} {plan.version}  ({display_path(Path(plan.source))})"]
    what = "the delivery's folder" if plan.folder else "the dropped file"
    out.append(f"input: {what} ({plan.input_type}) -> {', '.join(plan.input_names)}")
    for sc in plan.sidecars:
        pats = ", ".join(repr(p) for p in sc.match)
        out.append(f"input: the delivery's file matching {pats} ({sc.type}) -> {sc.name}{' if any' * sc.optional}")
    each = {b.artifact for e in plan.entries() if e.for_each for b in e.outputs}
    for n, step in enumerate(plan.steps, 1):
        out.append(f"step {n}: {step.name}  ({len(step.entries)} in parallel)")
        for e in step.entries:
            flags = [f"--{b.param} {_per_file(b.artifact, e, each, plan)}" for b in e.inputs + e.outputs]
            flags += [f"--{k} {v}" for k, v in e.options]
            loop = f"  for each file matching {', '.join(repr(p) for p in e.for_each)}:" if e.for_each else ""
            out.append(f"  {e.module}{loop}  {shown(' '.join(flags))}")
    out.append("artifacts:")
    width = max(len(a.name) + (7 if a.for_each else 0) for a in plan.artifacts)
    for a in plan.artifacts:
        origin = ("the delivery" if plan.folder else "the dropped file") if a.step is None else f"{a.step}/{a.module}"
        kept = ("public" if a.public else "deleted after the run") + (", one per file" if a.for_each else "")
        name = f"<file>/{a.name}" if a.for_each else a.name
        out.append(f"  {shown(name):<{width}}  {a.type:<8} {origin:<28} {kept}")
    return out


def _per_file(artifact: str, e: EntryPlan, each: set[str], plan: JobPlan) -> str:
    """How `chute plan` shows an artifact of a for_each entry: `card/<file>`, `<file>/probe.json`."""
    if not e.for_each:
        return artifact
    if plan.folder and artifact == plan.input_names[0]:
        return f"{artifact}/<file>"
    return f"<file>/{artifact}" if artifact in each else artifact
