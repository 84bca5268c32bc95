"""Everything a daemon runs on, loaded and checked in one pass: config, modules, jobs."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from . import job as jobs_mod
from . import manifest
from .config import Config, load_config
from .errors import DefinitionError, Problem
from .job import JobPlan
from .manifest import Module


@dataclass(frozen=True)
class Catalog:
    config: Config
    config_file: Path
    modules: dict[str, Module]
    jobs: dict[str, JobPlan]


def load_catalog(config_file: Path) -> Catalog:
    """Load the config and every module and job it points at; DefinitionError lists all problems."""
    config, doc = load_config(config_file)
    problems = [
        doc.problem((key, i), f"{folder} is not a folder")
        for key in ("modules_path", "jobs_path")
        for i, folder in enumerate(getattr(config, key))
        if not folder.is_dir()
    ]
    modules, module_problems, broken_modules = manifest.discover(config.modules_path)
    problems += module_problems
    jobs, job_problems, broken = jobs_mod.discover(config.jobs_path, modules, broken_modules)
    problems += job_problems
    problems += _inbox_jobs(doc, config, jobs, broken)
    if problems:
        raise DefinitionError(problems)
    return Catalog(config=config, config_file=config_file.resolve(), modules=modules, jobs=jobs)


def _inbox_jobs(doc, config: Config, jobs: dict[str, JobPlan], broken: set[str]) -> list[Problem]:
    problems = []
    for i, inbox in enumerate(config.inboxes):
        # A job whose own file is invalid is reported there, not again here.
        if inbox.job not in jobs and inbox.job not in broken:
            known = ", ".join(sorted(jobs)) or "none"
            problems.append(doc.problem(("inboxes", i, "job"), f"job {inbox.job!r} is not defined (defined: {known})"))
    return problems
