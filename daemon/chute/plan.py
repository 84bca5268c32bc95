"""A job's resolved plan (contract §3): plain, frozen, picklable values handed to the runner."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


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

    @property
    def label(self) -> str:
        """A name for this entry that is unique in its job: `step1.0.example_module`."""
        return f"{self.step}.{self.index}.{self.module}"

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
    name: str
    type: str
    step: str | None  # None: bound to the dropped file
    module: str | None
    public: bool


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

    @property
    def public(self) -> tuple[Artifact, ...]:
        return tuple(a for a in self.artifacts if a.public)

    def entries(self) -> list[EntryPlan]:
        return [e for s in self.steps for e in s.entries]
