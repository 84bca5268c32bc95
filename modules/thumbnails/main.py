"""Make a JPEG contact sheet of evenly spaced frames of a video.

Frame i (0-based) of ``count`` is the one showing at ``(i + 0.5) / count`` of
the duration: the middle of each of ``count`` equal slices, which avoids the
black first and last frames most programmes have. Each frame is reached by
seeking to the keyframe before it and decoding forward, so the cost grows
with ``count``, not with the length of the file. Sheet size: see README.md.
"""

import math

from chute.extras import require_media

require_media()  # without chute[media]: one line and exit 1, not an ImportError

import av
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


def main(args):
    _check(args)
    with open_media(args.input, need="video") as container:
        stream = container.streams.video[0]
        height = tile_height(args.width, _display_aspect(stream))
        tiles = []
        for index, seconds in enumerate(_targets(container, stream, args.count)):
            frame = _frame_at(container, stream, seconds)
            tiles.append(_tile(frame, stream, args.width, height))
            progress((index + 1) / args.count)
    sheet = _sheet(tiles, args.columns, args.width, height)
    with atomic_output(args.output) as temporary:
        sheet.save(temporary, format="JPEG", quality=JPEG_QUALITY)


def tile_height(width, display_aspect):
    """The tile height for a tile ``width`` wide: aspect kept, rounded to even."""
    return max(2, 2 * round(width / display_aspect / 2))


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


def _targets(container, stream, count):
    """Presentation times (seconds from the stream's first frame) to show."""
    if stream.duration:
        duration = float(stream.duration * stream.time_base)
    elif container.duration:
        duration = container.duration / av.time_base
    else:
        raise UnusableInput("the video has no known duration")
    return [duration * (index + 0.5) / count for index in range(count)]


def _frame_at(container, stream, seconds):
    """The frame showing at ``seconds``: seek to a keyframe, decode forward."""
    start = stream.start_time or 0
    target = start + int(seconds / stream.time_base)
    container.seek(target, stream=stream, backward=True, any_frame=False)
    shown = None
    for frame in decode(container, stream):
        if frame.pts is None:
            continue
        if frame.pts > target and shown is not None:
            break
        shown = frame
        if frame.pts == target:
            break
    if shown is None:
        raise UnusableInput(
            f"no picture could be decoded near {format_timecode(seconds)}"
        )
    return shown


def _tile(frame, stream, width, height):
    image = frame.reformat(
        width=width, height=height, format="rgb24", interpolation="AREA"
    ).to_image()
    start = stream.start_time or 0
    label = format_timecode(float((frame.pts - start) * stream.time_base))
    _label(image, label)
    return image


def _label(image, text):
    draw = ImageDraw.Draw(image, "RGBA")
    font = ImageFont.load_default(size=max(9, image.width // 16))
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
