"""This process's resource limits: the open descriptors it may hold."""

from __future__ import annotations

import resource


def raise_fd_limit() -> int:
    """Raise this process's soft limit of open descriptors to its hard limit; returns the limit in force.

    The daemon uses no select(2), so a soft limit of 1024 only makes it fail sooner (issue #19;
    systemd.exec(5), LimitNOFILE=, recommends exactly this). Processes started earlier keep theirs.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft == resource.RLIM_INFINITY or soft >= hard:
        return soft
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    except (OSError, ValueError):
        return soft
    return hard
