"""kill -9 soak of deliveries of several files (contract §12): stem groups and folders (bench/soak.py --packages).

Two inboxes, one `unit: stem` (a main file and a sidecar written a moment after it, through the
two-step copy job) and one `unit: folder` (folders written file by file in place, an MD5SUMS
last, verified with `verify: required`, and listed by a job whose input is the whole folder).
Each cycle starts a daemon, drops its share of the deliveries and kills the daemon with SIGKILL
at a random moment (claims, verifications, stagings and deliveries under way); a last daemon
drains. Counts, per delivery: lost (a member nowhere), duplicated (two results, or a member
archived twice), split (a stem's main file archived without its sidecar, or a folder run on part
of itself) and good deliveries quarantined. The target is 0 everywhere.
"""

from __future__ import annotations

import hashlib
import json
import random
import time
from pathlib import Path

from tests.acceptance.test_packages import card, folder_setup
from tests.harness import Daemon, claimed_inputs, files, wait_until

FOLDER_FILES = 4


def deliveries(count: int) -> tuple[dict[str, dict[str, bytes]], dict[str, dict[str, bytes]]]:
    """`count` stem groups and `count` folders: name -> {member (relative path): bytes}."""
    stems = {f"s{i:03d}.mov": {f"s{i:03d}.mov": f"video {i}\n".encode() * 50, f"s{i:03d}.srt": b"subs %d\n" % i}
             for i in range(count)}  # fmt: skip
    cards = {
        f"CARD{i:03d}": {f"CLIPS/A{j:03d}.mov": bytes([65 + j]) * (1000 * (j + 1) + i) for j in range(FOLDER_FILES)}
        for i in range(count)
    }
    for members in cards.values():  # written last, and required: a card claimed or verified in part is quarantined
        members["MD5SUMS"] = "".join(f"{hashlib.md5(v).hexdigest()}  {k}\n" for k, v in members.items()).encode()
    return stems, cards


def drop_share(paths: tuple[Path, Path], stems: dict, cards: dict, cycle: int, cycles: int) -> None:
    """This cycle's share: each stem's main file, then its sidecar; each folder, a file at a time."""
    stem_path, card_path = paths
    for group in list(stems.values())[cycle * len(stems) // cycles : (cycle + 1) * len(stems) // cycles]:
        for name, data in group.items():
            (stem_path / name).write_bytes(data)
    for name in list(cards)[cycle * len(cards) // cycles : (cycle + 1) * len(cards) // cycles]:
        card(card_path / name, cards[name])


def judge_stems(inbox: dict, stems: dict) -> dict[str, int]:
    archive, outbox, quarantine = (Path(inbox[k]) for k in ("archive", "outbox", "quarantine"))
    archived, results = files(archive), files(outbox)
    out = {"lost": 0, "duplicated": 0, "split": 0}
    for main, group in stems.items():
        stem = Path(main).stem
        for member, data in group.items():
            if member not in archived and not (quarantine / stem / member).exists():
                out["lost"] += 1
            elif member in archived and (archive / member).read_bytes() != data:
                out["split"] += 1
        out["duplicated"] += sum(1 for r in results if r.startswith(f"{stem}-"))
        out["duplicated"] += sum(1 for a in archived if a.startswith(f"{stem}-"))
    out["quarantined good"] = len(files(quarantine))
    out["published"] = sum(1 for r in results if r in {Path(m).stem for m in stems})
    return out


def judge_cards(inbox: dict, cards: dict) -> dict[str, int]:
    archive, outbox, quarantine = (Path(inbox[k]) for k in ("archive", "outbox", "quarantine"))
    archived, results = files(archive), files(outbox)
    out = {"lost": 0, "duplicated": 0, "split": 0}
    for name, members in cards.items():
        for rel, data in members.items():
            where = archive / name / rel
            if not where.exists() and not (quarantine / name / name / rel).exists():
                out["lost"] += 1
            elif where.exists() and where.read_bytes() != data:
                out["split"] += 1
        if name in results:
            listing = json.loads((outbox / name / "listing.json").read_text())
            out["split"] += listing != {rel: len(data) for rel, data in members.items()}
        out["duplicated"] += sum(1 for r in [*results, *archived] if r.startswith(f"{name}-"))
    out["quarantined good"] = len(files(quarantine))
    out["published"] = sum(1 for r in results if r in cards)
    return out


def soak_packages(root: Path, count: int, cycles: int) -> dict[str, int]:
    """`count` stem groups and `count` folders through `cycles` kill -9 cycles, then a drain."""
    setup, card_inbox = folder_setup(root, verify="required")  # each card verified: kills land in verifications too
    stem_inbox = setup.inbox("stems", unit="stem", sidecar_wait=0.5)
    setup.config.update(max_crashes=100, lease_timeout=3, defaults={"settle": 0.3, "poll_interval": 0.5, "timeout": 60})
    config = setup.write()
    paths = (Path(stem_inbox["path"]), Path(card_inbox["path"]))
    for path in paths:
        path.mkdir()
    stems, cards = deliveries(count)
    taken = 0
    for cycle in range(cycles):
        d = Daemon(config, name=f"packages-{cycle}").start()
        drop_share(paths, stems, cards, cycle, cycles)
        time.sleep(random.uniform(0.2, 2.5))  # the scenario: a death at any moment, claims and moves included
        taken += len(d.events("run.taken_over"))
        d.kill()
    with Daemon(config, name="packages-drain") as d:

        def drained() -> bool:
            done = [Path(i[k]) for i in (stem_inbox, card_inbox) for k in ("archive", "quarantine")]
            busy = any(files(p) for p in paths) or any(claimed_inputs(p) for p in paths)
            return not busy and sum(len(files(p)) for p in done) >= 3 * count

        wait_until(drained, timeout=120 + 5 * count)
        assert d.stop(120) == 0
        taken += len(d.events("run.taken_over"))
    s, c = judge_stems(stem_inbox, stems), judge_cards(card_inbox, cards)
    return {k: s[k] + c[k] for k in s} | {"taken over": taken}
