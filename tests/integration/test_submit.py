"""`chute submit FILE --job NAME` as a user runs it: a subprocess, its exit code, its output, the folders."""

from __future__ import annotations

import fcntl
import json
import os
import pty
import signal
import subprocess
import termios
import threading
from pathlib import Path

import pytest

from tests.harness import exact_name, wait_until
from tests.pipelines import CHUTE, HOSTILE_IDS, HOSTILE_NAMES, entry, proc_alive, read_json, sha256_of

pytestmark = pytest.mark.timeout(60)

COPY = """
import shutil
shutil.copyfile(ARGS["input"], ARGS["output"])
"""

FAILS = """
print("the last words of a failing module", file=sys.stderr)
sys.exit(3)
"""


def lines(data: bytes) -> list[str]:
    """What chute says to the user: its lines without the JSON log events (which go to stderr)."""
    return [line for line in os.fsdecode(data).splitlines() if not line.startswith("{")]


@pytest.fixture
def copy_job(project):
    project.module("copy", COPY, outputs={"output": "video"})
    project.job("copy_job", [("copy", [entry("copy", outputs={"output": "copy.mp4"})])])
    return "copy_job"


def test_success_exits_0_and_prints_the_result_folder(project, clip, copy_job):
    digest = sha256_of(clip)

    proc = project.submit(clip, copy_job)

    assert proc.returncode == 0, proc.stderr
    folder = project.outbox / "clip"
    assert lines(proc.stdout) == [f"published {folder}"]
    assert sha256_of(folder / "copy.mp4") == digest
    manifest = read_json(folder / "manifest.json")
    assert manifest["input"]["name"] == "clip.mp4" and manifest["input"]["sha256"] == digest
    assert clip.exists() and sha256_of(clip) == digest  # read in place, never moved
    assert project.results(project.quarantine) == []
    project.assert_clean()


def test_failure_exits_1_and_quarantines_a_copy_of_the_input(project, clip):
    project.module("fails", FAILS)
    project.job("failing", [("first", [entry("fails")])])
    digest = sha256_of(clip)

    proc = project.submit(clip, "failing")

    assert proc.returncode == 1
    folder = project.quarantine / "clip"
    assert lines(proc.stderr) == ["failed in first / fails: exited with status 3", f"report in {folder}"]
    assert b"Traceback" not in proc.stdout + proc.stderr
    report = read_json(folder / "report.json")
    assert report["status"] == "failed"
    assert report["error"]["log_tail"].endswith("the last words of a failing module")
    assert sha256_of(folder / "clip.mp4") == digest
    assert clip.exists() and sha256_of(clip) == digest
    assert project.results(project.outbox) == []
    project.assert_clean()


def test_input_of_the_wrong_type_fails_before_any_module_runs(project, clip):
    project.module("copy", 'note("ran")\n' + COPY, outputs={"output": "video"})
    project.job("copy_job", [("copy", [entry("copy")])])
    notes = clip.with_name("notes.mp4")
    notes.write_text("minutes of the meeting, not a video\n")

    proc = project.submit(notes, "copy_job")

    assert proc.returncode == 1
    assert lines(proc.stderr)[0].startswith("failed: notes.mp4 is not a video: ")
    assert read_json(project.quarantine / "notes" / "report.json")["steps"] == []
    assert not (project.sync / "ran").exists()
    project.assert_clean()


def test_module_sees_no_service_manager_variables(project, clip):
    project.module(
        "probe_env",
        """
        write("output", json.dumps(dict(os.environ)))
    """,
    )
    project.job("env_job", [("look", [entry("probe_env", outputs={"output": "env.json"})])])
    env = project.submit_env(
        NOTIFY_SOCKET="/run/systemd/notify",
        WATCHDOG_USEC="30000000",
        WATCHDOG_PID="1",
        LISTEN_FDS="2",
        LISTEN_PID="1",
        SOMETHING_ELSE="kept",
    )

    proc = project.submit(clip, "env_job", env=env)

    assert proc.returncode == 0, proc.stderr
    seen = read_json(project.outbox / "clip" / "env.json")
    manifest = read_json(project.outbox / "clip" / "manifest.json")
    assert not {"NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID", "LISTEN_FDS", "LISTEN_PID"} & set(seen)
    assert seen["SOMETHING_ELSE"] == "kept"
    assert seen["CHUTE_RUN_ID"] == manifest["run_id"]
    assert (seen["CHUTE_JOB"], seen["CHUTE_STEP"], seen["CHUTE_MODULE"]) == ("env_job", "look", "probe_env")
    # TMPDIR is inside the run's own workspace: work_dir/<owner>/<run_id>.<attempt>/
    owner, workspace = Path(seen["TMPDIR"]).relative_to(project.work).parts[:2]
    assert owner.startswith("submit-") and workspace.startswith(manifest["run_id"] + ".")
    project.assert_clean()


@pytest.mark.parametrize("name", HOSTILE_NAMES, ids=HOSTILE_IDS)
def test_any_file_name(project, clip, copy_job, name):
    user_file = clip.rename(clip.with_name(name))
    digest = sha256_of(user_file)

    # A strict UTF-8 stdout, as under a user's en_US.UTF-8 locale (this container's C.UTF-8 is lenient).
    proc = project.submit(user_file, copy_job, env=project.submit_env(PYTHONIOENCODING="utf-8:strict"))

    assert proc.returncode == 0, proc.stderr
    folder = project.outbox / name.removesuffix(".mp4")
    assert os.fsdecode(proc.stdout) == f"published {folder}\n"
    assert sha256_of(folder / "copy.mp4") == digest
    assert exact_name(read_json(folder / "manifest.json")["input"], "name") == name
    assert user_file.exists() and sha256_of(user_file) == digest
    assert not list(project.root.parent.rglob("pwned"))
    project.assert_clean()


def test_same_file_twice_gives_two_result_folders(project, clip, copy_job):
    first = project.submit(clip, copy_job)
    manifest = (project.outbox / "clip" / "manifest.json").read_bytes()

    second = project.submit(clip, copy_job)

    assert (first.returncode, second.returncode) == (0, 0)
    assert lines(first.stdout) == [f"published {project.outbox / 'clip'}"]
    assert lines(second.stdout) == [f"published {project.outbox / 'clip-2'}"]
    assert [p.name for p in project.results(project.outbox)] == ["clip", "clip-2"]
    assert (project.outbox / "clip" / "manifest.json").read_bytes() == manifest
    assert read_json(project.outbox / "clip-2" / "manifest.json")["run_id"] != json.loads(manifest)["run_id"]
    project.assert_clean()


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_interrupt_stops_every_module_process_and_removes_the_workspace(project, clip, sig):
    project.module(
        "patient",
        """
        spawn_sleeper("child.pid")
        escape_sleeper("escaped.pid")
        wait_for("child.pid")
        note("patient.pid", os.getpid())
        time.sleep(120)
    """,
    )
    project.job("slow", [("wait", [entry("patient")])])
    digest = sha256_of(clip)
    # Its own session, as a shell runs a foreground job: the signal goes to its whole group.
    submit = subprocess.Popen(
        project.submit_argv(clip, "slow"),
        env=project.submit_env(),
        cwd=project.root,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    try:
        wait_until(lambda: (project.sync / "patient.pid").exists(), timeout=30)
        os.killpg(submit.pid, sig)
        out, err = submit.communicate(timeout=30)
    finally:
        if submit.poll() is None:
            submit.kill()
            submit.communicate()

    assert submit.returncode == 130
    assert lines(err)[-1] == "chute: interrupted"
    assert b"Traceback" not in out + err
    for pid_file in ("patient.pid", "child.pid", "escaped.pid"):
        assert not proc_alive(project.note(pid_file)), pid_file
    assert project.results(project.outbox) == [] and project.results(project.quarantine) == []
    assert clip.exists() and sha256_of(clip) == digest
    project.assert_clean()


def test_outbox_on_another_filesystem(project, clip, copy_job, tmpfs):
    outbox = tmpfs("4m") / "outbox"
    digest = sha256_of(clip)

    proc = project.submit(clip, copy_job, outbox=outbox)

    assert proc.returncode == 0, proc.stderr
    assert lines(proc.stdout) == [f"published {outbox / 'clip'}"]
    assert sha256_of(outbox / "clip" / "copy.mp4") == digest
    [artifact] = read_json(outbox / "clip" / "manifest.json")["artifacts"]
    assert artifact["sha256"] == digest
    assert [p.name for p in outbox.iterdir()] == ["clip"]
    project.assert_clean()


def test_outbox_out_of_space_fails_in_one_line_and_shows_nothing(project, clip, tmpfs):
    outbox = tmpfs("1m") / "outbox"
    project.module(
        "big",
        """
        write("output", os.urandom(3 << 20))
    """,
        outputs={"output": "data"},
    )
    project.job("big_job", [("make", [entry("big", outputs={"output": "big.bin"})])])
    digest = sha256_of(clip)

    proc = project.submit(clip, "big_job", outbox=outbox)

    assert proc.returncode == 1
    [line] = lines(proc.stderr)
    assert "No space left on device" in line
    assert list(outbox.iterdir()) == []  # no result, and no hidden build folder either
    assert project.results(project.quarantine) == []
    assert clip.exists() and sha256_of(clip) == digest
    project.assert_clean()


@pytest.mark.parametrize(
    "args, message",
    [
        (["missing.mp4", "--job", "copy_job"], "is not a file"),
        (["{clip}", "--job", "no_such_job"], "no job named 'no_such_job'"),
    ],
    ids=["missing-file", "unknown-job"],
)
def test_bad_command_line_is_one_line(project, clip, copy_job, args, message):
    argv = [a.format(clip=clip) for a in args]
    proc = subprocess.run(
        [str(CHUTE), "submit", *argv, "--config", str(project.config), "--outbox", str(project.outbox)],
        env=project.submit_env(),
        cwd=project.root,
        capture_output=True,
        timeout=60,
    )

    assert proc.returncode != 0
    [line] = lines(proc.stderr)
    assert message in line
    assert project.results(project.outbox) == [] and project.workspaces() == []


# --- on a terminal: progress bars, and a real Ctrl-C typed at the keyboard ---


class Terminal:
    """`chute submit` on a pseudo-terminal of its own, as a shell runs a foreground job."""

    def __init__(self, argv: list[str], env: dict[str, str], cwd: Path):
        self.master, slave = pty.openpty()
        self.output = bytearray()

        def controlling_terminal():  # the child's stdin is the pty: make it the session's terminal
            fcntl.ioctl(0, termios.TIOCSCTTY, 0)

        self.proc = subprocess.Popen(
            argv,
            env=dict(env, TERM="xterm", COLUMNS="100"),
            cwd=cwd,
            stdin=slave,
            stdout=slave,
            stderr=slave,
            start_new_session=True,
            preexec_fn=controlling_terminal,
        )
        os.close(slave)
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        while True:
            try:
                data = os.read(self.master, 65536)
            except OSError:  # EIO: the terminal's last user is gone
                return
            if not data:
                return
            self.output += data

    def type(self, keys: bytes) -> None:
        os.write(self.master, keys)

    def wait(self, timeout: float = 30) -> int:
        try:
            return self.proc.wait(timeout=timeout)
        finally:
            if self.proc.poll() is None:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
            self.reader.join(timeout=5)
            os.close(self.master)


def test_terminal_shows_progress_and_the_result(project, clip):
    project.module(
        "steady",
        """
        for i in range(1, 5):
            print(f"CHUTE_PROGRESS {i / 4}", flush=True)
        write("output", "{}")
    """,
    )
    project.job("steady_job", [("work", [entry("steady")])])
    term = Terminal(project.submit_argv(clip, "steady_job"), project.submit_env(), project.root)

    assert term.wait() == 0
    text = term.output.decode("utf-8", "replace")
    assert "work / steady" in text and "done" in text
    assert f"published {project.outbox / 'clip'}" in text
    project.assert_clean()


def test_terminal_shows_a_hostile_result_folder_escaped(project, clip, copy_job):
    """On a terminal the folder named after the input is shown escaped (issue 19); to a pipe it stays exact."""
    user_file = clip.rename(clip.with_name(os.fsdecode(b"\x1b]0;owned\x07caf\xe9.mp4")))
    term = Terminal(project.submit_argv(user_file, copy_job), project.submit_env(), project.root)

    assert term.wait() == 0
    text = term.output.decode("utf-8")  # strict: the Latin-1 byte did not reach the terminal raw
    assert "\x07" not in text and "\x1b]" not in text  # rich's own colour codes are CSI, never OSC
    assert f"published {project.outbox}/\\x1b]0;owned\\x07caf\\xe9" in text
    assert (project.outbox / user_file.stem / "copy.mp4").exists()  # the folder itself keeps the exact bytes


def test_ctrl_c_on_the_terminal_stops_every_module_process(project, clip):
    project.module(
        "patient",
        """
        spawn_sleeper("child.pid")
        escape_sleeper("escaped.pid")
        wait_for("child.pid")
        note("patient.pid", os.getpid())
        time.sleep(120)
    """,
    )
    project.job("slow", [("wait", [entry("patient")])])
    term = Terminal(project.submit_argv(clip, "slow"), project.submit_env(), project.root)
    wait_until(lambda: (project.sync / "patient.pid").exists(), timeout=30)

    term.type(b"\x03")  # the terminal's INTR character: SIGINT to its foreground process group

    assert term.wait() == 130
    assert "interrupted" in term.output.decode("utf-8", "replace")
    for pid_file in ("patient.pid", "child.pid", "escaped.pid"):
        assert not proc_alive(project.note(pid_file)), pid_file
    assert project.results(project.outbox) == [] and project.results(project.quarantine) == []
    project.assert_clean()


def test_a_child_that_clears_its_environment_and_leaves_the_session_does_not_outlive_the_run(project, clip):
    """No marker to find it by: chute is the subreaper of its modules, and kills every orphan at the run's end."""
    project.module(
        "sneaky",
        """
        child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"], env={},
                                 start_new_session=True, stdin=subprocess.DEVNULL)
        note("hidden.pid", child.pid)
        write("output", "{}")
    """,
    )
    project.job("sneaky_job", [("go", [entry("sneaky")])])

    proc = project.submit(clip, "sneaky_job")

    assert proc.returncode == 0, proc.stderr
    assert not proc_alive(project.note("hidden.pid"))  # killed (and reaped) before chute submit returned
