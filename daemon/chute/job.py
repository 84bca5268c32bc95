"""Job definitions (contract §3): validation, and the artifact wiring that resolves one into its plan (plan.py)."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

from pydantic import Field

from . import packjob
from .errors import DefinitionError, Problem
from .globs import Patterns, patterns
from .manifest import Module, option_type_ok
from .model import ArtifactName, Frozen, Name, ParamName, TypeName, Version, display_path
from .plan import Artifact, Binding, EntryPlan, JobPlan, Sidecar, StepPlan
from .yamlfile import Document, Loc, declared_name, did_you_mean, load, validate


class JobInput(Frozen):
    param_name: ParamName
    type: TypeName
    name: ArtifactName | None = None
    match: str | list[str] | None = None  # a glob over the delivery's files (contract §12)
    optional: bool = False


class WiredInput(Frozen):
    name: ArtifactName
    param_name: ParamName
    type: TypeName


class WiredOutput(Frozen):
    name: ArtifactName
    param_name: ParamName
    type: TypeName
    public: bool = False


class Entry(Frozen):
    module: Name
    input_artifacts: list[WiredInput] = Field(default_factory=list)
    output_artifacts: list[WiredOutput] = Field(default_factory=list)
    options: dict[str, Any] = Field(default_factory=dict)
    timeout: float | None = Field(default=None, gt=0)
    for_each: str | list[str] | None = None  # once per matching file of a folder delivery (contract §12)


class Step(Frozen):
    name: Name
    entries: list[Entry] = Field(min_length=1)


class JobDefinition(Frozen):
    name: Name
    version: Version
    description: str | None = None
    input_artifacts: list[JobInput] = Field(min_length=1)
    steps: list[Step] = Field(min_length=1)


def load_job(file: Path, modules: dict[str, Module], broken_modules: dict[str, str] | None = None) -> JobPlan:
    """Load one job file and wire it against the loaded modules; DefinitionError lists every problem."""
    doc = load(file, display_path(file))
    if not isinstance(doc.data, dict):
        raise DefinitionError([doc.problem((), "a job must be a mapping of keys (is the file empty?)")])
    job, problems = validate(JobDefinition, doc, doc.data)
    if job is None:
        raise DefinitionError(problems)
    wiring = _Wiring(doc, job, modules, broken_modules or {})
    wiring.problems += problems  # unknown keys: the wiring is still checked
    return wiring.resolve()


class _Wiring:
    """Walks the steps in order, tracking which artifacts exist, and collects problems."""

    def __init__(self, doc: Document, job: JobDefinition, modules: dict[str, Module], broken: dict[str, str]):
        self.doc, self.job, self.modules, self.broken = doc, job, modules, broken
        self.problems: list[Problem] = []
        self.artifacts: dict[str, Artifact] = {}
        self.sidecars: list[Sidecar] = []
        self.each: dict[str, Patterns] = {}  # the for_each outputs so far, and their patterns
        main = job.input_artifacts[0]
        self.folder_input = (main.name or "") if main.type == packjob.FOLDER else None

    def fail_all(self, loc: Loc, found: packjob.Found) -> None:
        for where, message in found:
            self.fail(loc + where, message)

    def fail(self, loc: Loc, message: str) -> None:
        self.problems.append(self.doc.problem(loc, message))

    def resolve(self) -> JobPlan:
        input_names = self._bind_inputs()
        steps = []
        seen_steps: set[str] = set()
        for s, step in enumerate(self.job.steps):
            if step.name in seen_steps:
                self.fail(("steps", s, "name"), f"step {step.name!r} is defined twice")
            seen_steps.add(step.name)
            steps.append(self._step(s, step))
        if self.problems:
            raise DefinitionError(self.problems)
        return JobPlan(
            name=self.job.name,
            version=self.job.version,
            sha256=hashlib.sha256(self.doc.text.encode()).hexdigest(),
            source=str(self.doc.path.resolve()),
            input_type=self.job.input_artifacts[0].type,
            input_names=tuple(input_names),
            steps=tuple(steps),
            artifacts=tuple(self.artifacts.values()),
            sidecars=tuple(self.sidecars),
            main_match=patterns(self.job.input_artifacts[0].match),
        )

    def _bind_inputs(self) -> list[str]:
        inputs = self.job.input_artifacts
        types = {i.type for n, i in enumerate(inputs) if n == 0 or i.match is None}
        if len(types) > 1:
            self.fail(
                ("input_artifacts",),
                f"all job inputs are the one dropped file, so they need one type, not {sorted(types)}",
            )
        names: list[str] = []
        for i, inp in enumerate(inputs):
            name = inp.name
            if name is None:
                if len(inputs) > 1:
                    self.fail(("input_artifacts", i, "name"), "needs a name when the job has more than one input")
                    continue
                name = self._seed_input_name()
                if name is None:
                    continue
            if name in self.artifacts:
                self.fail(("input_artifacts", i, "name"), f"artifact {name!r} is produced twice")
                continue
            self.artifacts[name] = Artifact(name, inp.type, None, None, False)
            self.fail_all(("input_artifacts", i), packjob.input_problems(i, inp.type, inp.match, inp.optional))
            if i > 0 and inp.match is not None:
                self.sidecars.append(Sidecar(name, inp.type, patterns(inp.match), inp.optional))
            else:
                names.append(name)
        if self.folder_input == "" and names:
            self.folder_input = names[0]
        return names

    def _seed_input_name(self) -> str | None:
        # SEED.md's job has no input name: the one artifact consumed but never produced is the dropped file.
        produced = {o.name for st in self.job.steps for e in st.entries for o in e.output_artifacts}
        consumed = []
        for st in self.job.steps:
            for e in st.entries:
                for i in e.input_artifacts:
                    if i.name not in produced and i.name not in consumed:
                        consumed.append(i.name)
        if len(consumed) == 1:
            return consumed[0]
        found = f"found {consumed}" if consumed else "found none"
        self.fail(
            ("input_artifacts", 0, "name"),
            f"is omitted, so exactly one artifact must be consumed without being produced; {found}",
        )
        return None

    def _step(self, s: int, step: Step) -> StepPlan:
        produced_here: dict[str, Artifact] = {}
        entries = []
        for e, entry in enumerate(step.entries):
            plan = self._entry(("steps", s, "entries", e), step.name, e, entry, produced_here)
            if plan is not None:
                entries.append(plan)
        self.artifacts.update(produced_here)
        return StepPlan(step.name, tuple(entries))

    def _entry(
        self, loc: Loc, step: str, index: int, entry: Entry, produced_here: dict[str, Artifact]
    ) -> EntryPlan | None:
        module = self.modules.get(entry.module)
        if module is None:
            if entry.module in self.broken:
                why = f" (its manifest {self.broken[entry.module]} is invalid)"
            else:
                known = sorted(self.modules) + sorted(self.broken)
                why = did_you_mean(entry.module, known) or f" (loaded: {', '.join(sorted(self.modules)) or 'none'})"
            self.fail(loc + ("module",), f"module {entry.module!r} is not loaded{why}")
            return None
        inputs = self._wire_inputs(loc, module, entry)
        outputs = self._wire_outputs(loc, step, module, entry, produced_here)
        options = self._options(loc, module, entry)
        for_each = patterns(entry.for_each)
        self.fail_all(loc, packjob.pattern_problems(entry.for_each, "for_each"))
        consumed = [w.name for w in entry.input_artifacts]
        self.fail_all(loc, packjob.for_each_problems(for_each, consumed, self.each, self.folder_input))
        if for_each:
            self.each.update({b.artifact: for_each for b in outputs})
            produced_here.update(
                {b.artifact: _each(produced_here[b.artifact], for_each) for b in outputs if b.artifact in produced_here}
            )
        return EntryPlan(
            step=step,
            index=index,
            module=module.name,
            module_version=module.manifest.version,
            folder=str(module.folder),
            entrypoint=str(module.entrypoint),
            inputs=tuple(inputs),
            outputs=tuple(outputs),
            options=tuple(options),
            timeout=entry.timeout if entry.timeout is not None else module.manifest.timeout,
            retries=module.manifest.retries,
            launcher=module.manifest.launcher,
            for_each=for_each,
        )

    def _wire_inputs(self, loc: Loc, module: Module, entry: Entry) -> list[Binding]:
        bindings = []
        for i, wired in enumerate(entry.input_artifacts):
            where = loc + ("input_artifacts", i)
            decl = module.input(wired.param_name)
            if decl is None:
                hint = did_you_mean(wired.param_name, [d.param_name for d in module.manifest.inputs], "--{}")
                self.fail(where + ("param_name",), f"module {module.name!r} has no input --{wired.param_name}{hint}")
                continue
            if wired.type != decl.type:
                self.fail(
                    where + ("type",),
                    f"is {wired.type!r} but module {module.name!r} takes --{decl.param_name} as {decl.type!r}",
                )
            source = self.artifacts.get(wired.name)
            if source is None:
                self.fail(where + ("name",), f"artifact {wired.name!r} is consumed before any step produces it")
            elif source.type != wired.type and not (entry.for_each and wired.name == self.folder_input):
                # (a for_each entry takes each file of the folder input in turn, as the module's type)
                origin = "the job input" if source.step is None else f"step {source.step!r} ({source.module})"
                self.fail(where + ("type",), f"is {wired.type!r} but {origin} makes {wired.name!r} as {source.type!r}")
            bindings.append(Binding(wired.param_name, wired.name, wired.type))
        self._all_wired(
            loc + ("input_artifacts",),
            module,
            [d.param_name for d in module.manifest.inputs],
            [b.param for b in bindings],
            "input",
        )
        return bindings

    def _wire_outputs(
        self, loc: Loc, step: str, module: Module, entry: Entry, produced_here: dict[str, Artifact]
    ) -> list[Binding]:
        bindings = []
        for i, wired in enumerate(entry.output_artifacts):
            where = loc + ("output_artifacts", i)
            decl = module.output(wired.param_name)
            if decl is None:
                hint = did_you_mean(wired.param_name, [d.param_name for d in module.manifest.outputs], "--{}")
                self.fail(where + ("param_name",), f"module {module.name!r} has no output --{wired.param_name}{hint}")
                continue
            if wired.type != decl.type:
                self.fail(
                    where + ("type",),
                    f"is {wired.type!r} but module {module.name!r} makes --{decl.param_name} as {decl.type!r}",
                )
            if wired.name in self.artifacts or wired.name in produced_here:
                # Still a binding: the param is wired, only to a name already taken.
                self.fail(where + ("name",), f"artifact {wired.name!r} is produced twice")
            else:
                produced_here[wired.name] = Artifact(wired.name, wired.type, step, module.name, wired.public)
            bindings.append(Binding(wired.param_name, wired.name, wired.type, wired.public))
        self._all_wired(
            loc + ("output_artifacts",),
            module,
            [d.param_name for d in module.manifest.outputs],
            [b.param for b in bindings],
            "output",
        )
        return bindings

    def _all_wired(self, loc: Loc, module: Module, declared: list[str], wired: list[str], kind: str) -> None:
        for param in declared:
            count = wired.count(param)
            if count == 0:
                self.fail(loc, f"module {module.name!r} {kind} --{param} is not wired")
            elif count > 1:
                self.fail(loc, f"module {module.name!r} {kind} --{param} is wired {count} times")

    def _options(self, loc: Loc, module: Module, entry: Entry) -> list[tuple[str, str]]:
        for name, value in entry.options.items():
            decl = module.option(name)
            if decl is None:
                known = ", ".join(o.name for o in module.manifest.options) or "none"
                self.fail(loc + ("options", name), f"module {module.name!r} has no option {name!r} (has: {known})")
            elif not option_type_ok(decl.type, value):
                self.fail(loc + ("options", name), f"{value!r} is not of type {decl.type}")
        values = []
        for decl in module.manifest.options:
            value = entry.options.get(decl.name, decl.default)
            if value is not None:
                values.append((decl.name, _option_text(value)))
        return values


def _each(artifact: Artifact, for_each: Patterns) -> Artifact:
    return Artifact(artifact.name, artifact.type, artifact.step, artifact.module, artifact.public, for_each)


def _option_text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def discover(
    paths: list[Path], modules: dict[str, Module], broken_modules: dict[str, str] | None = None
) -> tuple[dict[str, JobPlan], list[Problem], set[str]]:
    """Every job file (`*.yaml`, `*.yml`) in the given folders, wired against `modules`.

    Returns:
        The valid jobs, the problems, and the names of jobs whose files are invalid.
    """
    jobs: dict[str, JobPlan] = {}
    problems: list[Problem] = []
    broken: set[str] = set()
    for base in paths:
        if not base.is_dir():
            continue  # reported against the config's line by the catalog
        for file in sorted(p for p in base.iterdir() if p.suffix in (".yaml", ".yml") and p.is_file()):
            try:
                plan = load_job(file, modules, broken_modules)
            except DefinitionError as exc:
                problems.extend(exc.problems)
                broken.add(declared_name(file, file.stem))  # jobs/<name>.yaml when it cannot say (contract §1)
                continue
            if plan.name in jobs:
                doc = load(file, display_path(file))
                problems.append(
                    doc.problem(
                        ("name",),
                        f"job {plan.name!r} is already defined in {display_path(Path(jobs[plan.name].source))}",
                    )
                )
                continue
            jobs[plan.name] = plan
    return jobs, problems, broken
