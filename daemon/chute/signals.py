"""Signal handlers installed for a while: the ones in force before are put back on exit (procrastinate's signals.py)."""

from __future__ import annotations

import contextlib
import signal
from collections.abc import Callable, Iterator
from types import FrameType

Handler = Callable[[int, FrameType | None], object]


@contextlib.contextmanager
def installed(handler: Handler, signums: tuple[signal.Signals, ...]) -> Iterator[None]:
    """Route `signums` to `handler` inside the block; the handlers in force before are restored after."""
    previous = {s: signal.getsignal(s) for s in signums}
    try:
        for s in signums:
            signal.signal(s, handler)
        yield
    finally:
        for s, old in previous.items():
            # None: a handler not installed from Python; the default is the nearest that can be put back.
            signal.signal(s, signal.SIG_DFL if old is None else old)
