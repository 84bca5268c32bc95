"""The harness's own promises: a daemon that leaves a process or an error behind fails its test."""

from __future__ import annotations

import json
import subprocess

from tests import harness
from tests.harness import Daemon, Setup, log_problems, processes_with


def test_a_process_left_behind_after_a_clean_stop_is_named_and_then_killed(tmp_path):
    setup = Setup(tmp_path)
    setup.inbox()
    with Daemon(setup.write()) as d:
        # Stands in for a module the daemon failed to stop: it carries the daemon's environment marker.
        leak = subprocess.Popen(["sleep", "60"], env=d.env)
        assert d.stop() == 0
        harness.STARTED.remove(d)  # this test reads the problems itself
        [problem] = d.finish(grace=0.5)
    assert f"{leak.pid} sleep 60" in problem and "left behind" in problem
    assert leak.wait(10) == -9 and processes_with(d.marker) == []


def test_a_daemon_error_a_traceback_and_a_line_that_is_not_json_are_each_reported_unless_allowed():
    ok = json.dumps({"event": "daemon.started", "level": "info"})
    error = json.dumps({"event": "daemon.error", "level": "error", "error": "boom"})
    log = "\n".join([ok, "<3>" + error, "Traceback (most recent call last):", '  File "x.py", line 1', ok])

    problems = log_problems("d", log)

    assert len(problems) == 3
    daemon_error, traceback, not_json = problems
    assert daemon_error.startswith("d: daemon.error") and "boom" in daemon_error
    assert traceback.startswith("d: traceback") and "Traceback (most recent call last)" in traceback
    assert not_json.startswith("d: non-json") and 'File "x.py"' in not_json
    assert log_problems("d", log, allow=("daemon.error", "traceback", "non-json")) == []
    assert log_problems("d", "\n".join([ok, "<6>" + ok])) == []
