"""Hostile file names as an operator meets them (issue 19, item 6): `chute run` as a subprocess.

A name on a share may hold an escape sequence, a newline, rich markup, or bytes
that are not UTF-8. None may drive the operator's terminal or split a row of
`chute status`; every JSON chute writes must load in a strict UTF-8 reader, and
the exact bytes of the name must still be recoverable from it.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.harness import CHUTE, Daemon, Setup, exact_name, files, ledger_runs, ledger_states, wait_until

PUBLISHED = {
    "escape": "\x1b[31mred.bin",
    "newline": "new\nline.bin",
    "not-utf8": os.fsdecode(b"caf\xe9.bin"),
    "markup": "[bold]big [red]red.bin",
}
# How `chute status` and the console log show each name: one line, every control a visible escape.
SHOWN = {
    "escape": "\\x1b[31mred.bin",
    "newline": "new\\nline.bin",
    "not-utf8": "caf\\xe9.bin",
    "markup": "[bold]big [red]red.bin",
}
# Quarantined (its content makes the job fail): an OSC set-title sequence, a Latin-1 byte, a newline.
FAILING = os.fsdecode(b"\x1b]0;owned\x07 caf\xe9\nfail.bin")
FAILING_SHOWN = "\\x1b]0;owned\\x07 caf\\xe9\\nfail.bin"
# A strict UTF-8 stdout, as under a user's en_US.UTF-8 locale (this container's C.UTF-8 is lenient).
STRICT = {**os.environ, "PYTHONIOENCODING": "utf-8:strict"}


def strict_json(data: bytes) -> Any:
    """`data` parsed as a strict reader (serde_json, Go, a browser) would: valid UTF-8, no lone surrogate."""
    parsed = json.loads(data.decode("utf-8"))  # strict decode: raises on any byte that is not UTF-8
    _no_surrogates(parsed)
    return parsed


def _no_surrogates(value: Any) -> None:
    # Python's json accepts a "\udce9" escape; strict readers reject it or replace it (the name is lost).
    if isinstance(value, str):
        value.encode("utf-8")
    elif isinstance(value, dict):
        for k, v in value.items():
            _no_surrogates(k)
            _no_surrogates(v)
    elif isinstance(value, list):
        for v in value:
            _no_surrogates(v)


def chute(*args: str) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run([str(CHUTE), *args], capture_output=True, env=STRICT, timeout=60)


@pytest.fixture(scope="module")
def ran(tmp_path_factory) -> tuple[Path, Path, Daemon]:
    """One daemon that published PUBLISHED and quarantined FAILING, stopped; its config, root and log."""
    root = tmp_path_factory.mktemp("names")
    setup = Setup(root)
    setup.inbox()
    config = setup.write()
    inbox = root / "in"
    with Daemon(config) as daemon:
        for name in PUBLISHED.values():
            (inbox / name).write_bytes(b"hostile\n" + os.fsencode(name))
        (inbox / FAILING).write_bytes(b"fail\n")
        wait_until(lambda: ledger_states(config) == {"succeeded": len(PUBLISHED), "failed": 1}, 60)
        assert daemon.stop() == 0
    return config, root, daemon


def test_status_shows_each_name_escaped_on_its_own_row(ran):
    config, root, _ = ran
    proc = chute("status", "--config", str(config))

    assert proc.returncode == 0 and proc.stderr == b"", proc.stderr
    out = proc.stdout.decode("utf-8")
    assert "\x1b" not in out and "\x07" not in out  # nothing reaches the terminal as a control
    lines = out.splitlines()
    assert len(lines) == 3 + len(PUBLISHED) + 1, out  # counts, two titles, one row per run
    runs = {run.input_name: run.run_id for run in ledger_runs(config)}
    for key, name in PUBLISHED.items():
        [row] = [line for line in lines if runs[name] in line]
        assert SHOWN[key] in row, row  # rich markup too is printed as typed
    [row] = [line for line in lines if runs[FAILING] in line]
    assert FAILING_SHOWN in row, row


def test_status_json_is_strict_and_keeps_the_exact_names(ran):
    config, root, _ = ran
    proc = chute("status", "--json", "--config", str(config))

    assert proc.returncode == 0, proc.stderr
    status = strict_json(proc.stdout)
    names = {exact_name(r, "input_name") for r in status["recent"]}
    assert names == {*PUBLISHED.values(), FAILING}
    [latin] = [r for r in status["recent"] if exact_name(r, "input_name") == PUBLISHED["not-utf8"]]
    assert latin["input_name"] == "caf\\xe9.bin"  # valid UTF-8 text; the exact bytes are in input_name_b64
    assert exact_name(latin, "result") == str(root / "in-out" / os.fsdecode(b"caf\xe9"))


def test_manifests_are_strict_json_and_keep_the_exact_name(ran):
    config, root, _ = ran
    for key, name in PUBLISHED.items():
        # The result folder is named after the input's own bytes, as the input was.
        folder = root / "in-out" / Path(name).stem
        assert files(folder) == ["manifest.json", "result.bin"], key
        manifest = strict_json((folder / "manifest.json").read_bytes())
        assert manifest["status"] == "succeeded"
        assert exact_name(manifest["input"], "name") == name, key
        assert manifest["input"]["name"] == (name if key != "not-utf8" else "caf\\xe9.bin"), key
    assert ("name_b64" in manifest["input"]) is False  # only a name that is not UTF-8 carries it


def test_report_is_strict_json_and_keeps_the_exact_name(ran):
    config, root, _ = ran
    folder = root / "in-quarantine" / Path(FAILING).stem
    assert sorted(os.listdir(folder)) == sorted([FAILING, "logs", "report.json"])
    assert (folder / FAILING).read_bytes() == b"fail\n"
    report = strict_json((folder / "report.json").read_bytes())
    assert report["status"] == "failed" and report["error"]["step"] == "first"
    assert exact_name(report["input"], "name") == FAILING
    assert report["input"]["name"] == "\x1b]0;owned\x07 caf\\xe9\nfail.bin"  # JSON itself escapes the controls


def test_json_log_lines_are_strict(ran):
    _, _, daemon = ran
    data = daemon.log_path.read_bytes()
    events = [strict_json(line) for line in data.splitlines()]
    files_seen = {ev["file"] for ev in events if ev["event"] == "run.published"}
    assert files_seen == {"\x1b[31mred.bin", "new\nline.bin", "caf\\xe9.bin", "[bold]big [red]red.bin"}


def test_retry_prints_the_name_escaped_and_moves_the_exact_file_back(ran):
    config, root, _ = ran
    [failed] = [run for run in ledger_runs(config) if run.state.value == "failed"]
    proc = chute("retry", failed.run_id, "--config", str(config))

    assert proc.returncode == 0, proc.stderr
    out = proc.stdout.decode("utf-8")
    assert out.count("\n") == 1 and "\x1b" not in out and "\x07" not in out, out
    assert out.startswith(f"{failed.run_id}: ") and out.rstrip("\n").endswith(FAILING_SHOWN), out
    assert (root / "in" / FAILING).read_bytes() == b"fail\n"


def test_an_error_naming_a_file_is_one_escaped_line(tmp_path):
    setup = Setup(tmp_path)
    setup.inbox()
    proc = chute("submit", str(tmp_path / FAILING), "--job", "twostep", "--config", str(setup.write()))

    assert proc.returncode == 2
    err = proc.stderr.decode("utf-8")
    assert err.count("\n") == 1 and "\x1b" not in err and "\x07" not in err, err
    assert FAILING_SHOWN in err
