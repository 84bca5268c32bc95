"""Make a browsing proxy: H.264 + AAC in an MP4 that starts playing at once.

- Picture: scaled to ``height`` lines, width from the display aspect ratio,
  both even, square pixels, limited range; frame timestamps are kept as they
  are (variable frame rate stays variable); colour tags are copied from the
  source.
- Sound: the first audio stream, resampled to 48 kHz stereo AAC. A source
  without audio gives a proxy without audio.
- The moov atom is moved to the front (``movflags=faststart``).
"""

import queue
import threading

from chute.extras import require_media

require_media()  # without chute[media]: one line and exit 1, not an ImportError

import av
from av.video.reformatter import ColorRange, VideoReformatter

from chute.modkit import (
    BadOption,
    Option,
    UnusableInput,
    atomic_output,
    decode,
    open_media,
    progress,
    run,
    threaded,
)

OPTIONS = [Option("height", int, 360), Option("crf", int, 23)]
PRESET = "veryfast"  # x264's speed/size trade-off; a proxy favours speed
AUDIO_RATE = 48000
AUDIO_BIT_RATE = 128_000


def main(args):
    _check(args)
    with open_media(args.input, need="video") as source:
        with atomic_output(args.output) as temporary:
            _transcode(source, temporary, args.height, args.crf)
    progress(1.0)


def proxy_size(width, height, sample_aspect, proxy_height):
    """The proxy's (width, height): display aspect kept, width rounded to even."""
    display_aspect = width * sample_aspect / height
    return max(2, 2 * round(proxy_height * display_aspect / 2)), proxy_height


def _check(args):
    if not 16 <= args.height <= 4320 or args.height % 2:
        raise BadOption(f"height must be an even number from 16 to 4320, not {args.height}")
    if not 0 <= args.crf <= 51:
        raise BadOption(f"crf must be 0 to 51, not {args.crf}")


def _transcode(source, temporary, height, crf):
    video_in = source.streams.video[0]
    audio_in = source.streams.audio[0] if source.streams.audio else None
    origin = _seconds(video_in.start_time, video_in.time_base)
    duration = _seconds(video_in.duration, video_in.time_base) or ((source.duration or 0) / av.time_base)
    options = {"movflags": "faststart"}
    with av.open(str(temporary), "w", format="mp4", options=options) as proxy:
        mux = _Muxer(proxy)
        video = _Video(proxy, mux, video_in, height, crf, origin)
        # The sound is encoded on a thread of its own: AAC is a third of the
        # work left on this one, which feeds the decoder's and x264's threads.
        audio = _Worker(_Audio(proxy, mux, origin)) if audio_in is not None else None
        streams = [video_in] + ([audio_in] if audio_in is not None else [])
        try:
            for frame in decode(source, *streams):
                if isinstance(frame, av.VideoFrame):
                    video.write(frame)
                    if duration and frame.time is not None:
                        progress((frame.time - origin) / duration)
                else:
                    audio.write(frame)
            if audio is not None:
                audio.finish()
            video.finish()
        finally:
            if audio is not None:
                audio.stop()  # before the container closes, however this ends
    if not video.frames:
        raise UnusableInput("no picture could be decoded")


class _Video:
    """The proxy's H.264 stream: scales, encodes and muxes source frames."""

    def __init__(self, proxy, mux, source, height, crf, origin):
        context = source.codec_context
        if not context.width or not context.height:
            raise UnusableInput("the video stream has no picture size")
        self.width, self.height = proxy_size(context.width, context.height, source.sample_aspect_ratio or 1, height)
        rate = source.average_rate or source.guessed_rate or 25
        self.mux = mux
        self.stream = proxy.add_stream("libx264", rate=rate)
        self.stream.width, self.stream.height = self.width, self.height
        self.stream.pix_fmt = "yuv420p"
        encoder = self.stream.codec_context
        # The source's time base keeps every timestamp exact (VFR included).
        encoder.time_base = source.time_base
        encoder.options = {"crf": str(crf), "preset": PRESET}
        threaded(encoder)  # x264's frame threads, as the ffmpeg CLI runs it
        # Scaling keeps the YUV matrix, so the source's colour tags stay true;
        # the range becomes limited ("tv"), which every player expects.
        encoder.color_primaries = context.color_primaries
        encoder.color_trc = context.color_trc
        encoder.colorspace = context.colorspace
        encoder.color_range = ColorRange.MPEG
        self.time_base = source.time_base
        self.origin = round(origin / source.time_base)
        self.step = max(1, round(1 / (rate * source.time_base)))
        # One scaler for every frame: frame.reformat() would build a new one
        # (and its threads) each time, which cost more than the encoding.
        self.scaler = VideoReformatter()
        self.last_pts = None
        self.frames = 0

    def write(self, frame):
        pts = frame.pts - self.origin if frame.pts is not None else None
        if pts is None:
            pts = 0 if self.last_pts is None else self.last_pts + self.step
        if self.last_pts is not None and pts <= self.last_pts:
            return  # a repeated timestamp: x264 and the muxer would refuse it
        scaled = self.scaler.reformat(
            frame,
            width=self.width,
            height=self.height,
            format="yuv420p",
            interpolation="AREA",
            dst_color_range=ColorRange.MPEG,
        )
        scaled.pts = pts
        scaled.time_base = self.time_base
        self.mux(self.stream.encode(scaled))
        self.last_pts = pts
        self.frames += 1

    def finish(self):
        self.mux(self.stream.encode(None))


class _Audio:
    """The proxy's AAC stream: 48 kHz stereo, in step with the picture."""

    def __init__(self, proxy, mux, origin):
        self.mux = mux
        self.stream = proxy.add_stream("aac", rate=AUDIO_RATE)
        self.stream.layout = "stereo"
        self.stream.format = "fltp"
        self.stream.bit_rate = AUDIO_BIT_RATE
        self.resampler = av.AudioResampler(
            format="fltp",
            layout="stereo",
            rate=AUDIO_RATE,
            frame_size=self.stream.codec_context.frame_size or 1024,
        )
        # Resampled frames carry pts in 1/48000 s from the file's clock;
        # the picture starts at `origin`, so the sound is shifted with it.
        self.origin = round(origin * AUDIO_RATE)
        self.next_pts = 0

    def write(self, frame):
        for chunk in self.resampler.resample(frame):
            self._encode(chunk)

    def finish(self):
        for chunk in self.resampler.resample(None):
            self._encode(chunk)
        self.mux(self.stream.encode(None))

    def _encode(self, chunk):
        pts = self.next_pts if chunk.pts is None else chunk.pts - self.origin
        if pts < self.next_pts:
            return  # sound from before the first picture, or overlapping
        chunk.pts = pts
        self.mux(self.stream.encode(chunk))
        self.next_pts = pts + chunk.samples


class _Muxer:
    """``proxy.mux`` for two threads: one packet write at a time."""

    def __init__(self, proxy):
        self.proxy = proxy
        self.lock = threading.Lock()

    def __call__(self, packets):
        with self.lock:
            self.proxy.mux(packets)


class _Worker:
    """A sink's ``write`` and ``finish`` calls, in order, on a thread of its own."""

    def __init__(self, sink):
        self.sink = sink
        self.queue = queue.Queue(maxsize=64)  # decoded frames; a second of sound
        self.error = None
        self.thread = threading.Thread(target=self._loop, name="proxy-audio", daemon=True)
        self.thread.start()

    def write(self, frame):
        self._raise()
        self.queue.put(frame)

    def finish(self):
        """Wait until every frame is written and the sink finished."""
        self.queue.put(_FINISH)
        self.queue.join()
        self._raise()

    def stop(self):
        """End the thread (after what it was given); idempotent."""
        if self.thread.is_alive():
            self.queue.put(None)
            self.thread.join()

    def _loop(self):
        while (item := self.queue.get()) is not None:
            try:
                if self.error is None:
                    self.sink.finish() if item is _FINISH else self.sink.write(item)
            except BaseException as error:  # handed to the main thread
                self.error = error
            finally:
                self.queue.task_done()

    def _raise(self):
        if self.error is not None:
            raise self.error


_FINISH = object()


def _seconds(value, time_base):
    return float(value * time_base) if value else 0.0


if __name__ == "__main__":
    run(main, inputs=["input"], outputs=["output"], options=OPTIONS)
