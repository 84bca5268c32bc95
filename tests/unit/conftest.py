"""A small project for the in-process tests of the run side: real modules, real folders, no daemon."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from chute import claims, pipeline, staging
from chute.leases import Identity
from chute.run import Outcome, RunSpec

from tests.pipelines import Project, entry


@pytest.fixture
def project(tmp_path: Path) -> Project:
    """modules/echo writes JSON, modules/fails exits 3; jobs/one runs echo, jobs/bad runs fails (on clip.txt)."""
    p = Project(tmp_path / "project")
    text_in = {"input": "text"}
    p.module("echo", 'write("output", json.dumps({"ok": True}))\n', inputs=text_in)
    p.module("fails", 'print("it went wrong", file=sys.stderr)\nsys.exit(3)\n', inputs=text_in)
    for job, module in (("one", "echo"), ("bad", "fails")):
        e = entry(module, inputs={"input": "clip.txt"}, outputs={"output": f"{module}.json"})
        p.job(job, [("only", [e])], input_type="text", input_name="clip.txt")
    return p


def dropped(folder: Path, name: str = "clip.txt", data: bytes = b"a user's text\n") -> Path:
    """A file as a user drops it into `folder` (made if need be)."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / name).write_bytes(data)
    return folder / name


def claimed(project: Project, job: str, inbox: Path, name: str = "clip.txt", **overrides: Any) -> RunSpec:
    """Claim `inbox/name` as a daemon does, and the RunSpec of its run."""
    got = claims.claim(inbox, name, Identity.mine())
    assert got is not None
    run_id, folder = got
    return project.spec(job, folder / name, run_id=run_id, claim=folder, inbox=inbox, **overrides)


def ran(spec: RunSpec) -> tuple[Path, Outcome]:
    """The run's workspace and what its steps came to, run by the step engine itself."""
    ws = staging.prepare(spec, spec.input_path if spec.claim is None else spec.claim / spec.input_name, None)
    return ws, pipeline.run_steps(spec, ws)
