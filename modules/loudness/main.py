"""Measure EBU R128 loudness of the first audio stream of a file.

Nothing here re-implements ITU-R BS.1770: every value comes from FFmpeg's
ebur128 filter (BS.1770-4 gating, EBU Tech 3342 range, true peak), run
through PyAV's filter graph on the decoded samples as they come, so memory
stays small however long the file is. The filter weights the channels by
their names (L, R, C at 1.0, surrounds at 1.41, LFE left out); the JSON
says which implementation gave each number.
"""

import math

from chute.extras import require_media

require_media()  # without chute[media]: one line and exit 1, not an ImportError

import av
import av.filter

from chute.modkit import UnusableInput, decode, open_media, progress, run, write_json

SCHEMA = "chute.loudness/1"

ABSOLUTE_GATE = -70.0  # LUFS (BS.1770-4, EBU Tech 3342)
# EBU Tech 3342's range is a 10th-95th percentile spread of 3 s short-term
# values, sampled 10 times a second. With only a handful of values ffmpeg's
# histogram puts the 10th percentile at the relative gate and reports 20 LU
# for a steady tone; below one second's worth of values, report no range.
MIN_SHORT_TERMS = 10

TRUE_PEAK_METHOD = "FFmpeg ebur128 filter: signal upsampled to 192 kHz (4x at 48 kHz), ITU-R BS.1770-4 Annex 2"
RANGE_METHOD = "FFmpeg ebur128 filter (EBU Tech 3342); null under 4 s of sound"
INTEGRATED_METHOD = "FFmpeg ebur128 filter (ITU-R BS.1770-4)"


def main(args):
    with open_media(args.input, need="audio") as container:
        stream = container.streams.audio[0]
        meter = _Ebur128(stream)
        duration = _seconds(container, stream)
        decoded = 0
        for frame in decode(container, stream):
            meter.push(frame)
            decoded += frame.samples
            if duration and frame.time is not None:
                progress(frame.time / duration)
        if decoded == 0:
            raise UnusableInput("the audio stream holds no decodable samples")
        meter.push(None)
        report = _report(stream, meter, decoded / stream.codec_context.sample_rate)
    write_json(args.output, report)
    progress(1.0)


def _report(stream, meter, seconds):
    context = stream.codec_context
    return {
        "schema": SCHEMA,
        "integrated_lufs": _rounded(_gated(meter.integrated)),
        "loudness_range_lu": _rounded(meter.loudness_range if meter.short_terms >= MIN_SHORT_TERMS else None),
        "true_peak_dbtp": _rounded(_decibels(meter.true_peak)),
        "sample_peak_dbfs": _rounded(_decibels(meter.sample_peak)),
        "duration_s": round(seconds, 3),
        "sample_rate": context.sample_rate,
        "channels": context.channels,
        "channel_layout": context.layout.name,
        "method": {
            "integrated": INTEGRATED_METHOD,
            "loudness_range": RANGE_METHOD,
            "true_peak": TRUE_PEAK_METHOD,
        },
    }


class _Ebur128:
    """FFmpeg's ebur128 filter in a PyAV graph, read through frame metadata."""

    def __init__(self, stream):
        self.graph = av.filter.Graph()
        source = self.graph.add_abuffer(template=stream)
        meter = self.graph.add("ebur128", "metadata=1:peak=sample+true")
        sink = self.graph.add("abuffersink")
        source.link_to(meter)
        meter.link_to(sink)
        self.graph.configure()
        self.integrated = self.loudness_range = None
        self.true_peak = self.sample_peak = 0.0
        self.short_terms = 0  # 3 s short-term values above the absolute gate

    def push(self, frame):
        self.graph.push(frame)
        while True:
            try:
                measured = self.graph.pull()
            except (av.error.BlockingIOError, av.error.EOFError):
                return
            self._read(measured.metadata)

    def _read(self, metadata):
        # Every output frame carries the running values; the last one wins,
        # peaks are the highest seen.
        if "lavfi.r128.I" in metadata:
            self.integrated = float(metadata["lavfi.r128.I"])
            self.loudness_range = float(metadata["lavfi.r128.LRA"])
        if float(metadata.get("lavfi.r128.S", -120)) >= ABSOLUTE_GATE:
            self.short_terms += 1
        self.true_peak = max(self.true_peak, float(metadata.get("lavfi.r128.true_peak", 0)))
        self.sample_peak = max(self.sample_peak, float(metadata.get("lavfi.r128.sample_peak", 0)))


def _seconds(container, stream):
    if stream.duration:
        return float(stream.duration * stream.time_base)
    return (container.duration or 0) / av.time_base


def _gated(integrated):
    # Silence, or less than one 400 ms block of sound: every block is gated
    # out and the filter reports the gate itself, -70, which is no measurement.
    if integrated is None or integrated <= ABSOLUTE_GATE:
        return None
    return integrated


def _decibels(linear):
    return 20 * math.log10(linear) if linear and linear > 0 else None


def _rounded(value):
    # Silence measures as -inf; JSON has no infinity, so it becomes null.
    if value is None or not math.isfinite(value):
        return None
    return round(float(value), 2)


if __name__ == "__main__":
    run(main, inputs=["input"], outputs=["output"])
