"""The harness's own promises: a daemon that leaves a process or an error behind fails its test."""

from __future__ import annotations


def test_a_process_left_behind_after_a_clean_stop_is_named():
    pass
