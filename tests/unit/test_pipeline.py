"""The step engine in-process (run_steps): real module subprocesses in a real workspace, no daemon.

The modules synchronise with the test through files (tests/pipelines.py), never by sleeping.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from chute import pipeline, staging
from chute.run import EntryStatus, Fault, Outcome

from tests.pipelines import Project, entry, proc_alive

from .conftest import dropped

TEXT = {"input": "text"}


def _run(project: Project, job: str, tmp_path: Path, **overrides) -> Outcome:
    spec = project.spec(job, dropped(tmp_path / "in"), **overrides)
    ws = staging.prepare(spec, spec.input_path, None)
    try:
        return pipeline.run_steps(spec, ws)
    finally:
        project.kill_leftovers()


def _statuses(outcome: Outcome) -> dict[str, list[EntryStatus]]:
    return {step: [r.status for r in records] for step, records in outcome.steps}


@pytest.fixture
def steps(tmp_path: Path) -> Project:
    p = Project(tmp_path / "project")
    p.module("first", 'note("first-ran")\nwrite("output", "{}")\n', inputs=TEXT, outputs={"output": "json"})
    # Runs only after `first`: its input is first's output, and first's note is there.
    p.module("second", 'assert (SYNC / "first-ran").exists()\nwrite("output", "{}")\n', inputs={"input": "json"})
    # Two entries that each wait for the other to have started: they finish only if they run at once.
    p.module(
        "meet",
        'note(ARGS["me"])\nsys.exit(0 if wait_for(ARGS["other"]) else 9)\n',
        inputs=TEXT,
        outputs={},
        options=[{"name": "me", "type": "str"}, {"name": "other", "type": "str"}],
    )
    p.module("fails", 'print("bad input", file=sys.stderr)\nsys.exit(3)\n', inputs=TEXT, outputs={})
    p.module("hangs", 'note(f"hangs-{os.getpid()}", os.getpid())\ntime.sleep(120)\n', inputs=TEXT, outputs={})
    p.module(
        "full",
        'print("OSError: [Errno 28] No space left on device", file=sys.stderr)\nsys.exit(1)\n',
        inputs=TEXT,
        outputs={},
    )
    p.module(
        "flaky",
        'if not (SYNC / "tried").exists():\n    note("tried")\n    sys.exit(1)\nwrite("output", "{}")\n',
        inputs=TEXT,
        retries=1,
    )
    p.module("silent", "pass\n", inputs=TEXT)
    p.module("tamper", 'open(ARGS["input"], "a").write("more")\nwrite("output", "{}")\n', inputs=TEXT)
    return p


def _job(p: Project, name: str, *steps: tuple[str, list[dict]], input_type: str = "text") -> str:
    p.job(name, list(steps), input_type=input_type, input_name="clip.txt")
    return name


def _on_clip(module: str, **kw) -> dict:
    return entry(module, inputs={"input": "clip.txt"}, outputs=kw.pop("outputs", {"output": f"{module}.json"}), **kw)


def test_steps_run_in_order_each_on_the_last_ones_output(steps: Project, tmp_path: Path) -> None:
    job = _job(
        steps,
        "ordered",
        ("a", [_on_clip("first")]),
        ("b", [entry("second", inputs={"input": "first.json"}, outputs={"output": "second.json"})]),
    )
    outcome = _run(steps, job, tmp_path)
    assert outcome.status == "succeeded", outcome.error
    assert _statuses(outcome) == {"a": [EntryStatus.SUCCEEDED], "b": [EntryStatus.SUCCEEDED]}


def test_the_entries_of_a_step_run_at_once(steps: Project, tmp_path: Path) -> None:
    pair = [
        _on_clip("meet", outputs={}, options={"me": "left", "other": "right"}),
        _on_clip("meet", outputs={}, options={"me": "right", "other": "left"}),
    ]
    outcome = _run(steps, _job(steps, "pair", ("both", pair)), tmp_path)
    assert outcome.status == "succeeded", outcome.error
    assert _statuses(outcome) == {"both": [EntryStatus.SUCCEEDED, EntryStatus.SUCCEEDED]}


def test_a_failed_entry_stops_its_step_at_once_and_no_later_step_runs(steps: Project, tmp_path: Path) -> None:
    job = _job(
        steps,
        "failfast",
        ("a", [_on_clip("hangs", outputs={}), _on_clip("fails", outputs={})]),
        ("b", [_on_clip("first")]),
    )
    outcome = _run(steps, job, tmp_path)
    assert outcome.status == "failed" and outcome.fault is None
    assert outcome.error is not None and outcome.error["module"] == "fails"
    assert outcome.error["exit_code"] == 3 and "bad input" in outcome.error["log_tail"]
    assert _statuses(outcome) == {"a": [EntryStatus.CANCELLED, EntryStatus.FAILED]}  # b never started
    assert not (steps.sync / "first-ran").exists()
    assert steps.leftovers() == []  # the hanging entry was stopped, not left behind


def test_an_entry_over_its_timeout_is_stopped_and_fails_the_run(steps: Project, tmp_path: Path) -> None:
    outcome = _run(steps, _job(steps, "slow", ("a", [_on_clip("hangs", outputs={}, timeout=1)])), tmp_path)
    assert outcome.status == "failed"
    assert outcome.error is not None and "timed out after 1 s" in outcome.error["reason"]
    pids = [steps.note(p.name) for p in steps.sync.glob("hangs-*")]
    assert pids and not any(proc_alive(pid) for pid in pids)


def test_a_full_disk_is_the_machines_fault_the_run_is_deferred_not_failed(steps: Project, tmp_path: Path) -> None:
    outcome = _run(steps, _job(steps, "nospace", ("a", [_on_clip("full", outputs={})])), tmp_path)
    assert outcome.status == "deferred" and outcome.fault == Fault.MACHINE
    assert outcome.error is not None and "No space left on device" in outcome.error["reason"]


def test_a_retried_entry_succeeds_on_its_second_attempt(steps: Project, tmp_path: Path) -> None:
    outcome = _run(steps, _job(steps, "retry", ("a", [_on_clip("flaky")])), tmp_path)
    assert outcome.status == "succeeded", outcome.error
    [(_, [record])] = outcome.steps
    assert record.attempts == 2


def test_a_declared_output_that_is_not_written_fails_the_entry(steps: Project, tmp_path: Path) -> None:
    outcome = _run(steps, _job(steps, "nothing", ("a", [_on_clip("silent")])), tmp_path)
    assert outcome.status == "failed"
    assert outcome.error is not None and outcome.error["reason"] == "declared output silent.json was not written"


def test_a_module_that_modifies_the_input_fails_the_run(steps: Project, tmp_path: Path) -> None:
    outcome = _run(steps, _job(steps, "tampers", ("a", [_on_clip("tamper")])), tmp_path)
    assert outcome.status == "failed"
    assert outcome.error is not None and outcome.error["reason"] == "a module modified the run's input file"


def test_an_input_of_the_wrong_type_runs_nothing(steps: Project, tmp_path: Path) -> None:
    steps.module("reads_json", 'note("ran")\nwrite("output", "{}")\n', inputs={"input": "json"})
    job = _job(steps, "wants_json", ("a", [_on_clip("reads_json")]), input_type="json")
    outcome = _run(steps, job, tmp_path)
    assert outcome.status == "failed" and outcome.steps == []
    assert outcome.error is not None and outcome.error["reason"].startswith("clip.txt is not a json")
    assert not (steps.sync / "ran").exists()


class _Stop:
    """A daemon's stop as the step engine sees it: a pipe that turns readable, and the flag."""

    def __init__(self) -> None:
        self.r, self.w = os.pipe()

    def fileno(self) -> int:
        return self.r

    def is_set(self) -> bool:
        return True

    def close(self) -> None:
        os.close(self.r)
        os.close(self.w)


def test_a_daemon_stop_cancels_the_running_entries(steps: Project, tmp_path: Path) -> None:
    stop = _Stop()
    spec = steps.spec(_job(steps, "stopped", ("a", [_on_clip("hangs", outputs={})])), dropped(tmp_path / "in"))
    ws = staging.prepare(spec, spec.input_path, None)
    os.write(stop.w, b"x")  # the stop is already signalled: the entry starts and is stopped at once
    try:
        outcome = pipeline.run_steps(spec, ws, cancel=stop)
    finally:
        stop.close()
    assert outcome.status == "cancelled"
    assert _statuses(outcome) == {"a": [EntryStatus.CANCELLED]}
    assert steps.leftovers() == []
