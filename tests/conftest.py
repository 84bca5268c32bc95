"""Fixtures shared by the whole suite."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests import harness


def pytest_configure(config) -> None:
    """Signals this run inherited as ignored get their defaults back, for this process and every child.

    `make test &` from a script starts us with SIGINT and SIGQUIT ignored, and an ignored signal
    stays ignored across exec: the daemons, submits and modules the tests start would then shrug off
    the SIGINT a test sends them. A user's own shell gives them the defaults; so do we.
    """
    if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)
    for sig in (signal.SIGQUIT, signal.SIGTERM, signal.SIGHUP):
        if signal.getsignal(sig) == signal.SIG_IGN:
            signal.signal(sig, signal.SIG_DFL)


@pytest.fixture(autouse=True)
def daemons_finish_clean() -> Iterator[None]:
    """Every `chute run` a test started is stopped, and fails the test if it left processes or errors behind."""
    harness.STARTED.clear()
    yield
    problems = [problem for daemon in harness.STARTED for problem in daemon.finish()]
    harness.STARTED.clear()
    if problems:
        pytest.fail("\n\n".join(problems), pytrace=False)


def require_tool(tool: str, package: str) -> str:
    """The path of a system command the test needs (looked for in sbin too); see `require_package`."""
    path = shutil.which(tool) or next(
        (p for p in (f"/usr/sbin/{tool}", f"/sbin/{tool}") if os.access(p, os.X_OK)), None
    )
    require_package(path is not None, f"the command {tool!r}", package)
    assert path is not None
    return path


def require_package(found: bool, what: str, package: str) -> None:
    """Fail where we are root and `what` (from Debian `package`) is missing; skip with a sentence elsewhere.

    Root is where `make test` installs tests/system-packages.txt (tests/install-system-packages.sh):
    a package missing there means that install failed, which must not pass as a green run.
    """
    if found:
        return
    sentence = f"this test needs {what} from the Debian package {package!r}, which is not installed"
    if os.geteuid() == 0:
        pytest.fail(f"{sentence}: `make system-packages` should have installed it", pytrace=False)
    pytest.skip(f"{sentence}; `make system-packages` run as root installs it")


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
