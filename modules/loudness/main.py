"""Measure EBU R128 loudness of the first audio stream of a file.

Nothing here re-implements ITU-R BS.1770: the integrated loudness comes from
pyloudnorm, the loudness range and the true peak from FFmpeg's ebur128
filter, run through PyAV's filter graph on the same decoded samples. Both
implement BS.1770-4 gating; the JSON says which one gave each number.

pyloudnorm needs the whole signal in memory, so it is used while the decoded
audio fits PYLOUDNORM_BUDGET samples (5.8 minutes of 48 kHz stereo);
beyond that, or for channel layouts pyloudnorm does not weight (it knows
L, R, C, Ls, Rs), the integrated value is ebur128's as well.
"""

import math
from importlib.metadata import version

from chute.extras import require_media

require_media()  # without chute[media]: one line and exit 1, not an ImportError

import av
import av.filter
import numpy as np
import pyloudnorm

from chute.modkit import UnusableInput, decode, open_media, progress, run, write_json

SCHEMA = "chute.loudness/1"
# Samples over all channels kept for pyloudnorm: 128 MiB as float32, about
# three times that at its peak while it filters.
PYLOUDNORM_BUDGET = 2**25

# BS.1770 channel slots in pyloudnorm's order [L, R, C, Ls, Rs]; LFE is not
# measured at all (BS.1770-4 §2.3).
SLOTS = {"FL": 0, "FR": 1, "FC": 2, "BL": 3, "SL": 3, "BR": 4, "SR": 4}
IGNORED = {"LFE", "LFE2"}

ABSOLUTE_GATE = -70.0  # LUFS (BS.1770-4, EBU Tech 3342)
# EBU Tech 3342's range is a 10th-95th percentile spread of 3 s short-term
# values, sampled 10 times a second. With only a handful of values ffmpeg's
# histogram puts the 10th percentile at the relative gate and reports 20 LU
# for a steady tone; below one second's worth of values, report no range.
MIN_SHORT_TERMS = 10

TRUE_PEAK_METHOD = (
    "FFmpeg ebur128 filter: signal upsampled to 192 kHz (4x at 48 kHz), "
    "ITU-R BS.1770-4 Annex 2"
)
RANGE_METHOD = "FFmpeg ebur128 filter (EBU Tech 3342); null under 4 s of sound"
PYLOUDNORM_METHOD = f"pyloudnorm {version('pyloudnorm')} (ITU-R BS.1770-4)"
EBUR128_METHOD = "FFmpeg ebur128 filter (ITU-R BS.1770-4)"


def main(args):
    with open_media(args.input, need="audio") as container:
        stream = container.streams.audio[0]
        meter = _Ebur128(stream)
        keeper = _Samples(stream.codec_context.layout)
        duration = _seconds(container, stream)
        decoded = 0
        for frame in decode(container, stream):
            meter.push(frame)
            keeper.add(frame)
            decoded += frame.samples
            if duration and frame.time is not None:
                progress(frame.time / duration)
        if decoded == 0:
            raise UnusableInput("the audio stream holds no decodable samples")
        meter.push(None)
        rate = stream.codec_context.sample_rate
        report = _report(stream, meter, keeper, decoded / rate)
    write_json(args.output, report)
    progress(1.0)


def _report(stream, meter, keeper, seconds):
    integrated, method = meter.integrated, EBUR128_METHOD
    signal = keeper.signal()
    if signal is not None:
        integrated, method = _pyloudnorm(signal, stream.codec_context.sample_rate)
    context = stream.codec_context
    return {
        "schema": SCHEMA,
        "integrated_lufs": _rounded(integrated),
        "loudness_range_lu": _rounded(
            meter.loudness_range if meter.short_terms >= MIN_SHORT_TERMS else None
        ),
        "true_peak_dbtp": _rounded(_decibels(meter.true_peak)),
        "sample_peak_dbfs": _rounded(_decibels(meter.sample_peak)),
        "duration_s": round(seconds, 3),
        "sample_rate": context.sample_rate,
        "channels": context.channels,
        "channel_layout": context.layout.name,
        "method": {
            "integrated": method,
            "loudness_range": RANGE_METHOD,
            "true_peak": TRUE_PEAK_METHOD,
        },
    }


def _pyloudnorm(signal, rate):
    meter = pyloudnorm.Meter(rate)
    if len(signal) < meter.block_size * rate:
        # Shorter than one 400 ms gating block: BS.1770 defines no value.
        return None, PYLOUDNORM_METHOD + ": shorter than one gating block"
    return meter.integrated_loudness(signal), PYLOUDNORM_METHOD


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
        self.sample_peak = max(
            self.sample_peak, float(metadata.get("lavfi.r128.sample_peak", 0))
        )


class _Samples:
    """Decoded samples in pyloudnorm's channel order, while they fit the budget."""

    def __init__(self, layout):
        self.slots = _slots([channel.name for channel in layout.channels])
        self.resampler = av.AudioResampler(format="fltp")
        self.chunks = [] if self.slots is not None else None
        self.kept = 0

    def add(self, frame):
        """Keep a decoded frame (None: the end of the stream)."""
        for chunk in self.resampler.resample(frame) if self.chunks is not None else ():
            planes = chunk.to_ndarray()
            self.kept += planes.size
            if self.kept > PYLOUDNORM_BUDGET:
                self.chunks = None  # too long: ebur128 gives the integrated value
                return
            self.chunks.append(planes)

    def signal(self):
        """The kept samples as (samples, slots) float32, or None."""
        self.add(None)
        if not self.chunks:
            return None
        planes = np.concatenate(self.chunks, axis=1)
        self.chunks = None
        if self.slots == {0: 2}:  # mono: one channel, weighted like L, R or C
            return planes[0]
        signal = np.zeros((planes.shape[1], max(self.slots.values()) + 1), np.float32)
        for channel, slot in self.slots.items():
            signal[:, slot] = planes[channel]
        return signal


def _slots(names):
    """Map channel index -> pyloudnorm slot, or None if pyloudnorm can't weight them."""
    if len(names) == 1:
        return {0: 2}
    if len(names) == 2 and not set(names) <= set(SLOTS):
        names = ["FL", "FR"]  # two channels in no stated order: stereo
    slots = {}
    for index, name in enumerate(names):
        if name in IGNORED:
            continue
        if name not in SLOTS or SLOTS[name] in slots.values():
            return None
        slots[index] = SLOTS[name]
    return slots or None


def _seconds(container, stream):
    if stream.duration:
        return float(stream.duration * stream.time_base)
    return (container.duration or 0) / av.time_base


def _decibels(linear):
    return 20 * math.log10(linear) if linear and linear > 0 else None


def _rounded(value):
    # Silence measures as -inf; JSON has no infinity, so it becomes null.
    if value is None or not math.isfinite(value):
        return None
    return round(float(value), 2)


if __name__ == "__main__":
    run(main, inputs=["input"], outputs=["output"])
