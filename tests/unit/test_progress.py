"""The run side's live progress: the throttle (a pure function) and what a Reporter sends, on an injected clock."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from chute.progress import EVERY, Reporter, delay


def test_the_first_message_and_a_steps_end_go_at_once_the_others_wait_their_turn():
    assert delay(None, 10.0, force=False) == 0.0
    assert delay(10.0, 10.1, force=False) == pytest.approx(EVERY - 0.1)
    assert delay(10.0, 10.0 + EVERY, force=False) == 0.0
    assert delay(10.0, 10.1, force=True) == 0.0


def spec():
    # Only the fields a Reporter reads (a RunSpec needs loaded definitions, which this test is not about).
    entry = SimpleNamespace
    steps = [
        SimpleNamespace(name="probe", entries=[entry(label="probe", module="ffprobe")]),
        SimpleNamespace(
            name="thumbnails", entries=[entry(label="proxy", module="ffmpeg"), entry(label="wf", module="waveform")]
        ),
    ]
    return SimpleNamespace(run_id="r1", job=SimpleNamespace(steps=steps))


def test_a_reporter_sends_at_most_every_half_second_and_always_a_steps_end():
    sent: list[dict] = []
    now = [100.0]
    reporter = Reporter(spec(), sent.append, clock=lambda: now[0])  # type: ignore[arg-type]
    reporter("entry.started", label="probe", module="ffprobe", attempt=1)
    reporter("entry.progress", label="probe", module="ffprobe", progress=0.3)  # held: too soon
    assert len(sent) == 1 and sent[0]["entries"][0]["state"] == "running"
    reporter("entry.finished", label="probe", module="ffprobe")  # the step's end: sent although too soon
    assert [m["entries"][0]["state"] for m in sent] == ["running", "succeeded"]
    assert sent[-1]["entries"][0]["fraction"] == 1.0
    now[0] += EVERY
    reporter("entry.started", label="proxy", module="ffmpeg", attempt=1)
    reporter("entry.progress", label="proxy", module="ffmpeg", progress=0.42)  # held
    reporter.close()  # the run ended: what was held is not sent after it
    assert sent[-1] == {
        "run_id": "r1",
        "step": "thumbnails",
        "index": 2,
        "steps": 2,
        "entries": [
            {"label": "proxy", "module": "ffmpeg", "state": "running", "fraction": None},
            {"label": "wf", "module": "waveform", "state": "pending", "fraction": None},
        ],
    }
    now[0] += EVERY
    reporter("entry.progress", label="proxy", module="ffmpeg", progress=0.42)
    assert sent[-1]["entries"][0]["fraction"] == 0.42
    reporter("launcher.event", label="")  # not an entry of the job: ignored
    assert len(sent) == 4


def test_a_for_each_entrys_files_make_one_row_with_a_fraction_across_them():
    sent: list[dict] = []
    reporter = Reporter(spec(), sent.append, clock=lambda: 0.0)  # type: ignore[arg-type]
    each = {"label": "proxy", "module": "ffmpeg", "members": 4}
    reporter("entry.started", member="A001.mov", attempt=1, **each)
    reporter("entry.started", member="A002.mov", attempt=1, **each)
    reporter("entry.progress", member="A001.mov", progress=0.5, **each)
    reporter("entry.finished", member="A002.mov", **each)
    row = reporter.message()["entries"][0]
    assert row == {
        "label": "proxy",
        "module": "ffmpeg",
        "state": "running",
        "fraction": 0.375,
        "files": 4,
        "files_done": 1,
    }
    reporter("entry.finished", member="A001.mov", **each)
    reporter("entry.started", member="A003.mov", attempt=1, **each)
    reporter("entry.failed", member="A003.mov", reason="exit 1", retrying=False, **each)
    reporter("entry.started", member="A004.mov", attempt=1, **each)
    reporter("entry.finished", member="A004.mov", **each)
    row = reporter.message()["entries"][0]
    assert (row["state"], row["fraction"], row["files_done"]) == ("failed", 0.75, 3)
