"""What a run's page shows, read from its result or quarantine folder: timeline, logs, checksums, artifacts."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .charts import Span

LOG_TAIL_BYTES = 16 * 1024  # the end of each entry's log a page shows (logs can be megabytes)
MANIFEST_BYTES = 4 * 1024 * 1024  # a manifest bigger than this is not a manifest chute wrote
IMAGES = (".jpg", ".jpeg", ".png", ".gif", ".webp")
VIDEOS = (".mp4", ".m4v", ".webm", ".mov")


@dataclass(frozen=True)
class Artifact:
    """One file of the result, and how a page shows it: image, video, loudness (figures), or a link."""

    name: str
    kind: str
    size: int | None = None
    sha256: str | None = None


@dataclass(frozen=True)
class Loudness:
    """loudness.json as the three figures a desk reads."""

    integrated_lufs: float | None
    true_peak_dbtp: float | None
    range_lu: float | None


@dataclass(frozen=True)
class Checksums:
    """One input file's line of the page: its hashes (algorithm, value) and what verified it ("" when nothing)."""

    name: str
    size: int | None
    hashes: list[tuple[str, str]]
    verified_by: str


@dataclass(frozen=True)
class RunView:
    """A run's page: what its folder holds, read once per request."""

    manifest: dict[str, Any] | None = None
    spans: list[Span] = field(default_factory=list)
    logs: list[tuple[str, str]] = field(default_factory=list)
    artifacts: list[Artifact] = field(default_factory=list)
    checksums: list[Checksums] = field(default_factory=list)
    loudness: Loudness | None = None

    @property
    def manifest_text(self) -> str:
        return json.dumps(self.manifest, indent=2, ensure_ascii=False) if self.manifest else ""


def kind_of(name: str) -> str:
    """How a page shows an artifact, from its name (the manifest's type says video for audio-less clips too)."""
    lower = name.lower()
    if lower.endswith(IMAGES):
        return "image"
    if lower.endswith(VIDEOS):
        return "video"
    if lower == "loudness.json":
        return "loudness"
    return "file"


def spans(manifest: dict[str, Any]) -> list[Span]:
    """Each entry as a bar: from its `started_s`; an older manifest without it puts the steps one after another."""
    out: list[Span] = []
    step_start = 0.0
    for step in manifest.get("steps") or []:
        step_end = step_start
        for e in step.get("entries") or []:
            start = e.get("started_s")
            start = step_start if start is None else float(start)
            length = float(e.get("duration_s") or 0.0)
            out.append(Span(f"{step.get('name')} · {e.get('module')}", start, length, str(e.get("status"))))
            step_end = max(step_end, start + length)
        step_start = step_end
    return out


def checksums(manifest: dict[str, Any]) -> list[Checksums]:
    """Each input file's hashes and what verified them (`inputs`, contract §12); else the one input's sha256."""
    if manifest.get("inputs"):
        return [
            Checksums(
                str(i.get("name", "")),
                i.get("size"),
                sorted((str(k), str(v)) for k, v in (i.get("hashes") or {}).items()),
                ", ".join(str(v) for v in i.get("verified_by") or []),
            )
            for i in manifest["inputs"]
        ]
    one = manifest.get("input") or {}
    sha = one.get("sha256")
    return [Checksums(str(one.get("name", "")), one.get("size"), [("sha256", str(sha))], "")] if sha else []


def tail(path: Path, limit: int = LOG_TAIL_BYTES) -> str:
    """The last `limit` bytes of a file, from a whole line, decoded without failing."""
    with path.open("rb") as f:
        size = f.seek(0, 2)
        f.seek(max(size - limit, 0))
        data = f.read(limit)
    if size > limit and b"\n" in data:
        data = data.split(b"\n", 1)[1]
    return data.decode("utf-8", "replace")


def plain(path: Path) -> bool:
    """A regular file and not a link: a link planted in a result folder on a share may point anywhere."""
    return path.is_file() and not path.is_symlink()


def _json(path: Path, limit: int = MANIFEST_BYTES) -> dict[str, Any] | None:
    try:
        if not plain(path) or path.stat().st_size > limit:
            return None
        doc = json.loads(path.read_bytes())
    except (OSError, ValueError):
        return None
    return doc if isinstance(doc, dict) else None


def _loudness(path: Path) -> Loudness | None:
    doc = _json(path, 1024 * 1024)
    if doc is None:
        return None
    return Loudness(doc.get("integrated_lufs"), doc.get("true_peak_dbtp"), doc.get("loudness_range_lu"))


def _artifacts(folder: Path, manifest: dict[str, Any]) -> list[Artifact]:
    listed = manifest.get("artifacts") or []
    out = [Artifact(str(a["name"]), kind_of(str(a["name"])), a.get("size"), a.get("sha256")) for a in listed]
    return [a for a in out if "/" not in a.name and plain(folder / a.name)]


def read(folder: Path | None) -> RunView:
    """The run's folder (already known to lie inside a result folder), or an empty view when it has none."""
    if folder is None or not folder.is_dir():
        return RunView()
    manifest = _json(folder / "manifest.json") or _json(folder / "report.json")
    if manifest is None:
        return RunView()
    logs_dir = folder / "logs"
    logs = sorted(p for p in logs_dir.iterdir() if plain(p)) if logs_dir.is_dir() and not logs_dir.is_symlink() else []
    artifacts = _artifacts(folder, manifest)
    loud = next((a for a in artifacts if a.kind == "loudness"), None)
    return RunView(
        manifest=manifest,
        spans=spans(manifest),
        logs=[(p.name, tail(p)) for p in logs],
        artifacts=artifacts,
        checksums=checksums(manifest),
        loudness=None if loud is None else _loudness(folder / loud.name),
    )
