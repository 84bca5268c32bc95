"""`chute check`'s overlap rules over many inboxes: what it reports is what comparing every pair reports.

The check looks folders up by their path's parts (config_check._Paths) rather than comparing every
inbox with every other; these configs, of nested and repeated paths, hold it to the pairwise rules.
"""

from __future__ import annotations

import random
import re
from pathlib import Path

import pytest
import yaml
from chute.config_check import check_config

FOLDERS = ["a", "a/b", "a/b/c", "a/bc", "d", "d/e", "f"]  # nested, repeated and look-alike (a/b vs a/bc)


def inside(child: Path, parent: Path) -> bool:
    return child == parent or child.is_relative_to(parent)


def pairwise(root: Path, inboxes: list[dict], state_dir: Path, work_dir: Path) -> list[str]:
    """The problems, found the slow and obvious way (the messages of config_check._overlaps)."""
    paths = [root / i["path"] for i in inboxes]
    found = []
    for n, inbox in enumerate(inboxes):
        for j in range(n):
            if paths[n] == paths[j]:
                found.append(f"inboxes[{n}].path: inboxes[{j}] already watches {paths[n]}")
            elif inside(paths[n], paths[j]) or inside(paths[j], paths[n]):
                found.append(f"inboxes[{n}].path: is nested with inboxes[{j}] ({paths[j]})")
        for key in ("outbox", "quarantine", "archive"):
            folder = root / inbox[key]
            for j, other in enumerate(paths):
                if inside(folder, other):
                    found.append(
                        f"inboxes[{n}].{key}: {folder} is inside inboxes[{j}] ({other}): results would be fed back in"
                    )
    for key, folder in (("state_dir", state_dir), ("work_dir", work_dir)):
        found += [f"{key}: is inside inboxes[{j}] ({other})" for j, other in enumerate(paths) if inside(folder, other)]
    return found


@pytest.mark.parametrize("seed", range(12))
def test_overlaps_are_those_of_every_pair(tmp_path: Path, seed: int) -> None:
    rng = random.Random(seed)
    root = tmp_path / "media"
    inboxes = [
        {
            "path": f"in/{rng.choice(FOLDERS)}",
            "job": "example_job",
            "create": True,
            "on_success": "archive",
            **{
                key: f"{rng.choice(['in', 'out'])}/{rng.choice(FOLDERS)}" for key in ("outbox", "quarantine", "archive")
            },
        }
        for _ in range(rng.randint(2, 9))
    ]
    state_dir, work_dir = root / "in" / rng.choice(FOLDERS), root / "var" / "work"
    config = tmp_path / "config.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "state_dir": str(state_dir),
                "work_dir": str(work_dir),
                "inboxes": [{**i, **{k: str(root / v) for k, v in i.items() if "/" in str(v)}} for i in inboxes],
            }
        )
    )
    # Each problem is "<file>:<line>: <where>: <what>"; the check orders them by line, so compare them as sets.
    reported = sorted(re.sub(r"^.*config\.yaml:\d+: ", "", str(p)) for p in check_config(config).problems)
    assert reported == sorted(pairwise(root, inboxes, state_dir, work_dir))
