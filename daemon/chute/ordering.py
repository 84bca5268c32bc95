"""Which settled file is claimed first (contract §11): `order` within an inbox, `priority` and turns across inboxes."""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterable, Mapping
from dataclasses import dataclass
from typing import Literal, TypeVar

Order = Literal["oldest", "newest", "name", "smallest", "largest"]
T = TypeVar("T")
K = TypeVar("K", bound=Hashable)


@dataclass(frozen=True)
class File:
    """What the order of an inbox's settled files is decided on."""

    name: str
    size: int
    mtime_ns: int
    changed_at: float = 0.0  # when the watcher saw it last change: the tie-break, then the name


def key(order: str) -> Callable[[File], tuple]:
    """The sort key that puts an inbox's files in `order` (ties: the one seen changing first, then by name)."""
    keys: dict[str, Callable[[File], tuple]] = {
        "oldest": lambda f: (f.mtime_ns, f.changed_at, f.name),
        "newest": lambda f: (-f.mtime_ns, f.changed_at, f.name),
        "name": lambda f: (f.name, f.changed_at),
        "smallest": lambda f: (f.size, f.mtime_ns, f.name),
        "largest": lambda f: (-f.size, f.mtime_ns, f.name),
    }
    return keys[order]


def interleave(groups: Iterable[tuple[K, int, list[T]]], served: Mapping[K, int]) -> list[T]:
    """Merge inboxes' ordered candidates: higher priority first, equal priorities taking turns.

    Args:
        groups: (inbox, priority, its candidates in its own order) for each inbox.
        served: when each inbox last had a file claimed (a counter; absent: never). Among
            equal priorities the one served longest ago goes first in each turn, so an inbox
            is never starved by another even when only one file is claimed at a time.
    """
    ranked = []
    for inbox, priority, items in groups:
        for turn, item in enumerate(items):
            ranked.append(((-priority, turn, served.get(inbox, -1), str(inbox)), item))
    ranked.sort(key=lambda x: x[0])
    return [item for _, item in ranked]
