"""The corpus of bad definitions: a good base tree, and one small folder per bad case.

Each case folder holds only what it changes in `_base/` (a file with the same
path replaces the base's, a new path is added) and a `case.yaml`:

    about: what is wrong, in one line
    expect: |                 # every problem `chute check` must report, one per line:
      jobs/tiny_job.yaml:10: steps[0].entries[0].module: module 'nope' is not loaded
    remove: [modules/tiny/main.py]               # optional: base files the case deletes
    symlinks: {modules/tiny/main.py: ../../x}    # optional: links made at run time

Each `expect` line is a prefix of one reported problem (`file:line: field: message`,
paths relative to the tree's root), and every reported problem starts with one of
them: a case pins exactly what is reported, nothing missing and nothing extra.

To add a case: make a folder, copy in the base file you want to break, break it,
write its case.yaml; tests/unit/test_definitions.py picks it up by itself.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import yaml

CORPUS = Path(__file__).resolve().parent
BASE = CORPUS / "_base"
CASE_FILE = "case.yaml"


@dataclass(frozen=True)
class Case:
    name: str
    folder: Path
    about: str
    expect: tuple[str, ...]
    remove: tuple[str, ...] = ()
    symlinks: dict[str, str] = field(default_factory=dict)

    def build(self, root: Path) -> Path:
        """Lay the base and this case's changes out under `root`; returns its config file."""
        shutil.copytree(BASE, root, dirs_exist_ok=True)
        shutil.copytree(self.folder, root, dirs_exist_ok=True, ignore=shutil.ignore_patterns(CASE_FILE))
        for rel in self.remove:
            (root / rel).unlink()
        for rel, target in self.symlinks.items():
            link = root / rel
            link.unlink(missing_ok=True)
            os.symlink(target, link)
        return root / "config.yaml"

    def mismatches(self, reported: list[str]) -> list[str]:
        """What differs between `reported` problem lines and `expect`; empty when they agree."""
        out = [f"expected, not reported: {e}" for e in self.expect if not any(r.startswith(e) for r in reported)]
        out += [f"reported, not expected: {r}" for r in reported if not any(r.startswith(e) for e in self.expect)]
        return out


def load_case(folder: Path) -> Case:
    spec = yaml.safe_load((folder / CASE_FILE).read_text(encoding="utf-8"))
    return Case(
        name=folder.name,
        folder=folder,
        about=spec["about"],
        expect=tuple(line.strip() for line in spec["expect"].splitlines() if line.strip()),
        remove=tuple(spec.get("remove", ())),
        symlinks=dict(spec.get("symlinks", {})),
    )


def case_named(name: str) -> Case:
    return load_case(CORPUS / name)


def cases() -> list[Case]:
    """Every case in the corpus, by folder name."""
    return [load_case(f) for f in sorted(CORPUS.iterdir()) if (f / CASE_FILE).is_file()]
