"""Everything a daemon runs on, loaded and checked in one pass: config, modules, jobs."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from . import job as jobs_mod
from . import manifest
from .config import Config
from .config_check import check_config, inbox_units
from .errors import DefinitionError, Problem
from .job import JobPlan
from .manifest import Module
from .yamlfile import Document, did_you_mean


@dataclass(frozen=True)
class Catalog:
    config: Config
    config_file: Path
    modules: dict[str, Module]
    jobs: dict[str, JobPlan]


def load_catalog(config_file: Path) -> Catalog:
    """Load the config and every module and job it points at; DefinitionError lists all problems.

    One mistake does not hide another: a bad key or inbox still lets the modules and jobs be checked,
    unless the folders they come from are what is wrong.
    """
    check = check_config(config_file)
    config, doc, problems = check.config, check.doc, list(check.problems)
    if config is None or doc is None or "modules_path" in check.invalid:
        raise DefinitionError(problems)
    keys = [key for key in ("modules_path", "jobs_path") if key not in check.invalid]
    problems += [
        doc.problem((key, i), f"{folder} is not a folder")
        for key in keys
        for i, folder in enumerate(getattr(config, key))
        if not folder.is_dir()
    ]
    modules, module_problems, broken_modules = manifest.discover(config.modules_path)
    problems += module_problems
    if "jobs_path" in check.invalid:
        raise DefinitionError(problems)
    jobs, job_problems, broken = jobs_mod.discover(config.jobs_path, modules, broken_modules)
    problems += job_problems
    problems += _inbox_jobs(doc, config, jobs, broken)
    problems += inbox_units(doc, config, jobs)
    if problems:
        raise DefinitionError(problems)
    return Catalog(config=config, config_file=config_file.resolve(), modules=modules, jobs=jobs)


def _inbox_jobs(doc: Document, config: Config, jobs: dict[str, JobPlan], broken: set[str]) -> list[Problem]:
    problems = []
    for i, inbox in enumerate(config.inboxes):
        # A job whose own file is invalid is reported there, not again here.
        if inbox.job not in jobs and inbox.job not in broken:
            hint = did_you_mean(inbox.job, jobs) or f" (defined: {', '.join(sorted(jobs)) or 'none'})"
            problems.append(doc.problem(("inboxes", i, "job"), f"job {inbox.job!r} is not defined{hint}"))
    return problems
