"""One run end to end through `chute.runner.execute`: real module processes, real folders.

Every module here is a tiny Python script written by the test (tests/pipelines.py);
results are read back from the outbox and the quarantine as a user would.
"""

from __future__ import annotations

import os
import re
import subprocess
import threading
from pathlib import Path

import pytest
from chute.launcher import Launcher
from chute.run import Fault, RunStatus
from chute.runner import execute

from tests.harness import exact_name, wait_until
from tests.media import truncate
from tests.pipelines import HOSTILE_IDS, HOSTILE_NAMES, entry, proc_alive, read_json, sha256_of

pytestmark = pytest.mark.timeout(60)


class CountingLauncher(Launcher):
    """The real warm launcher, counting the modules it forked (so a [warm] test can prove it ran warm)."""

    spawned = 0

    def spawn(self, *args, **kwargs) -> int:
        pid = super().spawn(*args, **kwargs)
        self.spawned += 1
        return pid


@pytest.fixture(params=["fresh", "warm"], autouse=True)
def launch(request, project):
    """Every test runs twice: modules as fresh interpreters, and forked from the warm launcher."""
    if request.param == "warm":
        project.launcher = CountingLauncher(environ=project.environ())
    yield request.param
    if project.launcher is not None:
        spawned = project.launcher.spawned
        project.launcher.close()
        assert spawned > 0, "this [warm] test started no module through the launcher: it only repeated [fresh]"


@pytest.fixture
def no_module(launch, project) -> None:
    """For a test in which no module runs: its [warm] variant would only repeat [fresh], so it skips."""
    if launch == "warm":
        project.launcher.close()
        project.launcher = None
        pytest.skip("no module runs in this test, so there is nothing to start warm: its [fresh] variant covers it")


TIMESTAMP = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")

COPY = """
import shutil
shutil.copyfile(ARGS["input"], ARGS["output"])
"""

DESCRIBE = """
import hashlib
data = Path(ARGS["input"]).read_bytes()
write("output", json.dumps({"size": len(data), "sha256": hashlib.sha256(data).hexdigest()}))
"""

SUMMARIZE = """
facts = json.loads(Path(ARGS["input"]).read_text())
write("output", f"{facts['size']} bytes, sha256 {facts['sha256']}\\n")
"""

FAILS = """
print("working on it")
print("first complaint", file=sys.stderr)
print("the last words of a failing module", file=sys.stderr, flush=True)
sys.exit(3)
"""

SLEEPS = """
note(f"{os.environ['CHUTE_MODULE']}.pid", os.getpid())
time.sleep(120)
"""


def entries_of(doc: dict) -> dict[str, dict]:
    return {e["module"]: e for step in doc["steps"] for e in step["entries"]}


def assert_quarantined(project, result, clip: Path, digest: str) -> dict:
    """The run failed: one quarantine folder with the input and report.json, nothing in the outbox."""
    assert result.status == "failed"
    assert project.results(project.outbox) == []
    [folder] = project.results(project.quarantine)
    assert Path(result.result_dir) == folder
    assert sha256_of(folder / clip.name) == digest
    report = read_json(folder / "report.json")
    assert report["status"] == "failed"
    assert report["run_id"] == result.run_id
    assert report["artifacts"] == []
    assert report["error"] == result.error
    assert clip.exists() and sha256_of(clip) == digest  # the library run read the user's file in place
    project.assert_clean()
    return report


# --- success ---


def test_two_steps_publish_only_public_artifacts_with_a_true_manifest(project, clip):
    project.module("copy", COPY, outputs={"output": "video"})
    project.module("describe", DESCRIBE)
    project.module("summarize", SUMMARIZE, inputs={"input": "json"}, outputs={"output": "text"})
    job_file = project.job(
        "two_steps",
        [
            (
                "first",
                [
                    entry("copy", outputs={"output": "copy.mp4"}),
                    entry("describe", outputs={"output": "facts.json"}, private=("facts.json",)),
                ],
            ),
            ("second", [entry("summarize", inputs={"input": "facts.json"}, outputs={"output": "summary.txt"})]),
        ],
    )
    digest = sha256_of(clip)

    result = project.execute("two_steps", clip)

    assert result.status == "succeeded", result.error
    folder = project.outbox / "clip"
    assert Path(result.result_dir) == folder
    assert project.results(project.outbox) == [folder]
    assert sorted(p.name for p in folder.iterdir()) == ["copy.mp4", "manifest.json", "summary.txt"]
    assert (folder / "summary.txt").read_text() == f"{clip.stat().st_size} bytes, sha256 {digest}\n"
    assert sha256_of(folder / "copy.mp4") == digest

    m = read_json(folder / "manifest.json")
    assert m["schema"] == "chute.manifest/1"
    assert m["run_id"] == result.run_id
    assert m["status"] == "succeeded"
    assert m["job"] == {"name": "two_steps", "version": "1.0", "sha256": sha256_of(job_file)}
    assert m["input"] == {"name": "clip.mp4", "size": clip.stat().st_size, "sha256": digest, "inbox": None}
    assert m["host"] == "test-host"
    assert TIMESTAMP.match(m["started_at"]) and TIMESTAMP.match(m["finished_at"])
    assert m["started_at"] <= m["finished_at"]
    assert m["error"] is None
    assert [s["name"] for s in m["steps"]] == ["first", "second"]
    assert [e["module"] for s in m["steps"] for e in s["entries"]] == ["copy", "describe", "summarize"]
    for e in entries_of(m).values():
        assert (e["module_version"], e["status"], e["exit_code"], e["attempts"]) == ("1.0", "succeeded", 0, 1)
        assert isinstance(e["duration_s"], float) and e["duration_s"] >= 0
    # The run page's timeline: each entry's start, from the run's; the second step starts after the first ended.
    first, second = entries_of(m)["copy"], entries_of(m)["summarize"]
    assert 0 <= first["started_s"] <= entries_of(m)["describe"]["started_s"]
    assert second["started_s"] >= first["started_s"] + first["duration_s"]
    assert sorted(a["name"] for a in m["artifacts"]) == ["copy.mp4", "summary.txt"]
    for a in m["artifacts"]:
        assert a["size"] == (folder / a["name"]).stat().st_size
        assert a["sha256"] == sha256_of(folder / a["name"])
    origin = {a["name"]: (a["type"], a["step"], a["module"]) for a in m["artifacts"]}
    assert origin == {"copy.mp4": ("video", "first", "copy"), "summary.txt": ("text", "second", "summarize")}
    assert sha256_of(clip) == digest
    project.assert_clean()


def test_entries_of_a_step_run_at_the_same_time(project, clip):
    # Each entry waits (up to 10 s) until both have started: run one after the other,
    # the first would give up waiting and the intervals would not overlap.
    project.module(
        "meet",
        """
        name = Path(ARGS["output"]).name
        start = time.time()
        note(f"{name}.started")
        deadline = time.monotonic() + 10
        while len(list(SYNC.glob("*.started"))) < 2 and time.monotonic() < deadline:
            time.sleep(0.01)
        write("output", json.dumps({"start": start, "end": time.time()}))
    """,
    )
    project.job(
        "parallel",
        [("only", [entry("meet", outputs={"output": "a.json"}), entry("meet", outputs={"output": "b.json"})])],
    )

    result = project.execute("parallel", clip)

    assert result.status == "succeeded", result.error
    a, b = (read_json(project.outbox / "clip" / n) for n in ("a.json", "b.json"))
    assert max(a["start"], b["start"]) < min(a["end"], b["end"])
    project.assert_clean()


def test_module_gets_its_environment_and_progress_is_reported(project, clip):
    project.module(
        "probe_env",
        """
        import tempfile
        print("CHUTE_PROGRESS 0.25", flush=True)
        print("CHUTE_PROGRESS nonsense", flush=True)
        print("CHUTE_PROGRESS 0.5", flush=True)
        with tempfile.NamedTemporaryFile(delete=False) as f:
            scratch = f.name
        write("output", json.dumps({"env": dict(os.environ), "cwd": os.getcwd(), "scratch": scratch}))
    """,
    )
    project.job("env_job", [("look", [entry("probe_env", outputs={"output": "env.json"})])])
    events = []

    result = project.execute("env_job", clip, emit=lambda event, **kw: events.append((event, kw)))

    assert result.status == "succeeded", result.error
    seen = read_json(project.outbox / "clip" / "env.json")
    env = seen["env"]
    assert env["CHUTE_RUN_ID"] == result.run_id
    assert (env["CHUTE_JOB"], env["CHUTE_STEP"], env["CHUTE_MODULE"]) == ("env_job", "look", "probe_env")
    # TMPDIR is inside the run's own workspace: work_dir/<owner>/<run_id>.<attempt>/
    workspace = Path(env["TMPDIR"]).relative_to(project.work / "test-owner").parts[0]
    assert workspace.startswith(result.run_id + ".")
    assert Path(seen["scratch"]).is_relative_to(env["TMPDIR"])
    assert seen["cwd"] == str(project.modules / "probe_env")
    progress = [kw["progress"] for event, kw in events if event == "entry.progress"]
    assert progress == [0.25, 0.5]
    project.assert_clean()


def test_progress_lines_are_not_kept_in_the_log(project, clip):
    project.module(
        "chatty",
        """
        print("CHUTE_PROGRESS 0.5", flush=True)
        print("an ordinary line on stdout", flush=True)
        print("CHUTE_PROGRESS 1", flush=True)
        print("and one on stderr", file=sys.stderr)
        sys.exit(1)
    """,
    )
    project.job("chatty_job", [("talk", [entry("chatty")])])

    result = project.execute("chatty_job", clip)

    assert result.status == "failed"
    [log] = (Path(result.result_dir) / "logs").iterdir()
    text = log.read_text()
    assert "an ordinary line on stdout" in text and "and one on stderr" in text
    assert "CHUTE_PROGRESS" not in text
    project.assert_clean()


@pytest.mark.parametrize("name", HOSTILE_NAMES, ids=HOSTILE_IDS)
def test_any_file_name_runs_and_names_its_result(project, clip, name):
    project.module("copy", COPY, outputs={"output": "video"})
    project.job("copy_job", [("copy", [entry("copy", outputs={"output": "copy.mp4"})])])
    user_file = clip.rename(clip.with_name(name))
    digest = sha256_of(user_file)

    result = project.execute("copy_job", user_file)

    assert result.status == "succeeded", result.error
    folder = project.outbox / name.removesuffix(".mp4")
    assert Path(result.result_dir) == folder
    assert sha256_of(folder / "copy.mp4") == digest
    assert exact_name(read_json(folder / "manifest.json")["input"], "name") == name
    assert user_file.exists() and sha256_of(user_file) == digest
    assert not list(project.root.parent.rglob("pwned")) and not Path("pwned").exists()
    project.assert_clean()


def test_two_runs_of_one_file_never_replace_each_other(project, clip):
    project.module("describe", DESCRIBE)
    project.job("describe_job", [("look", [entry("describe", outputs={"output": "facts.json"})])])
    first = project.execute("describe_job", clip)
    before = (project.outbox / "clip" / "manifest.json").read_bytes()

    # Two more at once: they race for the next free name. (Each with a launcher of its own: like a pool
    # worker, a launcher serves one run at a time.)
    results = []

    def alone():
        own = Launcher(environ=project.environ()) if project.launcher is not None else None
        try:
            results.append(execute(project.spec("describe_job", clip), modules=own))
        finally:
            if own is not None:
                own.close()

    threads = [threading.Thread(target=alone) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()

    assert [r.status for r in [first, *results]] == ["succeeded"] * 3
    assert Path(first.result_dir) == project.outbox / "clip"
    assert sorted(Path(r.result_dir).name for r in results) == ["clip-2", "clip-3"]
    assert [p.name for p in project.results(project.outbox)] == ["clip", "clip-2", "clip-3"]
    assert (project.outbox / "clip" / "manifest.json").read_bytes() == before
    run_ids = {read_json(project.outbox / n / "manifest.json")["run_id"] for n in ("clip", "clip-2", "clip-3")}
    assert run_ids == {first.run_id, *(r.run_id for r in results)}
    project.assert_clean()


@pytest.mark.parametrize(
    "name",
    ["a" * 255, "b" * 251 + ".mp4", "日本語" * 28 + "日"],
    ids=["255-bytes", "255-bytes-with-extension", "255-bytes-utf8"],
)
def test_longest_names_still_get_a_second_result_folder(project, clip, name):
    project.module("describe", DESCRIBE)
    project.job("describe_job", [("look", [entry("describe", outputs={"output": "facts.json"})])])
    user_file = clip.rename(clip.with_name(name))

    results = [project.execute("describe_job", user_file) for _ in range(2)]

    assert [r.status for r in results] == ["succeeded", "succeeded"], results[-1].error
    first, second = (Path(r.result_dir) for r in results)
    assert first.name == name.removesuffix(".mp4")
    assert second.name.endswith("-2") and len(os.fsencode(second.name)) <= 255
    assert second.name[:-2] == first.name[: len(second.name) - 2]
    project.assert_clean()


# --- failures go to the quarantine ---


def test_failing_entry_quarantines_the_input_with_report_and_logs(project, clip):
    project.module("fails", FAILS)
    project.module("describe", DESCRIBE)
    project.job(
        "failing", [("first", [entry("fails")]), ("second", [entry("describe", outputs={"output": "facts.json"})])]
    )
    digest = sha256_of(clip)

    result = project.execute("failing", clip)

    report = assert_quarantined(project, result, clip, digest)
    folder = Path(result.result_dir)
    assert folder == project.quarantine / "clip"
    assert sorted(p.name for p in folder.iterdir()) == ["clip.mp4", "logs", "report.json"]
    error = report["error"]
    assert (error["step"], error["module"], error["exit_code"]) == ("first", "fails", 3)
    assert error["reason"] == "exited with status 3"
    assert error["log_tail"].splitlines()[-1] == "the last words of a failing module"
    assert [s["name"] for s in report["steps"]] == ["first"]  # the second step never ran
    assert entries_of(report)["fails"] | {"duration_s": 0, "started_s": 0} == {
        "module": "fails",
        "module_version": "1.0",
        "status": "failed",
        "exit_code": 3,
        "attempts": 1,
        "duration_s": 0,
        "started_s": 0,
    }
    assert report["input"]["sha256"] == digest
    [log] = (folder / "logs").iterdir()
    text = log.read_text()
    assert "working on it" in text and "the last words of a failing module" in text


@pytest.mark.parametrize(
    "declared, body, reason",
    [
        ("json", "pass", "declared output fails.out was not written"),
        ("json", "write('output', '')", "declared output fails.out is empty"),
        ("json", "write('output', '{\"half\": ')", "declared output fails.out is not a json"),
        ("video", "write('output', 'I am text, not a video\\n')", "declared output fails.out is not a video"),
        ("video", "os.symlink(ARGS['input'], ARGS['output'])", "declared output fails.out is not a regular file"),
    ],
    ids=["missing", "empty", "bad-json", "text-as-video", "symlink"],
)
def test_bad_output_fails_the_run(project, clip, declared, body, reason):
    project.module("fails", body, outputs={"output": declared})
    project.job("bad_output", [("make", [entry("fails")])])
    digest = sha256_of(clip)

    result = project.execute("bad_output", clip)

    report = assert_quarantined(project, result, clip, digest)
    assert report["error"]["reason"].startswith(reason)
    assert report["error"]["exit_code"] == 0
    assert entries_of(report)["fails"]["status"] == "failed"


def test_module_writing_to_its_input_never_touches_the_users_file(project, clip):
    project.module(
        "vandal",
        """
        with open(ARGS["input"], "ab") as f:
            f.write(b"scribbled over")
        write("output", "{}")
    """,
    )
    project.job("vandal_job", [("spoil", [entry("vandal")])])
    digest = sha256_of(clip)

    result = project.execute("vandal_job", clip)

    report = assert_quarantined(project, result, clip, digest)
    assert "modified the run's input" in report["error"]["reason"]


@pytest.mark.parametrize(
    "make_input",
    [
        lambda p: p.write_text("this is a text file, not a video\n"),
        lambda p: truncate(p, 0.5),
        lambda p: p.write_bytes(b""),
    ],
    ids=["text", "truncated", "empty"],
)
def test_input_of_the_wrong_type_is_quarantined_before_any_module_runs(project, clip, make_input, no_module):
    project.module("describe", 'note("ran")\n' + DESCRIBE)
    project.job("video_job", [("look", [entry("describe")])])
    make_input(clip)
    digest = sha256_of(clip)

    result = project.execute("video_job", clip)

    report = assert_quarantined(project, result, clip, digest)
    assert report["error"]["reason"].startswith(f"{clip.name} is not a video: ")
    assert report["error"]["check"] == "input" and report["error"]["module"] is None
    assert str(project.root) not in report["error"]["reason"]  # never the workspace's copy
    assert report["steps"] == []
    assert not (project.sync / "ran").exists()


# --- stopping module processes for sure ---

HANGS_WITH_CHILD = """
spawn_sleeper("sleeper.pid")
wait_for("sleeper.pid")
time.sleep(120)
"""

IGNORES_TERM = """
import signal
signal.signal(signal.SIGTERM, signal.SIG_IGN)
spawn_sleeper("sleeper.pid", preexec_fn=lambda: signal.signal(signal.SIGTERM, signal.SIG_IGN))
wait_for("sleeper.pid")
time.sleep(120)
"""

ESCAPES_AND_HANGS = """
escape_sleeper("sleeper.pid")
time.sleep(120)
"""


@pytest.mark.parametrize(
    "body", [HANGS_WITH_CHILD, IGNORES_TERM, ESCAPES_AND_HANGS], ids=["child", "ignores-sigterm", "double-fork-setsid"]
)
def test_timed_out_entry_leaves_no_process_behind(project, clip, body):
    project.module("hangs", body)
    # 2 s: time enough, even on a loaded machine, for the module to start its sleeper first.
    project.job("hang_job", [("wait", [entry("hangs", timeout=2)])])
    digest = sha256_of(clip)

    result = project.execute("hang_job", clip, kill_grace=0.3)

    report = assert_quarantined(project, result, clip, digest)
    assert report["error"]["reason"] == "timed out after 2 s"
    assert report["error"]["module"] == "hangs"
    assert entries_of(report)["hangs"]["status"] == "failed"
    assert not proc_alive(project.note("sleeper.pid"))


def test_process_escaping_a_successful_entry_is_stopped(project, clip):
    project.module(
        "daemonizes",
        """
        escape_sleeper("sleeper.pid")
        write("output", "{}")
    """,
    )
    project.job("escape_job", [("go", [entry("daemonizes")])])

    result = project.execute("escape_job", clip)

    assert result.status == "succeeded", result.error
    assert not proc_alive(project.note("sleeper.pid"))
    project.assert_clean()


@pytest.mark.parametrize("ignore_term", [False, True], ids=["polite", "ignores-sigterm"])
def test_failing_entry_stops_its_running_sibling(project, clip, ignore_term):
    project.module(
        "patient", ("import signal\nsignal.signal(signal.SIGTERM, signal.SIG_IGN)\n" if ignore_term else "") + SLEEPS
    )
    project.module(
        "impatient",
        """
        wait_for("patient.pid")
        print("giving up", file=sys.stderr)
        sys.exit(1)
    """,
    )
    project.job("race", [("both", [entry("patient"), entry("impatient")])])
    digest = sha256_of(clip)

    result = project.execute("race", clip, kill_grace=0.3)

    report = assert_quarantined(project, result, clip, digest)
    assert report["error"]["module"] == "impatient"
    entries = entries_of(report)
    assert entries["impatient"]["status"] == "failed"
    assert entries["patient"]["status"] == "cancelled"
    assert not proc_alive(project.note("patient.pid"))


class PipeCancel:
    """The cancel signal as a worker gets it: a descriptor that turns readable (here, a pipe)."""

    def __init__(self):
        self.r, self.w = os.pipe()

    def fileno(self):
        return self.r

    def is_set(self):
        return True

    def set(self):
        os.write(self.w, b"x")

    def close(self):
        os.close(self.r)
        os.close(self.w)


def test_cancel_stops_the_run_at_once_and_releases_the_input(project, clip):
    project.module("patient", SLEEPS)
    project.job("slow", [("wait", [entry("patient")])])
    cancel = PipeCancel()
    spec = project.spec("slow", clip)
    results = []
    runner = threading.Thread(target=lambda: results.append(execute(spec, cancel, modules=project.launcher)))
    runner.start()
    try:
        wait_until(lambda: (project.sync / "patient.pid").exists())
        cancel.set()
    finally:
        runner.join(timeout=30)
        cancel.close()

    [result] = results
    assert result.status == "released"
    assert project.results(project.outbox) == [] and project.results(project.quarantine) == []
    assert not proc_alive(project.note("patient.pid"))
    project.assert_clean()


# --- retries ---

FLAKY = """
attempt = len(list(SYNC.glob("attempt-*"))) + 1
tmp = Path(os.environ["TMPDIR"])
note(f"attempt-{attempt}", {"output_there": os.path.exists(ARGS["output"]), "tmp": os.listdir(tmp)})
print(f"attempt {attempt} says hello", file=sys.stderr)
if attempt == 1 or ARGS.get("always") == "true":
    write("output", '{"half": ')
    (tmp / "scratch").write_text("left over")
    sys.exit(1)
write("output", json.dumps({"attempt": attempt}))
"""


def test_retry_succeeds_on_a_clean_second_attempt(project, clip):
    project.module("flaky", FLAKY, retries=1, options=[{"name": "always", "type": "bool", "default": False}])
    project.job("flaky_job", [("try", [entry("flaky", outputs={"output": "out.json"})])])

    result = project.execute("flaky_job", clip)

    assert result.status == "succeeded", result.error
    folder = project.outbox / "clip"
    assert read_json(folder / "out.json") == {"attempt": 2}
    e = entries_of(read_json(folder / "manifest.json"))["flaky"]
    assert (e["status"], e["attempts"], e["exit_code"]) == ("succeeded", 2, 0)
    assert project.note("attempt-2") == {"output_there": False, "tmp": []}
    project.assert_clean()


def test_retry_clears_a_folder_the_first_attempt_left_at_the_output(project, clip):
    project.module(
        "messy",
        """
        attempt = len(list(SYNC.glob("attempt-*"))) + 1
        note(f"attempt-{attempt}")
        if attempt == 1:
            os.makedirs(os.path.join(ARGS["output"], "half", "done"))
            sys.exit(1)
        write("output", json.dumps({"attempt": attempt}))
    """,
        retries=1,
    )
    project.job("messy_job", [("try", [entry("messy", outputs={"output": "out.json"})])])

    result = project.execute("messy_job", clip)

    assert result.status == "succeeded", result.error
    assert read_json(project.outbox / "clip" / "out.json") == {"attempt": 2}
    project.assert_clean()


def test_retries_exhausted_keep_every_attempt_in_the_log(project, clip):
    project.module("flaky", FLAKY, retries=1, options=[{"name": "always", "type": "bool", "default": False}])
    project.job("flaky_job", [("try", [entry("flaky", options={"always": True})])])
    digest = sha256_of(clip)

    result = project.execute("flaky_job", clip)

    report = assert_quarantined(project, result, clip, digest)
    e = entries_of(report)["flaky"]
    assert (e["status"], e["attempts"], e["exit_code"]) == ("failed", 2, 1)
    [log] = (Path(result.result_dir) / "logs").iterdir()
    text = log.read_text()
    assert "attempt 1 says hello" in text and "attempt 2 says hello" in text
    assert not (project.sync / "attempt-3").exists()


# --- a module that talks too much ---

NOISY = """
line = "x" * 1023 + "\\n"
megabyte = line * 1024
for _ in range(20):
    sys.stderr.write(megabyte)
sys.stderr.write("the end of the noise\\n")
sys.stderr.flush()
note("printed")
wait_for("go")
write("output", "{}")
sys.exit(1 if ARGS["fail"] == "true" else 0)
"""

NOISY_ONE_LINE = """
sys.stderr.write("y" * (20 << 20))
sys.stderr.flush()
note("printed")
wait_for("go")
sys.exit(1)
"""

LOG_BOUND = int(8.5 * (1 << 20))


def _du(folder: Path) -> int:
    return sum(p.lstat().st_size for p in folder.rglob("*") if p.is_file())


def _run_noisy(project, clip, body, fail):
    project.module("noisy", body, options=[{"name": "fail", "type": "bool", "default": False}])
    project.job("noisy_job", [("talk", [entry("noisy", options={"fail": fail})])])
    spec = project.spec("noisy_job", clip)
    results = []
    runner = threading.Thread(target=lambda: results.append(execute(spec, modules=project.launcher)))
    runner.start()
    try:
        wait_until(lambda: (project.sync / "printed").exists(), timeout=30)
        # All 20 MB are out; the workspace holds the log and an 8 kB input.
        workspace = project.work / spec.run_id
        assert _du(workspace) < LOG_BOUND
    finally:
        (project.sync / "go").touch()
        runner.join(timeout=30)
    [result] = results
    return result


def test_megabytes_on_stderr_keep_the_log_bounded_and_the_run_succeeds(project, clip):
    result = _run_noisy(project, clip, NOISY, fail=False)

    assert result.status == "succeeded", result.error
    project.assert_clean()


def test_megabytes_on_stderr_of_a_failed_run_leave_a_bounded_log_and_report(project, clip):
    result = _run_noisy(project, clip, NOISY, fail=True)

    assert result.status == "failed"
    folder = Path(result.result_dir)
    [log] = (folder / "logs").iterdir()
    assert 1 << 20 < log.stat().st_size < LOG_BOUND
    assert log.read_text().endswith("the end of the noise\n")
    assert (folder / "report.json").stat().st_size < 64 << 10
    assert read_json(folder / "report.json")["error"]["log_tail"].endswith("the end of the noise")
    project.assert_clean()


def test_one_endless_line_on_stderr_keeps_log_and_report_bounded(project, clip):
    result = _run_noisy(project, clip, NOISY_ONE_LINE, fail=True)

    assert result.status == "failed"
    folder = Path(result.result_dir)
    [log] = (folder / "logs").iterdir()
    assert log.stat().st_size < LOG_BOUND
    assert (folder / "report.json").stat().st_size < 64 << 10
    project.assert_clean()


# --- the outbox on another filesystem ---


def test_outbox_on_another_filesystem_gets_a_complete_result(project, clip, tmpfs):
    outbox = tmpfs("4m") / "outbox"
    project.module("copy", COPY, outputs={"output": "video"})
    project.job("copy_job", [("copy", [entry("copy", outputs={"output": "copy.mp4"})])])
    digest = sha256_of(clip)

    result = project.execute("copy_job", clip, outbox=str(outbox))

    assert result.status == "succeeded", result.error
    folder = outbox / "clip"
    assert Path(result.result_dir) == folder
    assert sha256_of(folder / "copy.mp4") == digest
    [artifact] = read_json(folder / "manifest.json")["artifacts"]
    assert (artifact["size"], artifact["sha256"]) == (clip.stat().st_size, digest)
    assert [p.name for p in outbox.iterdir()] == ["clip"]
    project.assert_clean()


def test_outbox_running_out_of_space_shows_no_partial_result(project, clip, tmpfs):
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

    result = project.execute("big_job", clip, outbox=str(outbox))

    assert result.status not in ("succeeded", "failed")
    assert "No space left on device" in result.error["reason"]
    assert list(outbox.iterdir()) == []
    assert project.results(project.quarantine) == []
    assert sha256_of(clip) == digest
    project.assert_clean()


def test_a_module_that_fills_the_workspace_and_then_talks_defers_the_run(project, clip, tmpfs):
    """Its own log in the workspace cannot be written either: the run still ends, as the machine's fault."""
    work = tmpfs("4m")
    project.module(
        "filler",
        """
        import sys
        try:
            with open(os.path.join(os.environ["TMPDIR"], "fill"), "wb") as f:
                while True:
                    f.write(b"x" * (1 << 16))
        except OSError:
            pass
        for i in range(2000):
            print(f"still here {i}", "y" * 100, file=sys.stderr)
        sys.exit(1)
    """,
        outputs={"output": "data"},
    )
    project.job("fills", [("make", [entry("filler", outputs={"output": "out.bin"})])])
    digest = sha256_of(clip)

    result = project.execute("fills", clip, work_dir=str(work), work_reserve=0)

    assert result.status == RunStatus.DEFERRED and result.fault == Fault.MACHINE, result
    assert "disk is full" in result.error["reason"]
    assert project.results(project.quarantine) == [] and project.results(project.outbox) == []
    assert sha256_of(clip) == digest
    project.assert_clean()


def test_quarantine_running_out_of_space_shows_no_partial_folder(project, tmp_path, tmpfs):
    quarantine = tmpfs("1m") / "quarantine"
    project.module("fails", FAILS, inputs={"input": "data"})
    project.job(
        "failing", [("first", [entry("fails", inputs={"input": "big.bin"})])], input_type="data", input_name="big.bin"
    )
    user_file = tmp_path / "big.bin"
    user_file.write_bytes(os.urandom(3 << 20))  # bigger than the quarantine's filesystem
    digest = sha256_of(user_file)

    result = project.execute("failing", user_file, quarantine=str(quarantine))

    assert result.status not in ("succeeded", "failed")
    assert "No space left on device" in result.error["reason"]
    assert list(quarantine.iterdir()) == []  # no report without its input, no hidden build folder
    assert sha256_of(user_file) == digest
    project.assert_clean()


# --- daemon runs: the input is a claim, and ends in exactly one place ---


# A long name that is not ASCII: 247 bytes in UTF-8, only 85 characters.
LONG_NAME = "日本語" * 27 + ".mp4"


@pytest.mark.parametrize("name", ["clip.mp4", LONG_NAME], ids=["short", "long-utf8"])
def test_daemon_run_archives_its_input_on_another_filesystem(project, clip, tmpfs, name):
    archive = tmpfs("4m") / "done"
    project.module("copy", COPY, outputs={"output": "video"})
    project.job("copy_job", [("copy", [entry("copy", outputs={"output": "copy.mp4"})])])
    user_file = clip.rename(clip.with_name(name))
    digest = sha256_of(user_file)
    spec = project.claimed_spec("copy_job", user_file, on_success="archive", archive=str(archive))

    result = execute(spec, modules=project.launcher)

    assert result.status == "succeeded", result.error
    assert sha256_of(Path(result.result_dir) / "copy.mp4") == digest
    assert Path(result.archived_to) == archive / name
    assert [p.name for p in archive.iterdir()] == [name]  # and no hidden partial copy beside it
    assert sha256_of(archive / name) == digest
    assert not Path(spec.claim).exists() and not spec.committed.exists()
    project.assert_clean()


@pytest.mark.parametrize("name", ["clip.mp4", LONG_NAME], ids=["short", "long-utf8"])
def test_daemon_run_moves_a_failed_input_into_the_quarantine(project, clip, tmpfs, name):
    quarantine = tmpfs("4m") / "quarantine"
    project.module("fails", FAILS)
    project.job("failing", [("first", [entry("fails")])])
    user_file = clip.rename(clip.with_name(name))
    digest = sha256_of(user_file)
    spec = project.claimed_spec("failing", user_file, quarantine=str(quarantine))

    result = execute(spec, modules=project.launcher)

    assert result.status == "failed"
    folder = Path(result.result_dir)
    assert sorted(p.name for p in folder.iterdir()) == sorted([name, "logs", "report.json"])
    assert sha256_of(folder / name) == digest
    assert not Path(spec.claim).exists() and not spec.committed.exists()
    assert [p.name for p in quarantine.iterdir()] == [folder.name]
    project.assert_clean()


def test_daemon_run_that_cannot_quarantine_keeps_its_claim_and_delivers_later(project, tmp_path, tmpfs):
    mount = tmpfs("1m")
    quarantine = mount / "quarantine"
    project.module("fails", FAILS, inputs={"input": "data"})
    project.job(
        "failing", [("first", [entry("fails", inputs={"input": "big.bin"})])], input_type="data", input_name="big.bin"
    )
    user_file = tmp_path / "big.bin"
    user_file.write_bytes(os.urandom(3 << 20))  # bigger than the quarantine's filesystem
    digest = sha256_of(user_file)
    spec = project.claimed_spec("failing", user_file, quarantine=str(quarantine))

    first = execute(spec, modules=project.launcher)

    assert first.status == "deferred" and "No space left on device" in first.error["reason"]
    assert list(quarantine.iterdir()) == []  # no half-built folder
    [claim] = [c for c in (Path(spec.claim), spec.committed) if c.exists()]
    assert sha256_of(claim / "big.bin") == digest  # the input is still in its claim, whole

    subprocess.run(["mount", "-o", "remount,size=16m", str(mount)], check=True)
    second = execute(spec, modules=project.launcher)  # the daemon retries a deferred run

    assert second.status == "failed"
    folder = Path(second.result_dir)
    assert folder.parent == quarantine and sha256_of(folder / "big.bin") == digest
    assert read_json(folder / "report.json")["error"]["reason"] == "exited with status 3"
    assert not Path(spec.claim).exists() and not spec.committed.exists()
    project.assert_clean()


def test_a_rejected_symlink_goes_to_a_quarantine_on_another_filesystem_as_a_link(project, tmp_path, tmpfs, no_module):
    quarantine = tmpfs("1m") / "quarantine"
    project.module("copy", COPY, outputs={"output": "video"})
    project.job("copy_job", [("copy", [entry("copy", outputs={"output": "copy.mp4"})])])
    target = tmp_path / "secret.txt"
    target.write_text("not for chute\n")
    link = tmp_path / "link.mp4"
    link.symlink_to(target)
    spec = project.claimed_spec("copy_job", link, quarantine=str(quarantine), poison="the file is a symbolic link")

    result = execute(spec, modules=project.launcher)

    assert result.status == "failed", result.error
    moved = Path(result.result_dir) / "link.mp4"
    assert moved.is_symlink() and os.readlink(moved) == str(target)
    assert sorted(p.name for p in quarantine.iterdir()) == [moved.parent.name]  # no hidden copy beside it
    assert not Path(spec.claim).exists() and not spec.committed.exists()
    project.assert_clean()


def test_a_result_built_before_a_crash_never_stays_hidden_when_the_run_again_fails(project, clip):
    """Killed after building its result, before marking it to go out: the run runs again (its
    claim uncommitted) and, ending the other way this time, leaves no hidden build in the outbox."""
    from chute import claims
    from chute.publish import build_dir

    project.module("fails", FAILS)
    project.job("failing", [("first", [entry("fails")])])
    spec = project.claimed_spec("failing", clip)
    claims.commit(Path(spec.claim))
    stale = build_dir(spec.outbox, spec.run_id)
    stale.mkdir()
    (stale / "manifest.json").write_text("{}")

    result = execute(spec, modules=project.launcher)

    assert result.status == "failed"
    assert project.hidden(spec.outbox) == [] and project.hidden(spec.quarantine) == []
    assert Path(result.result_dir).parent == spec.quarantine
    project.assert_clean()


def test_a_launcher_killed_mid_run_defers_the_run_and_the_next_gets_a_new_launcher(project, clip, launch):
    if launch != "warm":
        pytest.skip(
            "kills the warm launcher, which only the [warm] variant has: a [fresh] module's parent is the runner itself"
        )
    project.module(
        "parricide",
        """
        import signal
        parent = os.getppid()
        # Only ever the launcher: started any other way, our parent would be the test process itself.
        if b"chute.launcher" not in Path(f"/proc/{parent}/cmdline").read_bytes():
            sys.exit(f"not forked by the warm launcher: parent {parent} is not chute.launcher")
        note("launcher.pid", parent)
        os.kill(parent, signal.SIGKILL)
        time.sleep(30)
    """,
    )
    project.module("copy", COPY, outputs={"output": "video"})
    project.job("kills", [("go", [entry("parricide")])])
    project.job("copies", [("go", [entry("copy", outputs={"output": "copy.mp4"})])])

    killed = project.execute("kills", clip)

    assert killed.status == "deferred" and killed.fault == "crash"  # not the file's fault: it waits
    assert killed.error["reason"].startswith("the module launcher died (killed by signal 9")
    assert project.results(project.quarantine) == []
    first = project.note("launcher.pid")
    assert not proc_alive(first)
    again = project.execute("copies", clip)
    assert again.status == "succeeded" and project.launcher.pid != first


def test_a_partial_copy_left_by_an_earlier_attempt_is_removed(project, clip, tmpfs):
    archive = tmpfs("4m") / "done"
    archive.mkdir()
    project.module("copy", COPY, outputs={"output": "video"})
    project.job("copy_job", [("copy", [entry("copy", outputs={"output": "copy.mp4"})])])
    spec = project.claimed_spec("copy_job", clip, on_success="archive", archive=str(archive))
    # What a crash during an earlier attempt's move across filesystems leaves: a hidden partial copy.
    (archive / f".chute-copy-{spec.run_id}-clip.mp4").write_bytes(b"half")

    result = execute(spec, modules=project.launcher)

    assert result.status == "succeeded", result.error
    assert [p.name for p in archive.iterdir()] == ["clip.mp4"]
