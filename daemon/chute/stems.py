"""`unit: stem` (contract §12): which files of an inbox are main files, and which sidecars go with each."""

from __future__ import annotations

from collections.abc import Iterable

from .namefilter import NameFilter

# Last suffixes that make a file a sidecar, never a main file (docs/configuration.md lists them).
SIDECAR_SUFFIXES = frozenset({
    ".srt", ".vtt", ".scc", ".ass", ".ssa", ".stl", ".sub", ".idx", ".ttml", ".dfxp", ".xml", ".edl", ".aaf",
    ".ale", ".fcpxml", ".xmp", ".cue", ".nfo", ".md5", ".sha1", ".sha256", ".sha512", ".xxh64", ".xxh128",
    ".mhl", ".sfv",
})  # fmt: skip


def stem_of(name: str) -> str:
    """`clip` of `clip.mov`, `clip.v2` of `clip.v2.mov`; a name without a suffix is its own stem."""
    head, dot, _ = name.rpartition(".")
    return head if dot and head else name


class Stems:
    """The grouping rules of one stem inbox: its main files (by `include`/`exclude`) and their sidecars."""

    def __init__(self, include: list[str], exclude: list[str]):
        self.mains = NameFilter(include, exclude)
        self.members = NameFilter(["*"], exclude)  # what a sidecar may be: anything not ignored

    def is_main(self, name: str) -> bool:
        low = name.lower()
        suffix = low[low.rfind(".") :] if "." in low.lstrip(".") else ""
        return suffix not in SIDECAR_SUFFIXES and self.mains.reason(name) is None

    def main_of(self, sidecar: str, names: Iterable[str]) -> str | None:
        """The main file `sidecar` goes with among `names`: the one of the longest stem it starts with."""
        mains = [n for n in names if n != sidecar and self.is_main(n) and sidecar.startswith(stem_of(n) + ".")]
        # Of two mains of one stem (clip.mov, clip.mxf) the first by name; either claims it, whichever goes first.
        return min(mains, key=lambda n: (-len(stem_of(n)), n), default=None)

    def sidecars(self, main: str, names: Iterable[str]) -> list[str]:
        """The sidecars of `main` among `names` (sorted): those going with no main file of a longer stem."""
        pool = list(names)
        head = stem_of(main) + "."
        found = [n for n in pool if n != main and n.startswith(head) and self.members.reason(n) is None]
        mine = []
        for name in found:
            other = None if self.is_main(name) else self.main_of(name, pool)
            if other is not None and stem_of(other) == stem_of(main):
                mine.append(name)
        return sorted(mine)
