"""CPU time of processes read from /proc, for the benchmarks (proc(5): /proc/<pid>/stat)."""

from __future__ import annotations

import os

TICK = os.sysconf("SC_CLK_TCK")


def _fields(pid: int) -> list[str]:
    with open(f"/proc/{pid}/stat") as f:
        text = f.read()
    return text[text.rindex(")") + 2 :].split()  # the name, in parentheses, may hold spaces


def cpu(pid: int) -> float:
    """User + system CPU seconds of process `pid` itself (all its threads, none of its children)."""
    f = _fields(pid)
    return (int(f[11]) + int(f[12])) / TICK  # utime, stime: fields 14 and 15 of proc(5)


def reaped(pid: int) -> float:
    """CPU seconds of the children `pid` has waited for (cutime + cstime), and theirs in turn."""
    f = _fields(pid)
    return (int(f[13]) + int(f[14])) / TICK


def children(pid: int) -> list[int]:
    """Live direct children of `pid` (from every thread's children file)."""
    found: list[int] = []
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return found
    for tid in tasks:
        try:
            with open(f"/proc/{pid}/task/{tid}/children") as f:
                found += [int(c) for c in f.read().split()]
        except OSError:
            continue
    return found


def tree_cpu(pid: int) -> float:
    """CPU seconds of `pid`'s descendants: the live ones' own time plus what each has reaped."""
    total = 0.0
    for child in children(pid):
        try:
            total += cpu(child) + reaped(child) + tree_cpu(child)
        except OSError:
            continue  # it exited meanwhile: its parent's reaped time has it (or will)
    return total
