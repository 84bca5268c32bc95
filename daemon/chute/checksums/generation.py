"""An ASC MHL generation written into a result folder while it is built, with the reference library.

The generation records every file of the result (outputs and manifest.json) with the
xxh128 hash computed as publish placed it. The inputs are referenced through
manifest.json, which the generation covers: it lists each input file with the hashes
its delivery's checksums verified, so the chain runs from the delivery's own checksums
to the result. The reference tool accepts the folder (`ascmhl-debug verify` exits 0).
"""

from __future__ import annotations

import datetime
import platform
from collections.abc import Mapping
from pathlib import Path

from .hashing import ALWAYS, Digest

FOLDER = "ascmhl"


def write(folder: Path, title: str, files: Mapping[str, Digest], comment: str) -> Path:
    """Write generation 1 of `folder`'s ASC MHL history, listing `files` (relative names); returns its path.

    `title` names the generation file (`0001_<title>_<date>.mhl`): the result's name, not the hidden build folder's.
    """
    from ascmhl import chain_xml_parser, hashlist_xml_parser, utils
    from ascmhl.generator import MHLGenerationCreationSession
    from ascmhl.hashlist import MHLCreatorInfo, MHLProcess, MHLTool
    from ascmhl.history import MHLHistory

    history = MHLHistory.load_from_path(str(folder))  # none yet: an empty history and chain
    history.asc_mhl_path = str(folder / FOLDER)
    session = MHLGenerationCreationSession(history)
    for name in sorted(files):
        path = folder / name
        modified = datetime.datetime.fromtimestamp(path.stat().st_mtime, datetime.UTC)
        session.append_file_hash(str(path), files[name].size, modified, ALWAYS, files[name].hashes[ALWAYS])
    hash_list = session.new_hash_lists[history]
    hash_list.creator_info = MHLCreatorInfo()
    hash_list.creator_info.tool = MHLTool("chute", _version())
    hash_list.creator_info.creation_date = utils.datetime_now_isostring()
    hash_list.creator_info.host_name = platform.node()
    hash_list.creator_info.comment = comment
    hash_list.process_info.process = MHLProcess("in-place")
    hash_list.process_info.ignore_spec = session.get_relevant_ignore_pattern(history)
    hash_list.generation_number = 1
    stamp = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d_%H%M%SZ")
    target = folder / FOLDER / f"0001_{_safe(title)}_{stamp}.mhl"
    hashlist_xml_parser.write_hash_list(hash_list, str(target))
    history.chain.file_path = str(folder / FOLDER / "ascmhl_chain.xml")
    chain_xml_parser.write_chain(history.chain, hash_list)
    return target


def _safe(title: str) -> str:
    return "".join(c if c.isalnum() or c in "-." else "_" for c in title) or "result"


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("chute")
    except PackageNotFoundError:
        return "0"
