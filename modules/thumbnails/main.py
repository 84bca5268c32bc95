"""Make a JPEG contact sheet of evenly spaced frames of a video.

Tile i (0-based) of ``count`` stands for the i-th of ``count`` equal slices
of the duration and shows a frame inside that slice, as near its middle as
is cheap to reach. For each tile the cheapest of three ways is taken (see
``choose``): a keyframe inside the slice (a seek and one decoded picture),
decoding on from where the decoder already is (a linear pass, when tiles
are closer than keyframes), or seeking to the keyframe before the middle and
decoding forward. Decoding forward skips the pictures no other picture
refers to, as ``ffmpeg -skip_frame nonref`` does. Each tile is labelled with
the time of the frame it really shows; the JPEG's comment lists those times
as JSON. Sheet size: see README.md.
"""

import json
import math
from bisect import bisect_left, bisect_right
from dataclasses import dataclass

from chute.extras import require_media

require_media()  # without chute[media]: one line and exit 1, not an ImportError

import av
from av.video.reformatter import VideoReformatter
from PIL import Image, ImageDraw, ImageFont

from chute.modkit import (
    BadOption,
    Option,
    UnusableInput,
    atomic_output,
    decode,
    format_timecode,
    open_media,
    progress,
    run,
)

OPTIONS = [
    Option("count", int, 12),
    Option("columns", int, 4),
    Option("width", int, 320),
]
JPEG_QUALITY = 85
SCHEMA = "chute.thumbnails/1"
# What a seek costs, counted in decoded pictures: the demuxer's jump, the
# decoder's flush (its frame threads drain) and the keyframe itself.
SEEK_COST = 6


@dataclass(frozen=True)
class Tile:
    """One tile's slice of the stream, in its time base: [low, high)."""

    low: int
    high: int
    target: int  # the middle of the slice: the frame to show, ideally
    keyframe: int | None  # the keyframe inside the slice nearest the target, if known


def main(args):
    _check(args)
    with open_media(args.input, need="video") as container:
        stream = container.streams.video[0]
        height = tile_height(args.width, _display_aspect(stream))
        length = _duration_ticks(container, stream)
        keyframes = _keyframes(stream, length)
        reader = _Reader(container, stream, keyframes)
        scaler = _Scaler(stream, args.width, height)
        planned = plan(stream.start_time or 0, length, args.count, keyframes)
        tiles, shown = [], []
        for index, tile in enumerate(planned):
            following = planned[index + 1] if index + 1 < len(planned) else None
            frame, way = reader.frame_for(tile, following)
            tiles.append(scaler.tile(frame))
            shown.append(_described(frame, stream, way))
            progress((index + 1) / args.count)
    sheet = _sheet(tiles, args.columns, args.width, height)
    comment = json.dumps({"schema": SCHEMA, "tiles": shown}, separators=(",", ":"))
    with atomic_output(args.output) as temporary:
        sheet.save(temporary, format="JPEG", quality=JPEG_QUALITY, comment=comment)


def tile_height(width, display_aspect):
    """The tile height for a tile ``width`` wide: aspect kept, rounded to even."""
    return max(2, 2 * round(width / display_aspect / 2))


def plan(start, length, count, keyframes):
    """The tiles' slices of ``length`` ticks from ``start``, each with its nearest keyframe.

    ``keyframes`` are the presentation times of the keyframes, sorted, or
    None when they are not known.
    """
    tiles = []
    for index in range(count):
        low = start + length * index // count
        high = start + length * (index + 1) // count
        target = start + length * (2 * index + 1) // (2 * count)
        tiles.append(Tile(low, high, target, _nearest(keyframes, low, high, target)))
    return tiles


def choose(tile, position, keyframe_before, frame_ticks):
    """The cheapest way to a frame of ``tile``: "keyframe", "continue" or "seek".

    Args:
        position: the presentation time of the last frame the decoder gave,
            or None when it cannot go on from there (not started, or it
            skipped everything but keyframes).
        keyframe_before: the time of the last keyframe at or before the
            target, or None when the file has no index to say.
        frame_ticks: the length of one frame, in the same time base.
    """
    costs = {}
    if tile.keyframe is not None:
        costs["keyframe"] = SEEK_COST
    if position is not None and position < tile.target:
        costs["continue"] = (tile.target - position) / frame_ticks
    before = tile.target if keyframe_before is None else keyframe_before
    costs["seek"] = SEEK_COST + (tile.target - before) / frame_ticks
    return min(costs, key=costs.get)


class _Reader:
    """The frames of one video stream, reached by seeking or decoding on."""

    def __init__(self, container, stream, keyframes):
        self.container, self.stream, self.keyframes = container, stream, keyframes
        rate = stream.average_rate or stream.guessed_rate or 25
        self.frame_ticks = max(1.0, float(1 / (rate * stream.time_base)))
        self._restart(skip="NONREF")
        # Nothing decoded yet, but decoding on from the very start is valid.
        self.position = (stream.start_time or 0) - 1

    def frame_for(self, tile, following):
        """(frame, way): the frame to show for ``tile`` and how it was reached.

        ``following`` is the next tile (or None): whether it can decode on
        from this one's keyframe decides how that keyframe is decoded.
        """
        before = None
        if self.keyframes is not None:
            index = bisect_right(self.keyframes, tile.target) - 1
            before = self.keyframes[max(0, index)]
        way = choose(tile, self.position, before, self.frame_ticks)
        if way == "keyframe":
            go_on = following is not None and following.keyframe is None
            return self._keyframe(tile, go_on), way
        if way == "seek" and before is not None:
            self._seek(before, skip="NONREF")
        elif way == "seek":
            self._seek_blind(tile)
        # Without an index a seek lands on some keyframe near the target:
        # inside the slice, that keyframe will do.
        return self._forward(tile, take_landing=way == "seek" and before is None), way

    def _keyframe(self, tile, go_on):
        # Skipping all but keyframes spares the pictures the frame threads
        # would decode past this one, but then the decoder cannot go on from
        # here: done only when the next tile will not want to.
        self._seek(tile.keyframe, skip="NONREF" if go_on else "NONKEY")
        frame = self._next()
        if frame is None:
            raise UnusableInput(f"no picture could be decoded near {_at(tile.keyframe, self.stream)}")
        self.position = frame.pts if go_on else None
        return frame

    def _forward(self, tile, take_landing):
        """The last frame at or before the target (or the first one after it)."""
        shown = None
        while (frame := self._next()) is not None:
            if frame.pts > tile.target and shown is not None:
                self.ahead = frame  # the next tile may want it
                break
            shown = frame
            if frame.pts == tile.target or (take_landing and tile.low <= frame.pts < tile.high):
                break
            take_landing = False
        if shown is None:
            raise UnusableInput(f"no picture could be decoded near {_at(tile.target, self.stream)}")
        self.position = shown.pts
        return shown

    def _seek_blind(self, tile):
        """Without an index: seek until decoding starts before the slice's end.

        Seeking in a file without an index (MPEG-TS) is a search by
        timestamps that may land on the keyframe after the target, or past
        the last one; then it tries again further back, down to the start.
        """
        back, start = 0, self.stream.start_time or 0
        while True:
            point = max(start, tile.target - back)
            self._seek(point, skip="NONREF")
            self.ahead = self._next()
            if point == start or (self.ahead is not None and self.ahead.pts < tile.high):
                return
            back = max(2 * back, tile.high - tile.low, round(1 / self.stream.time_base))

    def _seek(self, pts, skip):
        self.container.seek(pts, stream=self.stream, backward=True, any_frame=False)
        self._restart(skip)

    def _restart(self, skip):
        self.stream.codec_context.skip_frame = skip
        self.frames = decode(self.container, self.stream)
        self.ahead = None
        self.landed = None  # the first frame's time after a seek
        self.position = None

    def _next(self):
        if self.ahead is not None:
            frame, self.ahead = self.ahead, None
            return frame
        for frame in self.frames:
            # Frames before the first one after a seek (an open GOP's leading
            # pictures) refer to what came before it: never shown.
            if frame.pts is None or (self.landed is not None and frame.pts < self.landed):
                continue
            if self.landed is None:
                self.landed = frame.pts
            return frame
        return None


class _Scaler:
    """Decoded frames to labelled tiles, with one scaler for all of them."""

    def __init__(self, stream, width, height):
        self.stream, self.width, self.height = stream, width, height
        self.scaler = VideoReformatter()
        self.font = ImageFont.load_default(size=max(9, width // 16))

    def tile(self, frame):
        image = self.scaler.reformat(
            frame,
            width=self.width,
            height=self.height,
            format="rgb24",
            interpolation="AREA",
            threads=1,
        ).to_image()
        _label(image, _at(frame.pts, self.stream), self.font)
        return image


def _check(args):
    if not 1 <= args.count <= 1000:
        raise BadOption(f"count must be 1 to 1000, not {args.count}")
    if not 1 <= args.columns <= 100:
        raise BadOption(f"columns must be 1 to 100, not {args.columns}")
    if not 16 <= args.width <= 3840:
        raise BadOption(f"width must be 16 to 3840 pixels, not {args.width}")


def _display_aspect(stream):
    context = stream.codec_context
    if not context.width or not context.height:
        raise UnusableInput("the video stream has no picture size")
    sar = stream.sample_aspect_ratio or 1
    return context.width * sar / context.height


def _duration_ticks(container, stream):
    if stream.duration:
        return stream.duration
    if container.duration:
        return int(container.duration / av.time_base / stream.time_base)
    raise UnusableInput("the video has no known duration")


def _keyframes(stream, length):
    """Presentation times of the keyframes from the container's index, or None.

    An MP4 or a Matroska file has an index of the whole file. An MPEG-TS
    file has none: what FFmpeg noted while probing its first seconds is not
    one, so an index that stops before the second half is not used. Index
    times are decoding times; a keyframe is shown later by the decoder's
    delay (B-frames), which the first keyframe tells. (Seeking takes
    presentation times: FFmpeg's MP4 reader makes the same shift.)
    """
    entries = stream.index_entries
    start = stream.start_time or 0
    if not len(entries) or entries[len(entries) - 1].timestamp < start + length // 2:
        return None
    keys = [entry.timestamp for entry in entries if entry.is_keyframe]
    if not keys:
        return None
    delay = max(0, start - keys[0])
    return [key + delay for key in keys]


def _nearest(keyframes, low, high, target):
    if not keyframes:
        return None
    after = bisect_left(keyframes, target)  # the first at or after the target
    around = keyframes[max(0, after - 1) : after + 1]
    inside = [key for key in around if low <= key < high]
    return min(inside, key=lambda key: abs(key - target)) if inside else None


def _described(frame, stream, way):
    start = stream.start_time or 0
    return {
        "time_s": round(float((frame.pts - start) * stream.time_base), 6),
        "timecode": _at(frame.pts, stream),
        "keyframe": bool(frame.key_frame),
        "reached_by": way,
    }


def _at(pts, stream):
    return format_timecode(float((pts - (stream.start_time or 0)) * stream.time_base))


def _label(image, text, font):
    draw = ImageDraw.Draw(image, "RGBA")
    left, top, right, bottom = draw.textbbox((0, 0), text, font=font)
    pad = max(2, image.width // 80)
    box_height = bottom - top + 2 * pad
    y = image.height - box_height
    draw.rectangle((0, y, right - left + 2 * pad, image.height), fill=(0, 0, 0, 160))
    draw.text((pad - left, y + pad - top), text, font=font, fill=(255, 255, 255, 255))


def _sheet(tiles, columns, width, height):
    rows = math.ceil(len(tiles) / columns)
    sheet = Image.new("RGB", (columns * width, rows * height))
    for index, tile in enumerate(tiles):
        row, column = divmod(index, columns)
        sheet.paste(tile, (column * width, row * height))
    return sheet


if __name__ == "__main__":
    run(main, inputs=["input"], outputs=["output"], options=OPTIONS)
