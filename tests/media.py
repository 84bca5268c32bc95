"""Synthetic media for the test suite, written with PyAV (no system ffmpeg).

``make_clip`` writes a small clip whose every property is known: colour bars
with a moving box, hard cuts at chosen times (each shot has its own palette),
and a sine tone of known frequency and peak level. ``truncate`` cuts a file
short, as an interrupted copy would.

The container follows the file name's extension:

- ``.mp4``: H.264 + AAC, the everyday case. AAC is lossy and works in
  1024-sample frames: its priming is hidden on decode by the MP4 edit list,
  but the decoded sound runs to a whole frame (up to 21 ms more than written)
  and its levels are close to, not exactly, the generated ones.
- ``.mov``: H.264 + 16-bit PCM, for tests that need the exact audio level or
  sample count together with a picture.
- ``.wav``: 16-bit PCM, audio only (``audio_only`` is implied).
- ``.ts``: H.264 + AAC in MPEG-TS, a container with no index: a reader
  cannot know where the keyframes are without reading the whole file.

``stamp=True`` paints every frame's index as a binary code across the top
of the picture (``read_stamp`` reads it back, also from a scaled copy), so a
test can tell exactly which frame a picture shows.

The moov atom of ``.mp4``/``.mov`` is written at the end (FFmpeg's default),
so ``truncate`` leaves a file that no demuxer can open.
"""

from __future__ import annotations

import heapq
import math
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

__all__ = ["make_clip", "make_tones", "read_stamp", "tone", "truncate"]

# One palette per shot; cut k switches to _PALETTES[k % len]. Neighbours differ
# in every bar, so a content detector sees each cut as a complete change.
_PALETTES = (
    ((235, 235, 235), (235, 235, 16), (16, 235, 235), (16, 235, 16), (235, 16, 235), (235, 16, 16), (16, 16, 235)),
    ((16, 16, 120), (200, 40, 16), (40, 16, 90), (230, 140, 16), (16, 90, 40), (120, 200, 230), (90, 40, 160)),
    ((128, 16, 16), (16, 128, 16), (16, 16, 16), (180, 180, 16), (16, 64, 200), (220, 220, 220), (64, 16, 100)),
)
_BOX = (255, 128, 0)
_PCM_FRAME = 1024  # samples per audio frame we hand to the encoders
STAMP_BITS = 12  # frame indexes up to 4095
_STAMP_ON, _STAMP_OFF = (235, 235, 235), (16, 16, 16)


def make_clip(
    path,
    seconds: float = 2.0,
    width: int = 320,
    height: int = 240,
    fps=25,
    audio: bool = True,
    tone_hz: float = 1000,
    tone_dbfs: float = -20.0,
    cuts=(),
    audio_only: bool = False,
    sample_rate: int = 48000,
    channels: int = 2,
    gop: float | None = 1.0,
    bframes: bool = False,
    stamp: bool = False,
) -> Path:
    """Write a synthetic clip to ``path`` and return it as a Path.

    Args:
        seconds: duration of the tone; the picture has ``round(seconds * fps)``
            frames (2.002 s for 2 s at 30000/1001).
        fps: an int, a Fraction, or a string such as ``"30000/1001"`` (not a
            float: 29.97 is not 30000/1001).
        tone_dbfs: peak level of the sine, in every channel.
        cuts: times in seconds where the picture changes palette; the cut
            happens on the first frame whose start time is at or after it.
        audio_only: no video stream (always so for ``.wav``).
        channels: 1 (mono) or 2 (the same tone in both channels).
        gop: seconds from one keyframe to the next; None: only the first
            frame is a keyframe.
        bframes: encode with B-frames (x264's "fast" preset), so that frames
            are decoded in another order than shown, some of them referred
            to by none; otherwise every frame is a P-frame after the first.
        stamp: paint each frame's index at the top (see ``read_stamp``).
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in (".mp4", ".mov", ".wav", ".ts"):
        raise ValueError(f"make_clip writes .mp4, .mov, .ts or .wav, not {suffix!r}")
    audio_only = audio_only or suffix == ".wav"
    if audio_only and not audio:
        raise ValueError("a clip needs at least one stream")
    rate = Fraction(fps)
    with av.open(str(path), "w") as container:
        frames = []
        if not audio_only:
            video = _add_video(container, rate, width, height, gop, bframes, seconds)
            frames.append(_video_frames(video, rate, seconds, width, height, cuts, stamp))
        if audio:
            sound = _add_audio(container, suffix, sample_rate, channels)
            samples = tone(seconds, sample_rate, tone_hz, tone_dbfs, channels)
            frames.append(_audio_frames(sound, samples))
        # Interleaved in time order, as a real recorder writes them.
        for _, stream, frame in heapq.merge(*frames, key=lambda item: item[0]):
            container.mux(stream.encode(frame))
        for stream in container.streams:
            container.mux(stream.encode(None))
    return path


def tone(
    seconds: float,
    sample_rate: int = 48000,
    tone_hz: float = 1000,
    tone_dbfs: float = -20.0,
    channels: int = 2,
) -> np.ndarray:
    """The exact samples ``make_clip`` writes, as float64 (samples, channels)."""
    count = round(seconds * sample_rate)
    peak = 10 ** (tone_dbfs / 20)
    t = np.arange(count) / sample_rate
    wave = peak * np.sin(2 * math.pi * tone_hz * t)
    # Quantise as the 16-bit PCM encoders will, so PCM clips are bit-exact.
    wave = np.round(wave * 32767) / 32767
    return np.repeat(wave[:, None], channels, axis=1)


def make_tones(path, segments, tone_hz: float = 997, sample_rate: int = 48000, layout: str = "stereo") -> Path:
    """Write a 16-bit WAV of sine segments, one after another, continuous in phase.

    ``segments`` are ``(seconds, dbfs)`` pairs, dbfs the peak level: the
    test signals of EBU Tech 3341 (loudness) and 3342 (loudness range).
    Every channel of ``layout`` (named in the file) carries the same sine.
    """
    counts = [round(seconds * sample_rate) for seconds, _ in segments]
    peaks = np.concatenate([np.full(n, 10 ** (dbfs / 20)) for n, (_, dbfs) in zip(counts, segments)])
    wave = peaks * np.sin(2 * math.pi * tone_hz * np.arange(len(peaks)) / sample_rate)
    pcm = np.round(wave * 32767).astype(np.int16)
    with av.open(str(path), "w", format="wav") as container:
        stream = container.add_stream("pcm_s16le", rate=sample_rate)
        stream.layout = layout
        channels = stream.codec_context.channels
        for start in range(0, len(pcm), _PCM_FRAME):
            chunk = np.repeat(pcm[start : start + _PCM_FRAME, None], channels, axis=1)
            frame = av.AudioFrame.from_ndarray(chunk.reshape(1, -1), format="s16", layout=layout)
            frame.sample_rate, frame.pts = sample_rate, start
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
    return Path(path)


def truncate(path, fraction: float) -> Path:
    """Cut the file at ``path`` to ``fraction`` of its size, in place."""
    path = Path(path)
    size = path.stat().st_size
    with open(path, "r+b") as handle:
        handle.truncate(int(size * fraction))
    return path


def read_stamp(picture: np.ndarray) -> int:
    """The frame index ``stamp=True`` painted on ``picture`` (height, width, 3)."""
    height, width = picture.shape[:2]
    band = picture[: max(1, _stamp_height(height) * 3 // 4)].astype(int)
    edges = np.linspace(0, width, STAMP_BITS + 1).astype(int)
    bits = [band[:, (left + right) // 2].mean() > 128 for left, right in zip(edges[:-1], edges[1:])]
    return sum(1 << bit for bit, on in enumerate(reversed(bits)) if on)


def _stamp_height(height):
    return max(8, height // 8)


def _add_video(container, rate, width, height, gop, bframes, seconds):
    stream = container.add_stream("libx264", rate=rate)
    stream.width = width
    stream.height = height
    stream.pix_fmt = "yuv420p"
    # By default a keyframe every second, as broadcast files have: seeking is tested.
    interval = round(rate * (seconds + 1 if gop is None else Fraction(gop)))
    stream.codec_context.gop_size = max(1, interval)
    if bframes:
        # No keyframes at scene changes: keyframes come exactly every `gop`.
        stream.codec_context.options = {"preset": "fast", "x264-params": "scenecut=0"}
    else:
        stream.codec_context.options = {"preset": "ultrafast", "tune": "zerolatency"}
    return stream


def _add_audio(container, suffix, sample_rate, channels):
    layout = {1: "mono", 2: "stereo"}[channels]
    codec = "pcm_s16le" if suffix in (".mov", ".wav") else "aac"
    stream = container.add_stream(codec, rate=sample_rate)
    stream.layout = layout
    stream.format = "fltp" if codec == "aac" else "s16"
    return stream


def _video_frames(stream, rate, seconds, width, height, cuts, stamp):
    count = round(seconds * rate)
    bars = [_bars(palette, width, height) for palette in _PALETTES]
    cut_frames = sorted(math.ceil(Fraction(cut) * rate) for cut in cuts)
    box = max(8, height // 6)
    per_second = max(1, round(rate))
    for index in range(count):
        shot = sum(1 for cut in cut_frames if index >= cut)
        picture = bars[shot % len(bars)].copy()
        # The box crosses the frame once a second; it gives the encoder real
        # motion and the scene detector small, sub-threshold changes.
        x = (index % per_second) * (width - box) // per_second
        y = (height - box) // 2
        picture[y : y + box, x : x + box] = _BOX
        if stamp:
            _stamp(picture, index)
        frame = av.VideoFrame.from_ndarray(picture, format="rgb24")
        frame.pts = index
        yield index / rate, stream, frame


def _stamp(picture, index):
    height, width = picture.shape[:2]
    edges = np.linspace(0, width, STAMP_BITS + 1).astype(int)
    for bit, (left, right) in enumerate(zip(edges[:-1], edges[1:])):
        on = index >> (STAMP_BITS - 1 - bit) & 1
        picture[: _stamp_height(height), left:right] = _STAMP_ON if on else _STAMP_OFF


def _bars(palette, width, height):
    picture = np.zeros((height, width, 3), dtype=np.uint8)
    edges = np.linspace(0, width, len(palette) + 1).astype(int)
    for colour, left, right in zip(palette, edges[:-1], edges[1:]):
        picture[:, left:right] = colour
    return picture


def _audio_frames(stream, samples):
    planar = stream.format.is_planar
    for start in range(0, len(samples), _PCM_FRAME):
        chunk = samples[start : start + _PCM_FRAME]
        if planar:
            array = np.ascontiguousarray(chunk.T, dtype=np.float32)
        else:
            array = np.round(chunk * 32767).astype(np.int16).reshape(1, -1)
        frame = av.AudioFrame.from_ndarray(array, format=stream.format.name, layout=stream.layout.name)
        frame.sample_rate = stream.sample_rate
        frame.pts = start
        yield Fraction(start, stream.sample_rate), stream, frame
