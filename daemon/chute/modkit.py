"""A small toolkit for writing chute modules.

A module is a script that chute runs as::

    python main.py --input /abs/in.mp4 --output /abs/out.json --width 320

with the module's folder as working directory (see contract §2). This file gives
such a script the few things every module needs, so that all of them behave
the same way for an operator:

- ``run(main, inputs=..., outputs=..., options=...)`` parses the command line
  from declared parameters and calls ``main(args)``; it turns
  ``UnusableInput`` into one line on stderr and exit status 2, and a bad
  option into one line and exit status 1.
- ``atomic_output(path)`` yields a temporary name next to ``path`` and moves
  it into place only when the block succeeds, so no half-written output is
  ever seen under its final name.
- ``progress(fraction)`` prints ``CHUTE_PROGRESS <fraction>`` for chute.
- ``open_media(path, need=...)`` opens an input with PyAV and checks that it
  has the streams the module needs; ``decode(container, stream)`` decodes it.
  Both report a file PyAV cannot use as ``UnusableInput``. Video is decoded
  with frame threads, as the ffmpeg CLI does; ``threaded(codec_context)``
  does the same for an encoder.

One trap for speed: ``frame.reformat(...)`` builds a new scaler (and its
thread pool) for every frame. A module that scales many frames keeps one
``av.video.reformatter.VideoReformatter`` and calls its ``reformat``.

A minimal module::

    from chute.modkit import Option, atomic_output, open_media, run, write_json

    OPTIONS = [Option("precision", int, 3)]

    def main(args):
        with open_media(args.input, need="video") as container:
            seconds = container.duration / 1_000_000
        write_json(args.output, {"seconds": round(seconds, args.precision)})

    if __name__ == "__main__":
        run(main, inputs=["input"], outputs=["output"], options=OPTIONS)
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import secrets
import signal
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

__all__ = [
    "EXIT_FAILED",
    "EXIT_OK",
    "EXIT_UNUSABLE_INPUT",
    "BadOption",
    "Option",
    "UnusableInput",
    "atomic_output",
    "decode",
    "fail",
    "format_timecode",
    "open_media",
    "progress",
    "run",
    "threaded",
    "write_json",
]

EXIT_OK = 0
EXIT_FAILED = 1  # the module, its options or the machine: not the input's fault
EXIT_UNUSABLE_INPUT = 2  # the input is not something this module can use

_PROGRESS_STEP = 0.01  # a progress line only when it moved by a percent
_PROGRESS_INTERVAL = 0.25  # seconds; and at most four lines a second


class UnusableInput(Exception):
    """The input cannot be used: not media, a stream missing, damaged."""


class BadOption(Exception):
    """An option value the module cannot work with (e.g. a negative width)."""


@dataclass(frozen=True)
class Option:
    """A ``--name value`` flag, as declared under ``options`` in manifest.yaml."""

    name: str
    type: type  # int, float, str or bool
    default: Any


def run(
    main: Callable[[argparse.Namespace], None],
    inputs: Sequence[str] = ("input",),
    outputs: Sequence[str] = ("output",),
    options: Sequence[Option] = (),
    argv: Sequence[str] | None = None,
) -> NoReturn:
    """Parse the command line, call ``main(args)`` and exit with its status.

    Input and output paths arrive as ``pathlib.Path``; options as their
    declared type. Exits 0 when ``main`` returns, 2 (with one line on stderr)
    on ``UnusableInput``, 1 on ``BadOption`` or a failed write. Anything else
    is a bug in the module and keeps its traceback for the entry's log.
    """
    # chute stops a module with SIGTERM; turning it into SystemExit runs the
    # cleanup in atomic_output instead of leaving a temporary file behind.
    signal.signal(signal.SIGTERM, _exit_on_signal)
    try:
        args = _parser(inputs, outputs, options).parse_args(argv)
        main(args)
    except UnusableInput as error:
        fail(f"unusable input: {error}")
    except BadOption as error:
        fail(f"bad option: {error}", EXIT_FAILED)
    except OSError as error:
        fail(f"I/O error: {error}", EXIT_FAILED)
    sys.exit(EXIT_OK)


def fail(message: str, status: int = EXIT_UNUSABLE_INPUT) -> NoReturn:
    """Print ``message`` as one line on stderr and exit with ``status``."""
    print(" ".join(str(message).split()), file=sys.stderr, flush=True)
    sys.exit(status)


_last_progress = (-1.0, -_PROGRESS_INTERVAL)  # (fraction, monotonic time) printed


def progress(fraction: float) -> None:
    """Report progress (0..1) to chute; call it as often as you like.

    A line is printed for the first call, for 1.0, and otherwise at most every
    quarter second and only when the value moved by a percent.
    """
    global _last_progress
    fraction = min(1.0, max(0.0, float(fraction)))
    last_fraction, last_time = _last_progress
    now = time.monotonic()
    if fraction == last_fraction:
        return
    if fraction < 1.0 and last_fraction >= 0.0:
        if fraction - last_fraction < _PROGRESS_STEP:
            return
        if now - last_time < _PROGRESS_INTERVAL:
            return
    _last_progress = (fraction, now)
    print(f"CHUTE_PROGRESS {fraction:.3f}", flush=True)


@contextlib.contextmanager
def atomic_output(path: os.PathLike | str) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success, move it to ``path``.

    The temporary name keeps the final extension (``.proxy.partial-1a2b3c4d.mp4``)
    so libraries that choose a format by extension still do. The file is
    fsynced before the rename and the folder after it. On any exception,
    including SystemExit, the temporary file is removed and ``path`` is left
    untouched.
    """
    final = Path(path)
    temporary = final.with_name(f".{final.stem}.partial-{secrets.token_hex(4)}{final.suffix}")
    try:
        yield temporary
        if not temporary.exists():
            raise RuntimeError(f"the module wrote nothing to {final.name}")
        _fsync(temporary)
        os.replace(temporary, final)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    _fsync(final.parent)


def write_json(path: os.PathLike | str, value: Any) -> None:
    """Write ``value`` as indented UTF-8 JSON to ``path``, atomically."""
    with atomic_output(path) as temporary:
        temporary.write_text(
            # allow_nan=False: NaN/Infinity are not JSON; fail rather than write them.
            json.dumps(value, indent=2, ensure_ascii=False, allow_nan=False) + "\n",
            encoding="utf-8",
        )


def open_media(path: os.PathLike | str, need: str | None = None, threads: bool = True):
    """Open ``path`` with PyAV; ``need`` is "video" or "audio" (or None).

    Returns the open ``av`` input container (use it in a ``with`` block).
    Raises UnusableInput when PyAV cannot read the file or it has no stream
    of the needed kind.

    Args:
        threads: decode video as the ffmpeg CLI does, with frame and slice
            threads on every core (PyAV's default is slice threads only,
            which H.264 barely uses). False: PyAV's default, for a module
            that decodes a frame or two and wants the first one at once.
    """
    import av  # here, so modules that never touch media do not pay for it

    try:
        # Tags in a broken encoding must not make a good picture unusable.
        container = av.open(os.fspath(path), "r", metadata_errors="replace")
    except av.error.FFmpegError as error:
        raise UnusableInput(f"not a media file PyAV can read ({_reason(error)})") from None
    try:
        if need is not None and not getattr(container.streams, need):
            raise UnusableInput(f"the file has no {need} stream")
        _check_complete(container)
    except UnusableInput:
        container.close()
        raise
    if threads:
        for stream in container.streams.video:
            threaded(stream.codec_context)
    return container


def threaded(codec_context) -> None:
    """Let a PyAV codec context use frame and slice threads on every core.

    For a decoder, frames come out a few packets later (one per thread),
    and PyAV's ``decode`` still returns all of them at the end. For an
    encoder such as libx264, this selects x264's own frame threads instead
    of its sliced threads (what libavcodec picks when ``thread_type`` is
    PyAV's default, SLICE), the ffmpeg CLI's choice. Call it before the
    first frame is decoded or encoded.
    """
    codec_context.thread_type = "AUTO"  # FRAME | SLICE: the codec takes what it supports
    codec_context.thread_count = 0  # one per core


def decode(container, *streams) -> Iterator:
    """Decode the frames of ``streams`` in file order, as PyAV's ``decode``.

    A damaged file is reported as UnusableInput with where it broke.
    """
    import av

    frame = None
    try:
        for frame in container.decode(*streams):
            yield frame
    except av.error.FFmpegError as error:
        where = "" if frame is None or frame.time is None else (f" after {format_timecode(frame.time)}")
        raise UnusableInput(f"the file is damaged{where} ({_reason(error)})") from None


def format_timecode(seconds: float) -> str:
    """Format seconds as ``HH:MM:SS.mmm`` (e.g. 3725.5 -> "01:02:05.500")."""
    millis = max(0, round(seconds * 1000))
    hours, millis = divmod(millis, 3_600_000)
    minutes, millis = divmod(millis, 60_000)
    secs, millis = divmod(millis, 1000)
    return f"{hours:02d}:{minutes:02d}:{secs:02d}.{millis:03d}"


def _check_complete(container) -> None:
    # An MP4/MOV whose sample table points past the end of the file was cut
    # short (an interrupted copy with the moov atom at the front). Other
    # formats have no exact index to compare with, and fail on decode instead.
    if "mp4" not in container.format.name or container.size <= 0:
        return
    end = 0
    for stream in container.streams:
        entries = stream.index_entries
        if len(entries):
            last = entries[len(entries) - 1]
            end = max(end, last.pos + last.size)
    if end > container.size:
        raise UnusableInput(f"the file is truncated (its index needs {end} bytes, it has {container.size})")


def _parser(inputs, outputs, options) -> argparse.ArgumentParser:
    parser = _Parser(prog=Path(sys.argv[0]).name)
    for name in [*inputs, *outputs]:
        parser.add_argument(f"--{name}", type=Path, required=True)
    for option in options:
        convert = _parse_bool if option.type is bool else option.type
        parser.add_argument(f"--{option.name}", type=convert, default=option.default)
    return parser


class _Parser(argparse.ArgumentParser):
    # argparse exits 2 on a usage error, which chute would read as "unusable
    # input"; a wrong command line is the job's fault, so exit 1.
    def error(self, message: str) -> NoReturn:
        fail(f"bad arguments: {message}", EXIT_FAILED)


def _parse_bool(text: str) -> bool:
    # chute passes bool options as the strings "true" / "false" (contract §2).
    lowered = text.strip().lower()
    if lowered in ("true", "1", "yes"):
        return True
    if lowered in ("false", "0", "no"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")


def _reason(error: Exception) -> str:
    # av errors read "[Errno 1094995529] Invalid data found ...: '/abs/path'";
    # keep the words, drop the number and the path.
    return getattr(error, "strerror", None) or str(error)


def _fsync(path: Path) -> None:
    descriptor = os.open(path, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def _exit_on_signal(signum, frame) -> NoReturn:
    raise SystemExit(128 + signum)
