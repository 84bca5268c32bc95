"""Loading and checking definitions (contract §2-4): every bad case is named by file, line and field."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import yaml
from chute.catalog import load_catalog
from chute.errors import DefinitionError
from chute.job import load_job
from chute.manifest import load_module

from tests.unit.definitions.corpus import BASE, Case, case_named, cases

REPO = Path(__file__).resolve().parents[2]

# SEED.md's restored texts, verbatim: chute must accept them exactly as written.
SEED_MANIFEST = """\
name: example_module # Name of the module
description: Doing some stuff with the video # User-friendly description of the module
entrypoint: main.py # Entry point of the module, python script placed in the same folder
# Accepted input files
inputs:
  - param_name: input
    type: video
# Produced output files
outputs:
  - param_name: output
    type: audio
"""

SEED_JOB = """\
name: example_job # Name of the job
version: 1.0 # Version of the job
input_artifacts: # Main input file for the job, follows module's specification
- param_name: input
  type: video
steps:
- name: step1 # Name of the step
  entries: # List of entries to run in parallel
  - module: example_module # Name of the module to run
    input_artifacts: # Input artifacts for the module
    - name: video.mp4
      param_name: input
      type: video
    output_artifacts: # Output artifacts for the module
    - name: audio.wav # Name of the file
      param_name: output # Name of the CLI parameter
      type: audio # Type of the artifact, sanity check only
      public: true # Whether the artifact should not be removed after the job is done
"""

SEED_CONFIG = """\
modules_path: [modules]
jobs_path: [jobs]
inboxes:
  - path: inbox
    job: example_job
    outbox: outbox
    quarantine: quarantine
    on_success: delete
"""


def problems_of(config: Path) -> list[str]:
    with pytest.raises(DefinitionError) as caught:
        load_catalog(config)
    return [str(p) for p in caught.value.problems]


@pytest.fixture
def seed_tree(tmp_path: Path) -> Path:
    """SEED.md's module and job, as written, with a trivial entrypoint; returns the config file."""
    module = tmp_path / "modules" / "example_module"
    module.mkdir(parents=True)
    (module / "manifest.yaml").write_text(SEED_MANIFEST)
    (module / "main.py").write_text("")
    (tmp_path / "jobs").mkdir()
    (tmp_path / "jobs" / "example_job.yaml").write_text(SEED_JOB)
    (tmp_path / "config.yaml").write_text(SEED_CONFIG)
    return tmp_path / "config.yaml"


# --- the corpus of bad definitions -------------------------------------------------


def test_corpus_base_is_valid(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every case fails only because of what it changes in the base."""
    shutil.copytree(BASE, tmp_path / "tree")
    monkeypatch.chdir(tmp_path / "tree")
    catalog = load_catalog(Path("config.yaml"))
    assert sorted(catalog.modules) == ["meter", "tiny"]
    assert sorted(catalog.jobs) == ["tiny_job"]


@pytest.mark.parametrize("case", cases(), ids=lambda c: c.name)
def test_bad_definition_is_reported_at_its_file_line_and_field(
    case: Case, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = case.build(tmp_path / "tree")
    # Problems name files relative to the current folder, as a user running `chute check` there reads them.
    monkeypatch.chdir(config.parent)
    reported = problems_of(Path("config.yaml"))
    assert not case.mismatches(reported), f"{case.about}\n" + "\n".join(case.mismatches(reported))


def test_corpus_covers_every_rejection() -> None:
    """A guard against the corpus shrinking: the contract §3/§4 rejections each have a case."""
    names = {c.name for c in cases()}
    required = {
        "job_unknown_key",
        "job_module_not_loaded",
        "job_input_param_undeclared",
        "job_input_unwired",
        "job_output_type_vs_module",
        "job_type_vs_producer",
        "job_consumed_before_produced",
        "job_consumed_same_step",
        "job_produced_twice_across_steps",
        "artifact_name_absolute",
        "artifact_name_slash",
        "artifact_name_backslash",
        "artifact_name_dotdot",
        "artifact_name_nul",
        "module_entrypoint_dotdot",
        "module_entrypoint_symlink",
        "option_wrong_type",
        "option_unknown",
        "config_two_inboxes_one_path",
        "config_inbox_in_inbox",
        "config_outbox_in_inbox",
        "config_quarantine_in_inbox",
        "config_archive_in_other_inbox",
        "config_inbox_job_undefined",
        "config_archive_missing",
        "module_duplicate_name",
        "module_entrypoint_missing",
    }
    assert required <= names, sorted(required - names)


def test_problems_in_several_files_are_all_reported_in_one_pass(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    case = case_named("many_files")
    monkeypatch.chdir(case.build(tmp_path / "tree").parent)
    reported = problems_of(Path("config.yaml"))
    files = {line.split(":", 1)[0] for line in reported}
    assert files == {"modules/meter/manifest.yaml", "jobs/tiny_job.yaml", "jobs/loudness.yaml", "config.yaml"}


def test_several_problems_in_one_job_are_all_reported(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    shutil.copytree(BASE, tmp_path / "tree")
    monkeypatch.chdir(tmp_path / "tree")
    job = Path("jobs/tiny_job.yaml")
    job.write_text(job.read_text().replace("type: audio", "type: text").replace("width: 64", "height: 1"))
    reported = problems_of(Path("config.yaml"))
    assert [line.split(": ", 2)[:2] for line in reported] == [
        ["jobs/tiny_job.yaml:18", "steps[0].entries[0].output_artifacts[0].type"],
        ["jobs/tiny_job.yaml:21", "steps[0].entries[0].options.height"],
    ]


# --- the seed: SEED.md's module and job ---------------------------------------------


def test_seed_module_and_job_load_clean(seed_tree: Path) -> None:
    catalog = load_catalog(seed_tree)
    assert list(catalog.modules) == ["example_module"]
    assert list(catalog.jobs) == ["example_job"]
    assert catalog.jobs["example_job"].version == "1.0"


def test_seed_job_binds_video_to_the_dropped_file_and_publishes_audio(seed_tree: Path) -> None:
    plan = load_catalog(seed_tree).jobs["example_job"]
    assert plan.input_type == "video"
    assert plan.input_names == ("video.mp4",)
    artifacts = {a.name: a for a in plan.artifacts}
    assert artifacts["video.mp4"].step is None  # the dropped file
    assert not artifacts["video.mp4"].public
    assert (artifacts["audio.wav"].step, artifacts["audio.wav"].module) == ("step1", "example_module")
    assert [a.name for a in plan.public] == ["audio.wav"]


def test_seed_entry_gets_one_flag_and_absolute_path_per_artifact(seed_tree: Path, tmp_path: Path) -> None:
    (entry,) = load_catalog(seed_tree).jobs["example_job"].entries()
    workspace = tmp_path / "work" / "run-1"
    assert entry.argv(workspace) == ["--input", f"{workspace}/video.mp4", "--output", f"{workspace}/audio.wav"]
    assert Path(entry.entrypoint) == (seed_tree.parent / "modules/example_module/main.py").resolve()


def test_entry_options_follow_the_artifacts_with_job_values_over_defaults(tmp_path: Path) -> None:
    shutil.copytree(BASE, tmp_path / "tree")
    (entry,) = load_catalog(tmp_path / "tree" / "config.yaml").jobs["tiny_job"].entries()
    ws = Path("/ws")
    assert entry.argv(ws) == ["--input", "/ws/video.mp4", "--output", "/ws/audio.wav", "--width", "64"]
    job = tmp_path / "tree" / "jobs" / "tiny_job.yaml"
    job.write_text(job.read_text().replace("        options:\n          width: 64\n", ""))
    (entry,) = load_catalog(tmp_path / "tree" / "config.yaml").jobs["tiny_job"].entries()
    assert entry.argv(ws)[-2:] == ["--width", "320"]


def test_bundled_example_job_is_the_seed_job() -> None:
    assert yaml.safe_load((REPO / "jobs" / "example_job.yaml").read_text()) == yaml.safe_load(SEED_JOB)


def test_bundled_example_module_and_job_load_clean() -> None:
    folder = REPO / "modules" / "example_module"
    if not (folder / "manifest.yaml").is_file():
        pytest.skip("modules/example_module is not written yet")
    module = load_module(folder)
    plan = load_job(REPO / "jobs" / "example_job.yaml", {module.name: module})
    assert plan.input_names == ("video.mp4",)
    assert [a.name for a in plan.public] == ["audio.wav"]


# --- whatever the bytes, a DefinitionError and never another exception ---------------

ODD_TEXTS = [
    "",
    "~",
    "42",
    "- a\n- b\n",
    "a: &x [*x]\n",
    "{1: 2}\n",
    "? [a]\n: b\n",
    "name: [x]\n",
    "\t\n",
    "a: 1\na: 2\n",
    "{null: 1}\n",
    "x: !!binary aGVsbG8=\n",
    "!!set {a, b}\n",
    "x: 2001-12-14\n",
    "name: !!python/object/apply:os.system [true]\n",
    "steps:\n  - entries:\n    - null\n",
]


@pytest.mark.parametrize("role", ["config.yaml", "modules/tiny/manifest.yaml", "jobs/tiny_job.yaml"])
def test_odd_yaml_is_a_definition_error_or_valid(role: str, tmp_path: Path) -> None:
    for text in ODD_TEXTS:
        root = tmp_path / f"t{ODD_TEXTS.index(text)}"
        shutil.copytree(BASE, root)
        (root / role).write_text(text)
        try:
            load_catalog(root / "config.yaml")
        except DefinitionError as exc:
            assert exc.problems, text
