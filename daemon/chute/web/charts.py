"""Charts drawn on the server as small, accessible SVG: nothing is fetched, so a page works air-gapped."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from html import escape

WIDTH = 640
ROW = 22  # the height of one row of a horizontal chart or a timeline
LABEL = 160  # the width kept for the labels on the left
COLOURS = {"succeeded": "#2e7d32", "failed": "#c62828", "running": "#1565c0", "cancelled": "#757575"}


@dataclass(frozen=True)
class Bar:
    """One bar: its label, its value, and the text a reader hovers or a screen reader says."""

    label: str
    value: float
    text: str = ""


@dataclass(frozen=True)
class Span:
    """One bar of a timeline: from `start` for `length` seconds, coloured by its status."""

    label: str
    start: float
    length: float
    status: str


def _svg(title: str, width: int, height: int, body: list[str]) -> str:
    """The outer element: a titled image to assistive technology, sized by its viewBox."""
    t = escape(title)
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" class="chart" role="img" aria-label="{t}"'
        f' viewBox="0 0 {width} {height}" width="100%"><title>{t}</title>' + "".join(body) + "</svg>"
    )


def _rect(x: float, y: float, w: float, h: float, fill: str, tip: str) -> str:
    return (
        f'<rect x="{x:.1f}" y="{y:.1f}" width="{max(w, 0.0):.1f}" height="{h:.1f}" fill="{fill}">'
        f"<title>{escape(tip)}</title></rect>"
    )


def _text(x: float, y: float, text: str, anchor: str = "start") -> str:
    return f'<text x="{x:.1f}" y="{y:.1f}" font-size="11" text-anchor="{anchor}">{escape(text)}</text>'


def columns(title: str, bars: Sequence[Bar], *, height: int = 160, every: int = 6) -> str:
    """Vertical bars over a time axis (runs per hour): one label every `every` bars."""
    top = max((b.value for b in bars), default=0.0) or 1.0
    plot = height - 20
    step = (WIDTH - 40) / max(len(bars), 1)
    body = [_text(0, 10, f"{top:g}")]
    for i, b in enumerate(bars):
        h = plot * b.value / top
        body.append(_rect(40 + i * step, plot - h, max(step - 1, 1), h, "#1565c0", b.text or f"{b.label}: {b.value:g}"))
        if i % every == 0:
            body.append(_text(40 + i * step, height - 4, b.label))
    if not bars:
        body.append(_text(WIDTH / 2, plot / 2, "nothing yet", "middle"))
    return _svg(title, WIDTH, height, body)


def rows(title: str, bars: Sequence[Bar], *, unit: str = "", top: float | None = None, colour: str = "#1565c0") -> str:
    """Horizontal bars, one row each (failure rate by job, time per module), the value written after each."""
    top = top or max((b.value for b in bars), default=0.0) or 1.0
    height = ROW * max(len(bars), 1) + 4
    body: list[str] = []
    room = WIDTH - LABEL - 200  # the value is written after the bar
    for i, b in enumerate(bars):
        y = i * ROW + 2
        w = room * min(b.value / top, 1.0)
        body.append(_text(0, y + 14, b.label[:26]))
        body.append(_rect(LABEL, y + 2, w, ROW - 6, colour, b.text or f"{b.label}: {b.value:g}{unit}"))
        body.append(_text(LABEL + w + 4, y + 14, b.text or f"{b.value:g}{unit}"))
    if not bars:
        body.append(_text(WIDTH / 2, 14, "nothing yet", "middle"))
    return _svg(title, WIDTH, height, body)


def timeline(title: str, spans: Sequence[Span]) -> str:
    """A run's entries as bars on one time axis from the run's start, so the slow one is seen at a glance."""
    end = max((s.start + s.length for s in spans), default=0.0) or 1.0
    height = ROW * max(len(spans), 1) + 22
    room = WIDTH - LABEL - 10
    body: list[str] = []
    for i, s in enumerate(spans):
        y = i * ROW
        tip = f"{s.label}: {s.status}, from {s.start:.2f} s for {s.length:.2f} s"
        body.append(_text(0, y + 14, s.label[:26]))
        x = LABEL + room * s.start / end
        body.append(_rect(x, y + 3, max(room * s.length / end, 2.0), ROW - 6, COLOURS.get(s.status, "#757575"), tip))
    axis = ROW * max(len(spans), 1) + 14
    for k in range(5):
        anchor = "start" if k == 0 else "end" if k == 4 else "middle"
        body.append(_text(LABEL + room * k / 4, axis, f"{end * k / 4:.1f} s", anchor))
    return _svg(title, WIDTH, height, body)
