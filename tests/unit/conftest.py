"""A small project for the in-process tests of the delivery side: one module, one job, real folders."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.pipelines import Project, entry

WRITES_JSON = 'write("output", json.dumps({"ok": True}))\n'


@pytest.fixture
def project(tmp_path: Path) -> Project:
    """modules/echo writes its output as JSON; jobs/one runs it once on a text file named clip.txt."""
    p = Project(tmp_path / "project")
    p.module("echo", WRITES_JSON, inputs={"input": "text"}, outputs={"output": "json"})
    p.job(
        "one",
        [("only", [entry("echo", inputs={"input": "clip.txt"}, outputs={"output": "echo.json"})])],
        input_type="text",
        input_name="clip.txt",
    )
    return p
