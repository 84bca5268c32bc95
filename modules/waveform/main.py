"""Draw the waveform of the first audio stream of a file as a PNG.

Each pixel column spans an equal share of the samples and shows their
minimum and maximum over all channels, on a scale from -1 (bottom) to +1
(top, full scale). Samples are reduced to per-block minima and maxima as they
are decoded, so memory stays small however long the file is.
"""

from chute.extras import require_media

require_media()  # without chute[media]: one line and exit 1, not an ImportError

import av
import numpy as np
from PIL import Image

from chute.modkit import (
    BadOption,
    Option,
    UnusableInput,
    atomic_output,
    decode,
    open_media,
    progress,
    run,
)

OPTIONS = [Option("width", int, 1200), Option("height", int, 240)]
BACKGROUND = (24, 24, 28)
AXIS = (70, 70, 80)
WAVE = (90, 200, 140)
BLOCKS_PER_COLUMN = 8  # resolution kept while decoding, per output column
MAX_BLOCKS = 1 << 20  # past this (a duration far off), halve the resolution


def main(args):
    _check(args)
    with open_media(args.input, need="audio") as container:
        stream = container.streams.audio[0]
        duration = _seconds(container, stream)
        rate = stream.codec_context.sample_rate or 48000
        envelope = _Envelope(_block_size(duration * rate, args.width, rate))
        resampler = av.AudioResampler(format="fltp")
        for frame in decode(container, stream):
            for chunk in resampler.resample(frame):
                envelope.add(chunk.to_ndarray())
            if duration and frame.time is not None:
                progress(frame.time / duration)
        lows, highs = envelope.columns(args.width)
    image = _draw(lows, highs, args.height)
    with atomic_output(args.output) as temporary:
        image.save(temporary, format="PNG")
    progress(1.0)


def _check(args):
    if not 16 <= args.width <= 16384:
        raise BadOption(f"width must be 16 to 16384 pixels, not {args.width}")
    if not 16 <= args.height <= 4096:
        raise BadOption(f"height must be 16 to 4096 pixels, not {args.height}")


def _block_size(expected_samples, width, rate):
    if expected_samples <= 0:
        return max(1, rate // 100)  # duration unknown: 10 ms blocks
    return max(1, int(expected_samples // (width * BLOCKS_PER_COLUMN)))


class _Envelope:
    """Minimum and maximum of every ``block`` samples, all channels together."""

    def __init__(self, block):
        self.block = block
        self.lows, self.highs = [], []
        self.count = 0
        self.carry = np.empty((2, 0), np.float32)

    def add(self, planes):
        # Per sample: lowest and highest value over the channels.
        samples = np.concatenate([self.carry, np.stack([planes.min(axis=0), planes.max(axis=0)])], axis=1)
        whole = samples.shape[1] // self.block * self.block
        self.carry = samples[:, whole:]
        if whole:
            blocks = samples[:, :whole].reshape(2, -1, self.block)
            self.lows.append(blocks[0].min(axis=1))
            self.highs.append(blocks[1].max(axis=1))
            self.count += blocks.shape[1]
        if self.count > MAX_BLOCKS:
            self._halve()

    def columns(self, width):
        """(lows, highs), one value per pixel column."""
        if self.carry.shape[1]:
            self.lows.append(self.carry[0:1].min(axis=1))
            self.highs.append(self.carry[1:2].max(axis=1))
        if not self.lows:
            raise UnusableInput("the audio stream holds no decodable samples")
        lows, highs = np.concatenate(self.lows), np.concatenate(self.highs)
        starts = np.arange(width) * len(lows) // width
        return np.minimum.reduceat(lows, starts), np.maximum.reduceat(highs, starts)

    def _halve(self):
        lows, highs = np.concatenate(self.lows), np.concatenate(self.highs)
        if len(lows) % 2:  # repeat the last block; shifts later ones < 1 block
            lows, highs = np.append(lows, lows[-1]), np.append(highs, highs[-1])
        self.lows = [lows.reshape(-1, 2).min(axis=1)]
        self.highs = [highs.reshape(-1, 2).max(axis=1)]
        self.count = len(self.lows[0])
        self.block *= 2


def _draw(lows, highs, height):
    """Paint each column from its maximum down to its minimum."""

    def row(value):
        return np.round((1 - np.clip(value, -1, 1)) / 2 * (height - 1)).astype(int)

    top, bottom = row(highs), row(lows)
    rows = np.arange(height)[:, None]
    picture = np.empty((height, len(lows), 3), np.uint8)
    picture[:] = BACKGROUND
    picture[(height - 1) // 2 : height // 2 + 1] = AXIS
    picture[(rows >= top) & (rows <= bottom)] = WAVE
    return Image.fromarray(picture, "RGB")


def _seconds(container, stream):
    if stream.duration:
        return float(stream.duration * stream.time_base)
    return (container.duration or 0) / av.time_base


if __name__ == "__main__":
    run(main, inputs=["input"], outputs=["output"], options=OPTIONS)
