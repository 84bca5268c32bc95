"""The bundled modules, each run as chute runs it: a real subprocess of
``python main.py --input ... --output ... --option value`` in its own folder.

Clips come from tests/media.py, so every expected value (size, rate, cut
times, tone level) is known exactly.
"""

from __future__ import annotations

import importlib.util
import json
import math
import os
import signal
import subprocess
import sys
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pyloudnorm
import pytest
import yaml
from PIL import Image

from chute.modkit import format_timecode
from tests.media import make_clip, make_tones, read_stamp, tone, truncate

ROOT = Path(__file__).resolve().parents[2]
MODULES = ROOT / "modules"
JOBS = ROOT / "jobs"
VIDEO_MODULES = ["example_module", "probe", "thumbnails", "proxy", "scenes"]
AUDIO_MODULES = ["loudness", "waveform"]
OUTPUT_NAMES = {
    "example_module": "audio.wav",
    "probe": "probe.json",
    "thumbnails": "sheet.jpg",
    "proxy": "proxy.mp4",
    "scenes": "scenes.json",
    "loudness": "loudness.json",
    "waveform": "waveform.png",
}
RUN_TIMEOUT = 60


def run_module(name, source, output, tmp_path, **options):
    """Run module ``name`` on ``source`` exactly as chute does; wait for it."""
    return subprocess.run(
        _argv(source, output, options),
        cwd=MODULES / name,
        env=_environ(name, tmp_path),
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT,
    )


def _argv(source, output, options):
    argv = [sys.executable, "main.py", "--input", str(source), "--output", str(output)]
    for option, value in options.items():
        text = str(value).lower() if isinstance(value, bool) else str(value)
        argv += [f"--{option}", text]
    return argv


def _environ(name, tmp_path):
    scratch = tmp_path / "tmp"
    scratch.mkdir(exist_ok=True)
    return {**os.environ, "TMPDIR": str(scratch), "CHUTE_MODULE": name}


def manifest_options(name):
    manifest = yaml.safe_load((MODULES / name / "manifest.yaml").read_text())
    return {o["name"]: o["default"] for o in manifest.get("options", [])}


def top_level_boxes(path):
    """The ISO BMFF box types at the top of an MP4, in file order."""
    boxes = []
    with open(path, "rb") as handle:
        while header := handle.read(8):
            size, kind = int.from_bytes(header[:4], "big"), header[4:].decode("latin-1")
            if size == 1:
                size = int.from_bytes(handle.read(8), "big") - 8
            boxes.append(kind)
            if size == 0:
                break
            handle.seek(size - 8, os.SEEK_CUR)
    return boxes


def assert_unusable(result, out_dir):
    """Exit 2, one line on stderr, nothing left in the output folder."""
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2, result.stderr
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.stderr
    assert list(out_dir.iterdir()) == []


@pytest.fixture(scope="session")
def clips(tmp_path_factory):
    """Small clips shared by the tests (written once; modules only read them)."""
    folder = tmp_path_factory.mktemp("clips")
    not_media = folder / "notes.mp4"
    not_media.write_text("This is a text file with a video's name.\n" * 50)
    truncated = make_clip(folder / "truncated.mp4", seconds=2.0)
    truncate(truncated, 0.5)
    return {
        # 4:3 picture; 44.1 kHz mono sound that the proxy must turn into 48k stereo.
        "av": make_clip(folder / "av.mp4", seconds=2.0, sample_rate=44100, channels=1),
        "silent_169": make_clip(folder / "silent.mp4", width=320, height=180, audio=False),
        "audio_only": make_clip(folder / "audio_only.mp4", audio_only=True),
        "cuts": make_clip(folder / "cuts.mp4", seconds=4.0, width=320, height=180, cuts=(1.0, 2.48), audio=False),
        "pcm_ntsc": make_clip(folder / "pcm.mov", fps="30000/1001", sample_rate=44100),
        "not_media": not_media,
        "truncated": truncated,
    }


@pytest.fixture
def out_dir(tmp_path):
    folder = tmp_path / "out"
    folder.mkdir()
    return folder


# --- every module ----------------------------------------------------------


@pytest.mark.parametrize("name", sorted(OUTPUT_NAMES))
def test_manifest_defaults_match_the_code(name):
    """Run by hand or by chute, a module gets the same defaults."""
    spec = importlib.util.spec_from_file_location(f"_module_{name}", MODULES / name / "main.py")
    main = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(main)
    in_code = {o.name: o.default for o in getattr(main, "OPTIONS", [])}
    assert in_code == manifest_options(name)
    assert (MODULES / name / "README.md").is_file()


@pytest.mark.parametrize("name", VIDEO_MODULES + AUDIO_MODULES)
@pytest.mark.parametrize("case", ["not_media", "missing_stream", "truncated"])
def test_unusable_input_exits_2_and_leaves_nothing(name, case, clips, out_dir, tmp_path):
    if case == "missing_stream":
        case = "silent_169" if name in AUDIO_MODULES or name == "example_module" else "audio_only"
    result = run_module(name, clips[case], out_dir / OUTPUT_NAMES[name], tmp_path, **manifest_options(name))
    assert_unusable(result, out_dir)


@pytest.mark.parametrize(
    ("name", "options"),
    [
        ("proxy", {"height": 361, "crf": 23}),
        ("thumbnails", {"count": 0, "columns": 4, "width": 320}),
    ],
)
def test_bad_option_exits_1_with_one_line(name, options, clips, out_dir, tmp_path):
    result = run_module(name, clips["av"], out_dir / OUTPUT_NAMES[name], tmp_path, **options)
    assert result.returncode == 1
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert list(out_dir.iterdir()) == []


def test_sigterm_leaves_no_partial_output(tmp_path, out_dir):
    """chute stops a module with SIGTERM on timeout: no half-written proxy stays."""
    source = make_clip(tmp_path / "long.mp4", seconds=10.0, width=640, height=360)
    process = subprocess.Popen(
        _argv(source, out_dir / "proxy.mp4", {"height": 360, "crf": 23}),
        cwd=MODULES / "proxy",
        env=_environ("proxy", tmp_path),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        first = process.stdout.readline()  # printed once encoding has begun
        assert first.startswith("CHUTE_PROGRESS")
        process.send_signal(signal.SIGTERM)
        process.communicate(timeout=RUN_TIMEOUT)
    finally:
        process.kill()
        process.wait()
    assert process.returncode == 128 + signal.SIGTERM
    assert list(out_dir.iterdir()) == []


# --- what each module makes ----------------------------------------------------


def test_example_module_wav_has_every_sample(clips, out_dir, tmp_path):
    """PCM in, PCM out: the same rate, channels and number of samples."""
    wav = out_dir / "audio.wav"
    result = run_module("example_module", clips["pcm_ntsc"], wav, tmp_path)
    assert result.returncode == 0, result.stderr
    with av.open(str(wav)) as container:
        stream = container.streams.audio[0]
        assert stream.codec_context.name == "pcm_s16le"
        assert stream.sample_rate == 44100
        assert stream.channels == 2
        samples = sum(frame.samples for frame in container.decode(stream))
    assert samples == 2 * 44100


def test_example_module_wav_from_aac_lasts_as_long(clips, out_dir, tmp_path):
    """AAC in: the WAV lasts as long as the source's sound, within one AAC frame."""
    wav = out_dir / "audio.wav"
    result = run_module("example_module", clips["av"], wav, tmp_path)
    assert result.returncode == 0, result.stderr
    with av.open(str(wav)) as container:
        stream = container.streams.audio[0]
        assert (stream.sample_rate, stream.channels) == (44100, 1)
        seconds = sum(frame.samples for frame in container.decode(stream)) / 44100
    assert seconds == pytest.approx(2.0, abs=1024 / 44100)


@pytest.mark.parametrize(
    ("clip", "expected"),
    [
        ("av", {"codecs": ["h264", "aac"], "fps": Fraction(25), "rate": 44100, "channels": 1, "duration": 2.0}),
        (
            "pcm_ntsc",
            {
                "codecs": ["h264", "pcm_s16le"],
                "fps": Fraction(30000, 1001),
                "rate": 44100,
                "channels": 2,
                "duration": 60 / (30000 / 1001),
            },
        ),
    ],
)
def test_probe_reports_what_was_written(clip, expected, clips, out_dir, tmp_path):
    report_file = out_dir / "probe.json"
    result = run_module("probe", clips[clip], report_file, tmp_path)
    assert result.returncode == 0, result.stderr
    report = json.loads(report_file.read_text())
    video, audio = report["streams"]
    assert [video["codec"], audio["codec"]] == expected["codecs"]
    assert (video["width"], video["height"]) == (320, 240)
    assert video["display_aspect_ratio"] == "4:3"
    fps = expected["fps"]
    assert video["frame_rate"] == f"{fps.numerator}/{fps.denominator}"
    assert video["fps"] == pytest.approx(float(fps))
    assert video["frame_count"] == round(float(fps) * 2.0)
    assert video["field_order"] == "progressive"
    assert (audio["sample_rate"], audio["channels"]) == (expected["rate"], expected["channels"])
    assert report["container"]["duration_s"] == pytest.approx(expected["duration"], abs=0.03)
    assert report["container"]["bit_rate"] > 0


def test_thumbnails_sheet_size_and_order(clips, out_dir, tmp_path):
    """Size from the README formula; tiles show the shots in time order."""
    sheet_file = out_dir / "sheet.jpg"
    count, columns, width = 5, 3, 160
    result = run_module("thumbnails", clips["cuts"], sheet_file, tmp_path, count=count, columns=columns, width=width)
    assert result.returncode == 0, result.stderr
    tile_height = max(2, 2 * round(width / (320 / 180) / 2))  # 16:9 source -> 90
    rows = math.ceil(count / columns)
    with Image.open(sheet_file) as sheet:
        assert sheet.format == "JPEG"
        assert sheet.size == (columns * width, rows * tile_height) == (480, 180)
        corners = [
            sheet.getpixel((c * width + 2, r * tile_height + 2)) for r, c in (divmod(i, columns) for i in range(count))
        ]
    # Frames at 0.4, 1.2, 2.0, 2.8, 3.6 s; cuts at 1.0 and 2.48 s. The first bar
    # of each shot's palette (tests/media.py) is light grey, dark blue, dark red.
    shots = [(235, 235, 235), (16, 16, 120), (16, 16, 120), (128, 16, 16), (128, 16, 16)]
    for corner, colour in zip(corners, shots):
        assert np.abs(np.subtract(corner, colour)).max() < 30, (corners, shots)


def load_module(name):
    """A bundled module's main.py as a Python module (its pure functions)."""
    spec = importlib.util.spec_from_file_location(f"_module_{name}", MODULES / name / "main.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def sheet_tiles(sheet_file, count, columns, width):
    """[(tile as the JPEG comment describes it, frame index stamped on the tile)]."""
    with Image.open(sheet_file) as sheet:
        described = json.loads(sheet.info["comment"])
        pixels = np.asarray(sheet.convert("RGB"))
    height = pixels.shape[0] // math.ceil(count / columns)
    stamps = []
    for index in range(count):
        row, column = divmod(index, columns)
        tile = pixels[row * height : (row + 1) * height, column * width : (column + 1) * width]
        stamps.append(read_stamp(tile))
    assert described["schema"] == "chute.thumbnails/1"
    return list(zip(described["tiles"], stamps))


# Each clip drives the module down other ways to its tiles (see choose() in
# modules/thumbnails/main.py); on every one, the frame a tile shows (its
# stamp) is the one its label names, and lies in the tile's slice.
@pytest.mark.parametrize(
    ("name", "clip_options", "count", "ways"),
    [
        # A keyframe every second, slices of 2 s: one inside each.
        ("keyframes", {"seconds": 8.0, "gop": 1.0}, 4, {"keyframe"}),
        # One keyframe for the whole clip: a linear pass.
        ("one_keyframe", {"seconds": 4.0, "gop": None}, 6, {"keyframe", "continue"}),
        # B-frames (shown in another order than decoded, some skipped), GOP 4 s, slices 1 s.
        ("bframes", {"seconds": 8.0, "gop": 4.0, "bframes": True}, 8, {"keyframe", "continue"}),
        # MPEG-TS: no index, so seeks land where they may.
        ("ts_short_gop", {"seconds": 6.0, "gop": 1.0, "suffix": ".ts"}, 4, {"seek"}),
        ("ts_long_gop", {"seconds": 6.0, "gop": 4.0, "suffix": ".ts"}, 4, {"seek"}),
    ],
)
def test_thumbnails_tiles_show_the_frames_their_labels_say(name, clip_options, count, ways, out_dir, tmp_path):
    options = dict(clip_options)
    suffix = options.pop("suffix", ".mp4")
    source = make_clip(tmp_path / f"{name}{suffix}", width=320, height=180, fps=25, audio=False, stamp=True, **options)
    sheet_file = out_dir / "sheet.jpg"
    result = run_module("thumbnails", source, sheet_file, tmp_path, count=count, columns=4, width=160)
    assert result.returncode == 0, result.stderr
    tiles = sheet_tiles(sheet_file, count, 4, 160)
    slice_s = options["seconds"] / count
    for index, (tile, stamp) in enumerate(tiles):
        assert stamp == round(tile["time_s"] * 25), (index, tiles)
        assert tile["timecode"] == format_timecode(tile["time_s"])
        assert index * slice_s <= tile["time_s"] < (index + 1) * slice_s, (index, tiles)
    assert {tile["reached_by"] for tile, _ in tiles} == ways, tiles


def test_thumbnails_keyframes_only_tiles_are_keyframes(out_dir, tmp_path):
    """With a keyframe in every slice, every tile is one (and the nearest to its middle)."""
    source = make_clip(tmp_path / "gop1.mp4", seconds=9.0, width=320, height=180, audio=False, stamp=True, gop=1.0)
    sheet_file = out_dir / "sheet.jpg"
    result = run_module("thumbnails", source, sheet_file, tmp_path, count=3, columns=3, width=160)
    assert result.returncode == 0, result.stderr
    tiles = sheet_tiles(sheet_file, 3, 3, 160)
    # Slices of 3 s, middles at 1.5, 4.5 and 7.5 s: keyframes 1 (or 2), 4 (or 5), 7 (or 8).
    assert all(tile["keyframe"] for tile, _ in tiles)
    assert [stamp % 25 for _, stamp in tiles] == [0, 0, 0]
    assert [abs(tile["time_s"] - middle) for (tile, _), middle in zip(tiles, (1.5, 4.5, 7.5))] == [0.5, 0.5, 0.5]


@pytest.mark.parametrize(
    ("tile", "position", "before", "expected"),
    [
        # A keyframe inside the slice costs a seek, whatever the distance.
        ((0, 100, 50, 40), None, 0, "keyframe"),
        # ... but decoding on for two frames is cheaper still.
        ((0, 100, 50, 40), 48, 0, "continue"),
        # No keyframe in the slice: on from a nearby position...
        ((100, 200, 150, None), 90, 0, "continue"),
        # ... or back to the keyframe before, when that is much nearer than the position.
        ((100, 200, 150, None), 10, 95, "seek"),
        # The decoder cannot go on (it skipped to keyframes) and has to seek.
        ((100, 200, 150, None), None, 0, "seek"),
        # The position is past the target: only a seek goes back.
        ((100, 200, 150, None), 160, 0, "seek"),
        # No index: a seek is assumed to land close.
        ((100, 200, 150, None), 60, None, "seek"),
    ],
)
def test_thumbnails_choose_the_cheapest_way(tile, position, before, expected):
    thumbnails = load_module("thumbnails")
    assert thumbnails.choose(thumbnails.Tile(*tile), position, before, frame_ticks=1) == expected


def test_thumbnails_plan_slices_and_their_nearest_keyframes():
    thumbnails = load_module("thumbnails")
    tiles = thumbnails.plan(start=10, length=300, count=3, keyframes=[10, 60, 100, 250, 300])
    assert [(t.low, t.high, t.target) for t in tiles] == [(10, 110, 60), (110, 210, 160), (210, 310, 260)]
    assert [t.keyframe for t in tiles] == [60, None, 250]
    assert [t.keyframe for t in thumbnails.plan(0, 300, 3, None)] == [None, None, None]


def test_proxy_size_duration_faststart_and_sound(clips, out_dir, tmp_path):
    proxy = out_dir / "proxy.mp4"
    result = run_module("proxy", clips["av"], proxy, tmp_path, height=120, crf=30)
    assert result.returncode == 0, result.stderr
    with av.open(str(clips["av"])) as source, av.open(str(proxy)) as made:
        video_in, video = source.streams.video[0], made.streams.video[0]
        frame = 1 / float(video_in.average_rate)
        assert (video.codec_context.width, video.codec_context.height) == (160, 120)
        assert video.codec_context.name == "h264"
        assert float(video.duration * video.time_base) == pytest.approx(
            float(video_in.duration * video_in.time_base), abs=frame
        )
        assert made.duration / 1e6 == pytest.approx(source.duration / 1e6, abs=frame)
        (audio,) = made.streams.audio
        assert audio.codec_context.name == "aac"
        assert (audio.sample_rate, audio.channels) == (48000, 2)
    boxes = top_level_boxes(proxy)
    assert boxes.index("moov") < boxes.index("mdat"), boxes


def test_proxy_keeps_every_frame_and_its_time(out_dir, tmp_path):
    """Frame-threaded decoding and encoding lose no frame, not even the last ones."""
    source = make_clip(tmp_path / "bframes.mp4", seconds=3.0, width=320, height=180, bframes=True, gop=2.0, stamp=True)
    proxy = out_dir / "proxy.mp4"
    result = run_module("proxy", source, proxy, tmp_path, height=180, crf=18)
    assert result.returncode == 0, result.stderr

    def shown(path):
        with av.open(str(path)) as container:
            stream = container.streams.video[0]
            start = stream.start_time or 0
            return [
                (float((f.pts - start) * stream.time_base), read_stamp(f.to_ndarray(format="rgb24")))
                for f in container.decode(stream)
            ]

    made, original = shown(proxy), shown(source)
    assert len(made) == len(original) == 75
    assert [stamp for _, stamp in made] == list(range(75))
    assert [t for t, _ in made] == pytest.approx([t for t, _ in original], abs=1e-6)


def test_proxy_of_silent_widescreen_has_no_sound(clips, out_dir, tmp_path):
    proxy = out_dir / "proxy.mp4"
    result = run_module("proxy", clips["silent_169"], proxy, tmp_path, height=100, crf=30)
    assert result.returncode == 0, result.stderr
    with av.open(str(proxy)) as made:
        assert len(made.streams.audio) == 0
        width = made.streams.video[0].codec_context.width
        height = made.streams.video[0].codec_context.height
    assert height == 100
    assert width % 2 == 0
    assert abs(width - 100 * 16 / 9) <= 1  # 177.8 -> 178


# The theory, per ITU-R BS.1770-4: L = -0.691 + 10 log10(sum_i G_i * z_i), z_i
# the mean square of K-weighted channel i, G = 1.0 for L, R and C. The -0.691
# offsets the K-filter's +0.691 dB at 997 Hz, so that a 0 dBFS 997 Hz sine in
# one channel reads -3.01 LUFS (10 log10 of a sine's mean square, 1/2). At 1000
# Hz the K-filter differs from 997 Hz by far less than 0.01 dB. A -20 dBFS-peak
# sine therefore reads -23.01 LUFS in one channel (mono, weighted as one front
# channel) and 3.01 dB more, -20.00 LUFS, when both stereo channels carry it.
def expected_lufs(tone_dbfs, channels):
    return tone_dbfs - 3.01 + 10 * math.log10(channels)


@pytest.mark.parametrize(("suffix", "channels"), [(".wav", 1), (".wav", 2), (".mp4", 2)])
def test_loudness_of_a_tone(suffix, channels, out_dir, tmp_path):
    source = make_clip(
        tmp_path / f"tone{suffix}", seconds=5.0, channels=channels, tone_hz=1000, tone_dbfs=-20.0, audio_only=True
    )
    report_file = out_dir / "loudness.json"
    result = run_module("loudness", source, report_file, tmp_path)
    assert result.returncode == 0, result.stderr
    report = json.loads(report_file.read_text())
    samples = tone(5.0, 48000, 1000, -20.0, channels)
    direct = pyloudnorm.Meter(48000).integrated_loudness(samples)
    assert report["integrated_lufs"] == pytest.approx(direct, abs=0.5)
    assert report["integrated_lufs"] == pytest.approx(expected_lufs(-20.0, channels), abs=1.0)
    # A 1 kHz sine at 48 kHz has its true peak at its sample peak; AAC may
    # overshoot a little.
    assert report["true_peak_dbtp"] == pytest.approx(-20.0, abs=0.1 if suffix == ".wav" else 1.5)
    assert report["loudness_range_lu"] == pytest.approx(0.0, abs=0.5)  # a steady tone
    assert report["channels"] == channels


# EBU Tech 3341 (loudness) and 3342 (loudness range) test signals: stereo
# 997 Hz sine segments (seconds, dBFS peak), with the values a compliant
# meter must read, +-0.1 LU and +-1 LU. They check the gating, not just the
# weighting.
@pytest.mark.parametrize(
    ("case", "segments", "lufs", "lra"),
    [
        ("3341 case 3", [(10, -36), (60, -23), (10, -36)], -23.0, None),
        ("3341 case 5", [(20, -26), (20.1, -20), (20, -26)], -23.0, None),
        ("3342 case 1", [(20, -20), (20, -30)], None, 10.0),
        ("3342 case 3", [(20, -40), (20, -20)], None, 20.0),
    ],
)
def test_loudness_of_the_ebu_test_signals(case, segments, lufs, lra, out_dir, tmp_path):
    source = make_tones(tmp_path / "ebu.wav", segments)
    report_file = out_dir / "loudness.json"
    result = run_module("loudness", source, report_file, tmp_path)
    assert result.returncode == 0, result.stderr
    report = json.loads(report_file.read_text())
    if lufs is not None:
        assert report["integrated_lufs"] == pytest.approx(lufs, abs=0.1), case
    if lra is not None:
        assert report["loudness_range_lu"] == pytest.approx(lra, abs=1.0), case


@pytest.mark.parametrize(
    ("layout", "weights"),
    [
        ("5.1", 1 + 1 + 1 + 1.41 + 1.41),  # L R C at 1.0, surrounds at 1.41, LFE not counted
        ("quad", 1 + 1 + 1.41 + 1.41),
    ],
)
def test_loudness_weights_surround_channels(layout, weights, out_dir, tmp_path):
    """BS.1770-4 channel weights: the same -20 dBFS tone in every channel."""
    source = make_tones(tmp_path / "surround.wav", [(5.0, -20.0)], layout=layout)
    report_file = out_dir / "loudness.json"
    result = run_module("loudness", source, report_file, tmp_path)
    assert result.returncode == 0, result.stderr
    report = json.loads(report_file.read_text())
    assert report["channel_layout"] == layout
    assert report["integrated_lufs"] == pytest.approx(-20.0 - 3.01 + 10 * math.log10(weights), abs=0.1)


@pytest.mark.parametrize(("seconds", "dbfs"), [(5.0, -200.0), (0.3, -20.0)])
def test_loudness_of_silence_or_a_blip_is_null(seconds, dbfs, out_dir, tmp_path):
    """BS.1770 defines no integrated loudness for silence or under one 400 ms block."""
    source = make_clip(tmp_path / "quiet.wav", seconds=seconds, tone_dbfs=dbfs)
    report_file = out_dir / "loudness.json"
    result = run_module("loudness", source, report_file, tmp_path)
    assert result.returncode == 0, result.stderr
    report = json.loads(report_file.read_text())
    assert report["integrated_lufs"] is None
    assert report["loudness_range_lu"] is None
    assert report["duration_s"] == pytest.approx(seconds, abs=0.001)


def test_waveform_size_and_level(out_dir, tmp_path):
    """A -6 dBFS tone fills the middle half of the picture, edge to edge."""
    source = make_clip(tmp_path / "tone.wav", seconds=2.0, tone_dbfs=-6.0206)  # peak 0.5
    picture_file = out_dir / "waveform.png"
    result = run_module("waveform", source, picture_file, tmp_path, width=300, height=101)
    assert result.returncode == 0, result.stderr
    with Image.open(picture_file) as picture:
        assert picture.format == "PNG"
        assert picture.size == (300, 101)
        pixels = np.asarray(picture.convert("RGB")).astype(int)
    background = pixels[0, 0]
    painted = np.abs(pixels - background).sum(axis=2) > 60
    rows = np.flatnonzero(painted.all(axis=1))  # rows painted in every column
    # +0.5 and -0.5 on a 101-row scale from +1 (row 0) to -1 (row 100).
    assert (rows.min(), rows.max()) == (25, 75)
    assert not painted[:20].any() and not painted[-20:].any()


def test_scenes_finds_the_cuts(clips, out_dir, tmp_path):
    report_file = out_dir / "scenes.json"
    result = run_module("scenes", clips["cuts"], report_file, tmp_path, threshold=27.0)
    assert result.returncode == 0, result.stderr
    report = json.loads(report_file.read_text())
    found = [cut["time_s"] for cut in report["cuts"]]
    assert found == pytest.approx([1.0, 2.48], abs=2 / 25)
    assert [cut["timecode"] for cut in report["cuts"]] == ["00:00:01.000", "00:00:02.480"]
    assert all(cut["score"] >= 27.0 for cut in report["cuts"])
    assert len(report["scenes"]) == 3


def test_scenes_threshold_above_every_change_finds_none(clips, out_dir, tmp_path):
    report_file = out_dir / "scenes.json"
    result = run_module("scenes", clips["cuts"], report_file, tmp_path, threshold=200.0)
    assert result.returncode == 0, result.stderr
    report = json.loads(report_file.read_text())
    assert report["cuts"] == []
    assert len(report["scenes"]) == 1


# --- the bundled jobs, through `chute submit` ------------------------------------


def chute_command():
    script = Path(sys.executable).with_name("chute")
    return [str(script)] if script.exists() else [sys.executable, "-m", "chute.cli"]


def test_submit_media_ingest_publishes_the_public_artifacts(tmp_path):
    source = make_clip(tmp_path / "clip.mp4", seconds=2.0)  # 4:3, stereo -20 dBFS tone
    config = tmp_path / "config.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "modules_path": [str(MODULES)],
                "jobs_path": [str(JOBS)],
                "state_dir": str(tmp_path / "state"),
                "work_dir": str(tmp_path / "work"),
                "log": {"format": "json"},
                "inboxes": [
                    {
                        "path": str(tmp_path / "inbox"),
                        "job": "media_ingest",
                        "outbox": str(tmp_path / "outbox"),
                        "quarantine": str(tmp_path / "quarantine"),
                        "on_success": "delete",
                    }
                ],
            }
        )
    )
    result = subprocess.run(
        [*chute_command(), "submit", str(source), "--job", "media_ingest", "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    (published,) = (tmp_path / "outbox").iterdir()
    names = sorted(path.name for path in published.iterdir())
    assert names == sorted(
        ["contact_sheet.jpg", "loudness.json", "manifest.json", "probe.json", "proxy.mp4", "waveform.png"]
    )
    manifest = json.loads((published / "manifest.json").read_text())
    assert manifest["status"] == "succeeded"
    assert sorted(a["name"] for a in manifest["artifacts"]) == [n for n in names if n != "manifest.json"]
    loudness = json.loads((published / "loudness.json").read_text())
    assert loudness["integrated_lufs"] == pytest.approx(expected_lufs(-20.0, 2), abs=1.0)
    assert loudness["loudness_range_lu"] is None  # 2 s: too short for a range
    with Image.open(published / "contact_sheet.jpg") as sheet:
        assert sheet.size == (4 * 320, 3 * 240)  # 12 tiles of 320x240 in 4 columns
    with Image.open(published / "waveform.png") as picture:
        assert picture.size == (1200, 240)
    with av.open(str(published / "proxy.mp4")) as proxy:
        assert proxy.streams.video[0].codec_context.height == 360
    assert json.loads((published / "probe.json").read_text())["streams"][0]["codec"] == "h264"
    assert source.exists()  # submit reads the file in place
