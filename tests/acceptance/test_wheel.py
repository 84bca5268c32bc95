"""chute installed from its own wheel, as a new user would: no source tree anywhere near.

The wheel is built from a copy of the source tree (so the build leaves nothing in
the checkout), installed into a fresh virtual environment under tmp_path, and run
from a folder outside the checkout. It needs the package index (or pip's cache),
as `make test` does.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import urllib.request
import zipfile
from pathlib import Path

import pytest

from tests.harness import wait_until
from tests.media import make_clip

REPO = Path(__file__).resolve().parents[2]
SKIP = shutil.ignore_patterns(".git", ".venv", "var", "build", "dist", "__pycache__", "*.egg-info", ".pytest_cache")

pytestmark = pytest.mark.slow


def _run(argv: list, cwd: Path, timeout: float = 900) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONPATH", "NOTIFY_SOCKET")}
    return subprocess.run([str(a) for a in argv], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


def _ok(proc: subprocess.CompletedProcess) -> subprocess.CompletedProcess:
    assert proc.returncode == 0, f"{proc.args} exited {proc.returncode}:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """chute's wheel, built by `python -m build` (isolated: build-system.requires is what it gets)."""
    root = tmp_path_factory.mktemp("wheel")
    src = root / "src"
    shutil.copytree(REPO, src, ignore=SKIP, symlinks=True)
    _ok(_run([sys.executable, "-m", "build", "--wheel", "--outdir", root / "dist", src], cwd=root))
    (found,) = (root / "dist").glob("chute-*.whl")
    return found


@pytest.fixture(scope="module")
def venv(tmp_path_factory, wheel) -> Path:
    """A fresh virtual environment with chute installed from the wheel, without the media extra."""
    env = tmp_path_factory.mktemp("venv") / "venv"
    _ok(_run([sys.executable, "-m", "venv", env], cwd=env.parent))
    _ok(_run([env / "bin" / "pip", "install", "--quiet", wheel], cwd=env.parent))
    return env


def test_the_wheel_carries_the_bundled_modules_jobs_and_example_config(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    bundled = {n.removeprefix("chute/bundled/") for n in names if n.startswith("chute/bundled/")}
    assert "config.example.yaml" in bundled
    # chute.bundled is mapped onto the top of the tree: nothing else of it may slip in (a conftest.py...).
    assert {n.split("/")[0] for n in bundled} == {"config.example.yaml", "modules", "jobs"}
    for module in sorted(p.parent for p in (REPO / "modules").glob("*/manifest.yaml")):
        for f in module.iterdir():
            if f.is_file():
                assert f"modules/{module.name}/{f.name}" in bundled
    for job in (REPO / "jobs").glob("*.yaml"):
        assert f"jobs/{job.name}" in bundled
    # `chute web`'s package data: it serves its page from the wheel, air-gapped (nothing fetched at run time).
    web = REPO / "daemon" / "chute" / "web"
    for folder in ("templates", "static"):
        for f in (web / folder).iterdir():
            assert f"chute/web/{folder}/{f.name}" in names
    assert {"chute/web/static/htmx.min.js", "chute/web/static/htmx-LICENSE.txt", "chute/web/openapi.json"} <= names
    # Never a top-level `daemon` package (python-daemon's import name), never compiled leftovers.
    assert not any(n.startswith("daemon/") for n in names)
    assert not any("__pycache__" in n or n.endswith(".pyc") for n in names)
    metadata = zipfile.ZipFile(wheel).read(next(n for n in names if n.endswith(".dist-info/METADATA"))).decode()
    assert "License-Expression: MIT" in metadata
    assert "Provides-Extra: media" in metadata


def test_installed_from_the_wheel_chute_checks_and_runs_the_embedded_default(venv, wheel, tmp_path):
    chute = venv / "bin" / "chute"
    site = Path(
        _ok(
            _run([venv / "bin" / "python", "-c", "import chute.config as c; print(c.EMBEDDED_DEFAULT)"], cwd=tmp_path)
        ).stdout.strip()
    )
    assert site.is_relative_to(venv) and not site.is_relative_to(REPO)

    # Without the media extra: the definitions load; a bundled module says what is missing, in one line.
    check = _ok(_run([chute, "check"], cwd=tmp_path))
    assert "(the embedded default)" in check.stdout
    assert "modules  7: example_module, loudness, probe, proxy, scenes, thumbnails, waveform" in check.stdout
    assert "jobs     3: example_job, media_ingest, proxy" in check.stdout
    assert f"{tmp_path}/var/inbox/example -> example_job -> {tmp_path}/var/outbox/example" in check.stdout
    clip = make_clip(tmp_path / "clip.mp4")
    failed = _run([chute, "submit", clip, "--job", "example_job"], cwd=tmp_path)
    assert failed.returncode == 1, failed.stderr
    report = json.loads((tmp_path / "var" / "quarantine" / "example" / "clip" / "report.json").read_text())
    tail = report["error"]["log_tail"].strip()
    assert tail.count("\n") == 0 and "pip install 'chute[media]'" in tail, tail

    # With it: the seed job and the media_ingest job run on the bundled modules.
    _ok(_run([venv / "bin" / "pip", "install", "--quiet", f"{wheel}[media]"], cwd=tmp_path))
    for job, result in (("example_job", "audio.wav"), ("media_ingest", "proxy.mp4")):
        done = _ok(_run([chute, "submit", clip, "--job", job, "--outbox", tmp_path / job], cwd=tmp_path))
        folder = Path(done.stdout.strip().removeprefix("published "))
        assert folder.parent == tmp_path / job and (folder / result).stat().st_size > 0
        assert json.loads((folder / "manifest.json").read_text())["status"] == "succeeded"
    # `chute init`: a config of the user's own that reaches the bundled modules and jobs in site-packages.
    _ok(_run([chute, "init", tmp_path / "site"], cwd=tmp_path))
    own = _ok(_run([chute, "check", "--config", tmp_path / "site" / "config.yaml"], cwd=tmp_path / "site"))
    assert "modules  7: example_module, loudness, probe, proxy, scenes, thumbnails, waveform" in own.stdout
    assert "jobs     3: example_job, media_ingest, proxy" in own.stdout and own.stdout.endswith("ok\n")
    assert str(site.parent / "modules") in (tmp_path / "site" / "config.yaml").read_text()
    schema = json.loads(_ok(_run([chute, "schema"], cwd=tmp_path)).stdout)
    assert "notify" in schema["properties"] and "metrics" in schema["properties"]
    # `chute web` from the wheel: its templates and vendored htmx are served from site-packages.
    _web_serves_its_page(chute, tmp_path / "site" / "config.yaml", tmp_path)


def _web_serves_its_page(chute: Path, config: Path, cwd: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONPATH", "NOTIFY_SOCKET")}
    log = cwd / "web.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [str(chute), "web", "--config", str(config), "--listen", "127.0.0.1:0"], cwd=cwd, env=env, stdout=out
        )
    try:
        started = wait_until(lambda: '"web.started"' in log.read_text() or proc.poll() is not None, 60)
        assert started and proc.poll() is None, log.read_text()
        port = json.loads(next(li for li in log.read_text().splitlines() if '"web.started"' in li))["listen"]
        for path, needle in (("/", b'hx-get="/fragments/overview"'), ("/static/htmx.min.js", b"htmx")):
            with urllib.request.urlopen(f"http://{port}{path}", timeout=30) as reply:
                assert reply.status == 200 and needle in reply.read()
    finally:
        proc.terminate()
        assert proc.wait(30) == 0, log.read_text()
