"""Extract the first audio track of a video as a 16-bit PCM WAV file.

The sample rate and the channel layout of the source are kept; only the
sample format changes. See README.md.
"""

from chute.extras import require_media

require_media()  # without chute[media]: one line and exit 1, not an ImportError

import av
from chute.modkit import UnusableInput, atomic_output, decode, open_media, progress, run


def main(args):
    with open_media(args.input, need="audio") as source:
        stream = source.streams.audio[0]
        if not stream.codec_context.sample_rate:
            raise UnusableInput("the audio stream has no sample rate")
        with atomic_output(args.output) as temporary:
            _extract(source, stream, temporary)
    progress(1.0)


def _extract(source, stream, temporary):
    rate = stream.codec_context.sample_rate
    layout = stream.codec_context.layout
    duration = _seconds(source, stream)
    resampler = av.AudioResampler(format="s16", layout=layout, rate=rate)
    # rf64=auto: past 4 GiB the RIFF header would overflow, RF64 does not.
    with av.open(str(temporary), "w", format="wav", options={"rf64": "auto"}) as wav:
        output = wav.add_stream("pcm_s16le", rate=rate)
        output.layout = layout
        written = 0
        for frame in decode(source, stream):
            for chunk in resampler.resample(frame):
                written = _write(wav, output, chunk, written)
            if duration and frame.time is not None:
                progress(frame.time / duration)
        for chunk in resampler.resample(None):
            written = _write(wav, output, chunk, written)
        wav.mux(output.encode(None))
    if written == 0:
        raise UnusableInput("the audio stream holds no decodable samples")


def _write(wav, output, chunk, written):
    # Samples are laid end to end: a WAV file has no timestamps to keep.
    chunk.pts = written
    wav.mux(output.encode(chunk))
    return written + chunk.samples


def _seconds(container, stream):
    if stream.duration:
        return float(stream.duration * stream.time_base)
    return (container.duration or 0) / av.time_base


if __name__ == "__main__":
    run(main, inputs=["input"], outputs=["output"])
