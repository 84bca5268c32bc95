"""Fixtures shared by the whole suite."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest


# --- runner and submit tests (tests/integration/test_runner.py, test_submit.py) ---


@pytest.fixture(scope="session")
def clip_template(tmp_path_factory) -> Path:
    """A tiny but real H.264 + AAC clip, made once per session."""
    from tests.media import make_clip

    return make_clip(tmp_path_factory.mktemp("media") / "clip.mp4", seconds=0.4, width=64, height=48)


@pytest.fixture
def clip(tmp_path: Path, clip_template: Path) -> Path:
    """A fresh copy of the session's clip, as a user's file in tmp_path/drop/."""
    drop = tmp_path / "drop"
    drop.mkdir(exist_ok=True)
    return Path(shutil.copy2(clip_template, drop / "clip.mp4"))


@pytest.fixture
def project(tmp_path: Path) -> Iterator:
    """A module/job/config tree in tmp_path (see tests/pipelines.py); no module process outlives the test."""
    from tests.pipelines import Project

    proj = Project(tmp_path / "project")
    yield proj
    leftovers = proj.kill_leftovers()
    assert not leftovers, f"module processes outlived the test: {leftovers}"


@pytest.fixture
def tmpfs(tmp_path: Path) -> Iterator[Callable[[str], Path]]:
    """Mount a small tmpfs (another filesystem, with a size limit): `tmpfs("4m")` returns its folder."""
    mounted: list[Path] = []

    def mount(size: str) -> Path:
        where = tmp_path / f"tmpfs-{len(mounted)}"
        where.mkdir()
        proc = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)], capture_output=True, text=True
        )
        if proc.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs here (needs root): {proc.stderr.strip() or proc.returncode}")
        mounted.append(where)
        return where

    yield mount
    for where in reversed(mounted):
        if subprocess.run(["umount", str(where)], capture_output=True).returncode != 0:
            subprocess.run(["umount", "-l", str(where)], capture_output=True)
