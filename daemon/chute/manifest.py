"""Module manifests (contract §2): loading, validating, and discovering module folders."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, model_validator

from .errors import DefinitionError, Problem
from .model import Frozen, Name, ParamName, TypeName, Version, display_path
from .yamlfile import Document, declared_name, load, validate

MANIFEST = "manifest.yaml"
OPTION_TYPES: dict[str, tuple[type, ...]] = {"int": (int,), "float": (int, float), "str": (str,), "bool": (bool,)}


def option_type_ok(kind: str, value: Any) -> bool:
    """Whether `value` is of the option type `kind` (a bool is not an int)."""
    if isinstance(value, bool) and kind != "bool":
        return False
    return isinstance(value, OPTION_TYPES[kind])


class ArtifactDecl(Frozen):
    param_name: ParamName
    type: TypeName


class OptionDecl(Frozen):
    name: ParamName
    type: Literal["int", "float", "str", "bool"]
    default: Any = None
    description: str | None = None

    @model_validator(mode="after")
    def _default_has_type(self) -> OptionDecl:
        if self.default is not None and not option_type_ok(self.type, self.default):
            raise ValueError(f"default {self.default!r} is not of type {self.type}")
        return self


class ModuleManifest(Frozen):
    name: Name
    description: str = ""
    entrypoint: str
    inputs: list[ArtifactDecl] = Field(default_factory=list)
    outputs: list[ArtifactDecl] = Field(default_factory=list)
    version: Version | None = None
    timeout: float | None = Field(default=None, gt=0)
    retries: int = Field(default=0, ge=0, le=10)
    options: list[OptionDecl] = Field(default_factory=list)
    launcher: Literal["warm", "fresh"] = "warm"  # fresh: always a new interpreter (contract §2)

    @model_validator(mode="after")
    def _flags_unique(self) -> ModuleManifest:
        seen: set[str] = set()
        for flag in [a.param_name for a in self.inputs + self.outputs] + [o.name for o in self.options]:
            if flag in seen:
                raise ValueError(f"--{flag} is declared twice (inputs, outputs and options share one command line)")
            seen.add(flag)
        return self


@dataclass(frozen=True)
class Module:
    """A loaded module: its manifest and where it lives."""

    manifest: ModuleManifest
    folder: Path
    entrypoint: Path
    manifest_file: Path

    @property
    def name(self) -> str:
        return self.manifest.name

    def input(self, param: str) -> ArtifactDecl | None:
        return next((a for a in self.manifest.inputs if a.param_name == param), None)

    def output(self, param: str) -> ArtifactDecl | None:
        return next((a for a in self.manifest.outputs if a.param_name == param), None)

    def option(self, name: str) -> OptionDecl | None:
        return next((o for o in self.manifest.options if o.name == name), None)


def load_module(folder: Path) -> Module:
    """Load and check one module folder; raises DefinitionError with every problem."""
    file = folder / MANIFEST
    doc = load(file, display_path(file))
    if not isinstance(doc.data, dict):
        raise DefinitionError([doc.problem((), "a module manifest must be a mapping of keys (is the file empty?)")])
    manifest, problems = validate(ModuleManifest, doc, doc.data)
    if manifest is None:
        raise DefinitionError(problems)
    try:
        entrypoint = _entrypoint(doc, folder, manifest.entrypoint)
    except DefinitionError as exc:
        raise DefinitionError(problems + exc.problems) from None
    if problems:
        raise DefinitionError(problems)
    return Module(manifest=manifest, folder=folder.resolve(), entrypoint=entrypoint, manifest_file=file.resolve())


def _entrypoint(doc: Document, folder: Path, entry: str) -> Path:
    root = folder.resolve()
    # resolve() follows symlinks, so a link that points out of the folder is caught too.
    target = (root / entry).resolve()
    if Path(entry).is_absolute() or not target.is_relative_to(root):
        raise DefinitionError([doc.problem(("entrypoint",), f"{entry!r} is outside the module folder")])
    if not target.is_file():
        raise DefinitionError([doc.problem(("entrypoint",), f"{entry!r} does not exist in {display_path(root)}")])
    return target


def discover(paths: list[Path]) -> tuple[dict[str, Module], list[Problem], dict[str, str]]:
    """Every module under the given folders (direct subfolders with a manifest.yaml).

    Returns:
        The valid modules, the problems, and for each invalid module its name and manifest.
    """
    modules: dict[str, Module] = {}
    problems: list[Problem] = []
    broken: dict[str, str] = {}
    for base in paths:
        if not base.is_dir():
            continue  # reported against the config's line by the catalog
        for folder in sorted(p for p in base.iterdir() if (p / MANIFEST).is_file()):
            try:
                module = load_module(folder)
            except DefinitionError as exc:
                problems.extend(exc.problems)
                broken[declared_name(folder / MANIFEST, folder.name)] = display_path(folder / MANIFEST)
                continue
            if module.name in modules:
                other = display_path(modules[module.name].manifest_file)
                doc = load(folder / MANIFEST, display_path(folder / MANIFEST))
                problems.append(doc.problem(("name",), f"module {module.name!r} is already defined in {other}"))
                continue
            modules[module.name] = module
    return modules, problems, broken
