"""`chute init DIR`: a starter config and its folders, reaching DIR's own and the bundled modules and jobs."""

from __future__ import annotations

import json
from pathlib import Path

from .config import BUNDLED
from .errors import ChuteError

CONFIG = """\
# yaml-language-server: $schema=chute.schema.json
# A starter config written by `chute init`. Every key and its default: {example}
# Relative paths are relative to the folder of this file. Unknown keys are errors.

# Your own modules and jobs (./modules, ./jobs) first, then those bundled with chute.
modules_path: [./modules, {modules}]
jobs_path: [./jobs, {jobs}]
state_dir: ./var/state            # the ledger; keep it on local disk
work_dir: ./var/work              # run workspaces; local disk

inboxes:
  - path: ./var/inbox/example
    job: example_job
    outbox: ./var/outbox/example
    quarantine: ./var/quarantine/example
    on_success: archive
    archive: ./var/done/example
    create: true                  # made at start if missing; leave it out for a share (a missing one waits)
"""
FOLDERS = (
    "modules",
    "jobs",
    "var/state",
    "var/work",
    "var/inbox/example",
    "var/outbox/example",
    "var/quarantine/example",
    "var/done/example",
)


def init(folder: Path) -> list[Path]:
    """Write `folder/config.yaml` (never over one) and its schema, make the folders; returns what was made."""
    config = folder / "config.yaml"
    if config.exists() or config.is_symlink():
        raise ChuteError(f"{config} already exists: chute init never overwrites a config")
    text = CONFIG.format(
        example=BUNDLED / "config.example.yaml",
        modules=json.dumps(str(BUNDLED / "modules")),
        jobs=json.dumps(str(BUNDLED / "jobs")),
    )
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with open(config, "x", encoding="utf-8") as f:  # "x": a config written meanwhile is not replaced
            f.write(text)
        made = [config, _schema(folder)]
        for name in FOLDERS:
            (folder / name).mkdir(parents=True, exist_ok=True)
            made.append(folder / name)
    except FileExistsError as exc:
        raise ChuteError(f"{exc.filename} already exists: chute init never overwrites a config") from exc
    except OSError as exc:
        raise ChuteError(f"cannot write the starter config in {folder}: {exc.strerror or exc}") from exc
    return made


def _schema(folder: Path) -> Path:
    """chute.schema.json beside the config, for the editors its first line points at."""
    from .schema import config_schema

    path = folder / "chute.schema.json"
    path.write_text(json.dumps(config_schema(), indent=2) + "\n", encoding="utf-8")
    return path
