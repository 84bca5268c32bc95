"""Describe a video file as JSON: its container and every stream.

Reads the container's header and decodes one video frame (for the rotation),
so it costs the same on a 10-second clip and on a 2-hour programme. The keys
are documented in README.md and stay stable: a value that is not known is
``null``, never missing.
"""

from fractions import Fraction

from chute.extras import require_media

require_media()  # without chute[media]: one line and exit 1, not an ImportError

import av

from chute.modkit import decode, open_media, progress, run, write_json

SCHEMA = "chute.probe/1"

# FFmpeg's names for the ISO/IEC 23091-2 code points (what ffprobe prints);
# PyAV gives the numbers. Code point 2 is "unspecified" and becomes null.
FIELD_ORDERS = {1: "progressive", 2: "tt", 3: "bb", 4: "tb", 5: "bt"}
COLOR_RANGES = {1: "tv", 2: "pc"}
COLOR_PRIMARIES = {
    1: "bt709",
    4: "bt470m",
    5: "bt470bg",
    6: "smpte170m",
    7: "smpte240m",
    8: "film",
    9: "bt2020",
    10: "smpte428",
    11: "smpte431",
    12: "smpte432",
    22: "ebu3213",
}
COLOR_TRANSFERS = {
    1: "bt709",
    4: "gamma22",
    5: "gamma28",
    6: "smpte170m",
    7: "smpte240m",
    8: "linear",
    9: "log100",
    10: "log316",
    11: "iec61966-2-4",
    12: "bt1361e",
    13: "iec61966-2-1",
    14: "bt2020-10",
    15: "bt2020-12",
    16: "smpte2084",
    17: "smpte428",
    18: "arib-std-b67",
}
COLOR_SPACES = {
    0: "gbr",
    1: "bt709",
    4: "fcc",
    5: "bt470bg",
    6: "smpte170m",
    7: "smpte240m",
    8: "ycgco",
    9: "bt2020nc",
    10: "bt2020c",
    11: "smpte2085",
    12: "chroma-derived-nc",
    13: "chroma-derived-c",
    14: "ictcp",
}


def main(args):
    # One frame is decoded: frame threads would only make it come later.
    with open_media(args.input, need="video", threads=False) as container:
        report = {
            "schema": SCHEMA,
            "container": _container(container),
            "streams": [_stream(container, stream) for stream in container.streams],
        }
    write_json(args.output, report)
    progress(1.0)


def _container(container):
    return {
        "format": container.format.name,
        "format_long_name": container.format.long_name,
        "duration_s": _seconds(container.duration, Fraction(1, av.time_base)),
        "start_time_s": _seconds(container.start_time, Fraction(1, av.time_base)),
        "bit_rate": container.bit_rate or None,
        "size": container.size if container.size >= 0 else None,
        "stream_count": len(container.streams),
        "tags": dict(container.metadata),
    }


def _stream(container, stream):
    context = stream.codec_context
    described = {
        "index": stream.index,
        "type": stream.type,
        "codec": context.name if context else None,
        "codec_long_name": context.codec.long_name if context else None,
        "profile": getattr(context, "profile", None) or None,
        "bit_rate": (context.bit_rate if context else 0) or None,
        "duration_s": _seconds(stream.duration, stream.time_base),
        "start_time_s": _seconds(stream.start_time, stream.time_base),
        "language": _language(stream),
        "tags": dict(stream.metadata),
    }
    if stream.type == "video":
        described.update(_video(container, stream))
    elif stream.type == "audio":
        described.update(_audio(stream))
    return described


def _video(container, stream):
    context = stream.codec_context
    rate = stream.average_rate or stream.guessed_rate
    sar = stream.sample_aspect_ratio or Fraction(1, 1)
    return {
        "frame_count": stream.frames or None,  # from the header; null if not there
        "width": context.width,
        "height": context.height,
        "pixel_format": context.format.name if context.format else None,
        "sample_aspect_ratio": _ratio(sar, ":"),
        "display_aspect_ratio": _ratio(
            Fraction(context.width * sar.numerator, context.height * sar.denominator)
            if context.width and context.height
            else None,
            ":",
        ),
        "frame_rate": _ratio(rate, "/"),
        "fps": float(rate) if rate else None,
        "field_order": FIELD_ORDERS.get(context.field_order),
        "color_range": COLOR_RANGES.get(context.color_range),
        "color_primaries": COLOR_PRIMARIES.get(context.color_primaries),
        "color_transfer": COLOR_TRANSFERS.get(context.color_trc),
        "color_space": COLOR_SPACES.get(context.colorspace),
        "rotation": _rotation(container, stream),
    }


def _audio(stream):
    context = stream.codec_context
    return {
        "sample_rate": context.sample_rate or None,
        "channels": context.channels or None,
        "channel_layout": context.layout.name if context.layout else None,
        "sample_format": context.format.name if context.format else None,
    }


def _rotation(container, stream):
    # The display matrix reaches us on decoded frames; one frame is enough.
    # Only the first video stream: that is the one players show.
    if stream is not container.streams.video[0]:
        return None
    for frame in decode(container, stream):
        return frame.rotation
    return None


def _language(stream):
    language = stream.metadata.get("language")
    return None if language in (None, "", "und") else language


def _seconds(value, time_base):
    if value is None or not time_base:
        return None
    return round(float(value * time_base), 6)


def _ratio(value, separator):
    if not value:
        return None
    return f"{value.numerator}{separator}{value.denominator}"


if __name__ == "__main__":
    run(main, inputs=["input"], outputs=["output"])
