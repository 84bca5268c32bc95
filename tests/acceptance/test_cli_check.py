"""`chute check / plan / modules / jobs` as a user runs them: the installed console script, in a subprocess.

One sweep over the whole corpus calls the console script's function in-process, for speed.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from chute import cli

from tests.unit.definitions.corpus import BASE, Case, case_named, cases

CHUTE = Path(sys.executable).with_name("chute")
REPO = Path(__file__).resolve().parents[2]
# `file:line: field: message`, or `file: message` when the whole file is unreadable.
PROBLEM = re.compile(r"^[^:\s][^:]*(:\d+)?: \S.*$")
SUMMARY = re.compile(r"^config\.yaml: invalid, (\d+) problems?$")

# One case of each kind, run one by one; the sweep below runs them all.
REPRESENTATIVE = [
    "yaml_syntax_job",
    "yaml_raw_nul",
    "empty_job",
    "manifest_not_utf8",
    "config_not_utf8",
    "module_entrypoint_symlink",
    "module_duplicate_name",
    "job_module_not_loaded",
    "job_type_vs_producer",
    "artifact_name_nul",
    "option_wrong_type",
    "config_outbox_in_inbox",
    "config_archive_missing",
    "many_files",
]


def chute(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "NOTIFY_SOCKET"}
    return subprocess.run(
        [str(CHUTE), *args], cwd=cwd, env=env, capture_output=True, text=True, errors="replace", timeout=60
    )


def judge(case: Case, returncode: int, stdout: str, stderr: str) -> list[str]:
    """What is wrong with `chute check`'s output for one corpus case (empty: all good)."""
    lines = stderr.splitlines()
    wrong = [f"exit {returncode}, not 1"] if returncode != 1 else []
    wrong += ["a traceback"] if "Traceback" in stdout + stderr else []
    wrong += [f"printed on stdout: {stdout!r}"] if stdout else []
    summary = SUMMARY.match(lines[-1]) if lines else None
    if summary is None or int(summary[1]) != len(lines) - 1:
        wrong.append(f"last line is not the summary: {lines[-1:]}")
    problems = lines[:-1]
    wrong += [f"not one problem per line: {line!r}" for line in problems if not PROBLEM.match(line)]
    wrong += case.mismatches(problems)
    return [f"{case.name}: {w}" for w in wrong]


@pytest.fixture
def base_tree(tmp_path: Path) -> Path:
    shutil.copytree(BASE, tmp_path / "tree")
    return tmp_path / "tree"


@pytest.fixture
def example_config(tmp_path: Path) -> Path:
    """A config over the repo's bundled modules and jobs, with one inbox for example_job."""
    config = tmp_path / "config.yaml"
    config.write_text(
        f"modules_path: [{json.dumps(str(REPO / 'modules'))}]\n"
        f"jobs_path: [{json.dumps(str(REPO / 'jobs'))}]\n"
        "state_dir: var/state\nwork_dir: var/work\n"
        "inboxes:\n"
        "  - {path: var/inbox, job: example_job, outbox: var/outbox, quarantine: var/quarantine, on_success: delete}\n"
    )
    return config


@pytest.mark.parametrize("name", REPRESENTATIVE)
def test_check_prints_each_problem_as_file_line_field_message(name: str, tmp_path: Path) -> None:
    case = case_named(name)
    config = case.build(tmp_path / "tree")
    proc = chute("check", "--config", "config.yaml", cwd=config.parent)
    assert judge(case, proc.returncode, proc.stdout, proc.stderr) == []


def test_check_reports_every_corpus_case_without_a_traceback(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The same, for every case, through the console script's function in this process.

    A subprocess per case would cost a second's worth of imports every five cases;
    the representative cases above run the real `chute` executable.
    """
    wrong = []
    for case in cases():
        monkeypatch.chdir(case.build(tmp_path / case.name).parent)
        returncode = cli.main(["check", "--config", "config.yaml"])
        out, err = capsys.readouterr()
        wrong += judge(case, returncode, out, err)
    assert wrong == [], "\n".join(wrong)


def test_check_valid_config_exits_0_with_a_summary(base_tree: Path) -> None:
    proc = chute("check", "--config", "config.yaml", cwd=base_tree)
    assert (proc.returncode, proc.stderr) == (0, "")
    assert "modules  2: meter, tiny" in proc.stdout
    assert "jobs     1: tiny_job" in proc.stdout
    assert proc.stdout.splitlines()[-1] == "ok"


def test_check_bundled_modules_and_jobs(example_config: Path) -> None:
    proc = chute("check", "--config", str(example_config), cwd=example_config.parent)
    assert (proc.returncode, proc.stderr) == (0, "")


def test_plan_shows_the_dropped_file_bound_and_the_public_artifact(example_config: Path) -> None:
    proc = chute("plan", "example_job", "--config", str(example_config), cwd=example_config.parent)
    assert (proc.returncode, proc.stderr) == (0, "")
    out = proc.stdout
    assert re.search(r"^input: the dropped file \(video\) -> video\.mp4$", out, re.M), out
    assert re.search(r"^\s+example_module\s+--input video\.mp4 --output audio\.wav$", out, re.M), out
    assert re.search(r"^\s+video\.mp4\s+video\s+the dropped file\s+deleted after the run$", out, re.M), out
    assert re.search(r"^\s+audio\.wav\s+audio\s+step1/example_module\s+public$", out, re.M), out


def test_plan_of_an_unknown_job_is_one_line(base_tree: Path) -> None:
    proc = chute("plan", "nosuchjob", "--config", "config.yaml", cwd=base_tree)
    assert proc.returncode != 0
    assert proc.stdout == ""
    assert proc.stderr.splitlines() == ["chute: no job named 'nosuchjob' (defined: tiny_job)"]


def test_version(tmp_path: Path) -> None:
    proc = chute("--version", cwd=tmp_path)
    assert proc.returncode == 0
    assert re.fullmatch(r"chute \d+\.\d+\S*\n", proc.stdout), proc.stdout


def test_modules_and_jobs_list_what_is_loaded(base_tree: Path) -> None:
    modules = chute("modules", "--config", "config.yaml", cwd=base_tree)
    jobs = chute("jobs", "--config", "config.yaml", cwd=base_tree)
    assert (modules.returncode, jobs.returncode) == (0, 0)
    assert [line.split()[0] for line in modules.stdout.splitlines()] == ["meter", "tiny"]
    assert "Turns a video into audio" in modules.stdout
    assert [line.split()[0] for line in jobs.stdout.splitlines()] == ["tiny_job"]
    assert "publishes audio.wav" in jobs.stdout


def test_missing_config_is_one_line(tmp_path: Path) -> None:
    proc = chute("check", "--config", "/nonexistent/config.yaml", cwd=tmp_path)
    assert proc.returncode == 1
    assert proc.stderr.splitlines() == ["chute: config file /nonexistent/config.yaml does not exist"]


def test_config_that_is_a_folder_is_one_line(tmp_path: Path) -> None:
    (tmp_path / "config.yaml").mkdir()
    proc = chute("check", "--config", "config.yaml", cwd=tmp_path)
    assert proc.returncode == 1
    assert proc.stderr.splitlines() == ["chute: config file config.yaml is not a file"]


@pytest.mark.parametrize(
    "content",
    [
        pytest.param("workers: 2\n# réglages\n".encode("latin-1"), id="latin-1"),
        pytest.param(os.urandom(4096) + b"\xff\xfe", id="binary-garbage"),
    ],
)
@pytest.mark.parametrize("command", ["check", "jobs"])
def test_unreadable_config_is_one_line(command: str, content: bytes, tmp_path: Path) -> None:
    (tmp_path / "config.yaml").write_bytes(content)
    proc = chute(command, "--config", "config.yaml", cwd=tmp_path)
    assert proc.returncode == 1
    assert "Traceback" not in proc.stderr
    problem, *rest = proc.stderr.splitlines()
    assert problem.startswith("config.yaml: not UTF-8 text")
    # `check` ends with its summary; any other command has only the one line.
    assert rest == (["config.yaml: invalid, 1 problem"] if command == "check" else [])


FIVE_MISTAKES = [
    "config.yaml:8: defaults.setle: unknown key 'setle' (did you mean 'settle'?)",
    "config.yaml:18: inboxes[1].outbox: ",  # ... var/inbox/results is inside inboxes[0] (...)
    "jobs/thumbs.yaml:10: steps[0].entries[0].module: module 'tinyy' is not loaded (did you mean 'tiny'?)",
    "jobs/tiny_job.yaml:13: steps[0].entries[0].input_artifacts[0].param_name: module 'tiny' has no input --inptu"
    " (did you mean --input?)",
    "modules/meter/manifest.yaml:3: entrypoint: '../tiny/main.py' is outside the module folder",
]


def test_check_reports_five_independent_mistakes_in_one_pass(base_tree: Path) -> None:
    """A config key typo, a bad inbox, an unknown module, a wrong param_name, a bad entrypoint (issue 21)."""
    config = base_tree / "config.yaml"
    config.write_text(
        config.read_text().replace("settle: 0.5", "setle: 0.5")
        + "  - path: var/inbox2\n    job: tiny_job\n    outbox: var/inbox/results\n"
        "    quarantine: var/quarantine2\n    on_success: delete\n"
    )
    job = base_tree / "jobs" / "tiny_job.yaml"
    (base_tree / "jobs" / "thumbs.yaml").write_text(
        job.read_text().replace("name: tiny_job", "name: thumbs").replace("module: tiny", "module: tinyy")
    )
    job.write_text(job.read_text().replace("param_name: input", "param_name: inptu"))
    manifest = base_tree / "modules" / "meter" / "manifest.yaml"
    manifest.write_text(manifest.read_text().replace("entrypoint: main.py", "entrypoint: ../tiny/main.py"))
    proc = chute("check", "--config", "config.yaml", cwd=base_tree)
    assert proc.returncode == 1
    assert "Traceback" not in proc.stderr
    *problems, summary = proc.stderr.splitlines()
    missing = [m for m in FIVE_MISTAKES if not any(line.startswith(m) for line in problems)]
    assert missing == [], proc.stderr
    assert all(PROBLEM.match(line) for line in problems), proc.stderr
    # The wrong param_name also leaves the declared --input unwired: its one consequence, said once.
    assert len(problems) == 6, proc.stderr
    assert summary == "config.yaml: invalid, 6 problems"


def test_check_suggests_the_inbox_job_and_config_key_meant(base_tree: Path) -> None:
    config = base_tree / "config.yaml"
    config.write_text(config.read_text().replace("job: tiny_job", "job: tinyjob").replace("workers:", "worker:"))
    proc = chute("check", "--config", "config.yaml", cwd=base_tree)
    assert proc.returncode == 1
    assert proc.stderr.splitlines()[:-1] == [
        "config.yaml:6: worker: unknown key 'worker' (did you mean 'workers'?)",
        "config.yaml:11: inboxes[0].job: job 'tinyjob' is not defined (did you mean 'tiny_job'?)",
    ]


def test_plan_suggests_the_job_meant(base_tree: Path) -> None:
    proc = chute("plan", "tiny-job", "--config", "config.yaml", cwd=base_tree)
    assert proc.returncode == 2
    assert proc.stderr.splitlines() == ["chute: no job named 'tiny-job' (did you mean 'tiny_job'?)"]
