"""checksums in-process: every format a delivery carries, made by the real tools, checked as a user expects.

Lists are written by the real `md5sum`, `sha256sum`, `xxh128sum`; ASC MHL histories by the reference
`ascmhl` CLI; a legacy MHL (v1.1) file is written here as Silverstack and ShotPut Pro write it.
"""

from __future__ import annotations

import errno
import hashlib
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import xxhash
from chute import checksums
from chute.checksums import Mode, generation

ASCMHL = Path(sys.executable).with_name("ascmhl")
ASCMHL_DEBUG = Path(sys.executable).with_name("ascmhl-debug")


def files_of(root: Path) -> list[str]:
    """What a Package lists: every regular file under root, relative, sorted."""
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file() and not p.is_symlink())


def verify(root: Path, mode: Mode = Mode.AUTO, main: str | None = None) -> checksums.Verification:
    files = files_of(root)
    return checksums.check(root, files, checksums.plan(root, files, mode, main), mode=mode, main=main)


def tool(*argv: str, cwd: Path) -> str:
    if shutil.which(argv[0]) is None and not Path(argv[0]).exists():
        pytest.skip(f"{argv[0]} is not installed (tests/system-packages.txt)")
    return subprocess.run(argv, cwd=cwd, check=True, capture_output=True, text=True).stdout


@pytest.fixture
def card(tmp_path: Path) -> Path:
    """A small camera card: clips in a subfolder, a sidecar XML at the top."""
    root = tmp_path / "A001"
    (root / "CLIPS").mkdir(parents=True)
    (root / "CLIPS" / "A001C001.mov").write_bytes(bytes(range(256)) * 400)
    (root / "CLIPS" / "A001C002.mov").write_bytes(b"second clip " * 999)
    (root / "A001.xml").write_text("<clipinfo/>\n")
    return root


def by_name(v: checksums.Verification) -> dict[str, checksums.InputFile]:
    return {i.name: i for i in v.inputs}


def flip(path: Path, at: int = 100) -> None:
    data = bytearray(path.read_bytes())
    data[at] ^= 0x01
    path.write_bytes(bytes(data))


def test_an_md5sum_list_verifies_every_file_it_names_and_the_manifest_says_so(card: Path) -> None:
    (card / "MD5SUMS").write_text(tool("md5sum", "CLIPS/A001C001.mov", "CLIPS/A001C002.mov", cwd=card))
    v = verify(card)
    assert v.reason is None
    files = by_name(v)
    clip = files["CLIPS/A001C001.mov"]
    data = (card / "CLIPS" / "A001C001.mov").read_bytes()
    assert clip.size == len(data) and clip.verified_by == ("MD5SUMS",)
    assert clip.hashes == {"md5": hashlib.md5(data).hexdigest(), "xxh128": xxhash.xxh3_128(data).hexdigest()}
    assert files["A001.xml"].verified_by == ()  # not listed: unverified, and not an error
    assert set(files["A001.xml"].hashes) == {"xxh128"}  # xxh128 always, nothing more than its checksums use


def test_an_altered_byte_is_a_mismatch_naming_the_file_the_algorithm_and_both_hashes(card: Path) -> None:
    (card / "CLIPS" / "sums.sha256").write_text(tool("sha256sum", "A001C001.mov", "A001C002.mov", cwd=card / "CLIPS"))
    expected = hashlib.sha256((card / "CLIPS" / "A001C002.mov").read_bytes()).hexdigest()
    flip(card / "CLIPS" / "A001C002.mov")
    actual = hashlib.sha256((card / "CLIPS" / "A001C002.mov").read_bytes()).hexdigest()
    v = verify(card)
    assert v.reason == f"checksum mismatch: CLIPS/A001C002.mov sha256 expected {expected}, got {actual}"
    assert by_name(v)["CLIPS/A001C001.mov"].verified_by == ("CLIPS/sums.sha256",)  # names are the list's folder's


def test_a_listed_file_that_is_missing_makes_the_delivery_incomplete(card: Path) -> None:
    (card / "MD5SUMS").write_text(tool("md5sum", "CLIPS/A001C001.mov", "CLIPS/A001C002.mov", cwd=card))
    (card / "CLIPS" / "A001C002.mov").unlink()
    assert verify(card).reason == "incomplete: CLIPS/A001C002.mov listed in MD5SUMS is missing"


@pytest.mark.parametrize(
    ("make", "algorithm"),
    [
        (lambda d: tool("md5sum", "clip.mov", cwd=d).split()[0] + "\n", "md5"),  # a bare hash
        (lambda d: tool("md5sum", "clip.mov", cwd=d), "md5"),  # `HASH  name`
        (lambda d: tool("md5sum", "--tag", "clip.mov", cwd=d), "md5"),  # BSD style
        (lambda d: tool("sha1sum", "-b", "clip.mov", cwd=d), "sha1"),  # `HASH *name`
        (lambda d: tool("sha256sum", "clip.mov", cwd=d).replace("\n", "\r\n"), "sha256"),  # written on Windows
        (lambda d: tool("xxh64sum", "clip.mov", cwd=d), "xxh64"),
        (lambda d: tool("xxh128sum", "clip.mov", cwd=d), "xxh128"),
        (lambda d: tool("xxhsum", "-H3", "clip.mov", cwd=d), "xxh3"),  # xxhsum writes XXH3 as a BSD tag
    ],
    ids=["bare", "md5sum", "tag", "binary", "crlf", "xxh64", "xxh128", "xxh3"],
)
def test_a_sidecar_verifies_its_file(tmp_path: Path, make, algorithm: str) -> None:
    (tmp_path / "clip.mov").write_bytes(b"frames " * 5000)
    sidecar = f"clip.mov.{algorithm}"
    (tmp_path / sidecar).write_text(make(tmp_path), newline="")
    v = verify(tmp_path, Mode.REQUIRED, main="clip.mov")
    assert v.reason is None
    assert by_name(v)["clip.mov"].verified_by == (sidecar,)
    assert algorithm in by_name(v)["clip.mov"].hashes and "sha256" in by_name(v)["clip.mov"].hashes  # the main's
    flip(tmp_path / "clip.mov")
    assert verify(tmp_path, main="clip.mov").reason.startswith(f"checksum mismatch: clip.mov {algorithm} expected ")


def test_a_stem_sidecar_with_a_bare_hash_is_for_the_file_of_its_stem(tmp_path: Path) -> None:
    (tmp_path / "clip.mov").write_bytes(b"frames " * 5000)
    (tmp_path / "clip.srt").write_text("1\n00:00:00,000 --> 00:00:01,000\nhello\n")
    (tmp_path / "clip.md5").write_text(hashlib.md5((tmp_path / "clip.mov").read_bytes()).hexdigest())
    v = verify(tmp_path, Mode.REQUIRED, main="clip.mov")
    assert v.reason is None and by_name(v)["clip.mov"].verified_by == ("clip.md5",)


@pytest.mark.parametrize(
    "written", ["../secret.mov", "/etc/passwd", "CLIPS/../../secret.mov", "..\\secret.mov", "C:\\secret.mov"]
)
def test_a_name_leaving_the_delivery_is_refused_and_never_opened(card: Path, written: str) -> None:
    secret = card.parent / "secret.mov"
    secret.write_bytes(b"not the delivery's")
    digest = hashlib.md5(secret.read_bytes()).hexdigest()
    (card / "MD5SUMS").write_text(f"{digest}  {written}\n")
    v = verify(card)
    assert v.reason == f"incomplete: {written} listed in MD5SUMS is outside the delivery"
    assert all(i.verified_by == () for i in v.inputs)


def test_required_wants_the_main_file_covered_and_off_checks_nothing(tmp_path: Path) -> None:
    (tmp_path / "clip.mov").write_bytes(b"frames")
    (tmp_path / "clip.srt").write_text("subtitles")
    (tmp_path / "clip.srt.md5").write_text(hashlib.md5(b"subtitles").hexdigest())
    assert verify(tmp_path, Mode.AUTO, main="clip.mov").reason is None
    assert verify(tmp_path, Mode.REQUIRED, main="clip.mov").reason == "no checksum: clip.mov"
    (tmp_path / "clip.srt.md5").write_text("0" * 32)
    assert verify(tmp_path, Mode.AUTO, main="clip.mov").reason.startswith("checksum mismatch: clip.srt md5")
    off = verify(tmp_path, Mode.OFF, main="clip.mov")
    assert off.reason is None and all(i.verified_by == () for i in off.inputs)


def test_required_on_a_folder_wants_every_file_but_the_checksums_covered(card: Path) -> None:
    (card / "MD5SUMS").write_text(tool("md5sum", "CLIPS/A001C001.mov", "CLIPS/A001C002.mov", cwd=card))
    assert verify(card, Mode.REQUIRED).reason == "no checksum: A001.xml"  # not listed
    (card / "A001.xml.md5").write_text(hashlib.md5((card / "A001.xml").read_bytes()).hexdigest())
    assert verify(card, Mode.REQUIRED).reason is None


def test_a_checksum_file_that_is_not_one_is_a_mismatch(tmp_path: Path) -> None:
    (tmp_path / "clip.mov").write_bytes(b"frames")
    (tmp_path / "clip.mov.md5").write_text("this is not a checksum\nnor this\n")
    assert verify(tmp_path).reason.startswith("checksum mismatch: clip.mov.md5: cannot read the line")


LEGACY_MHL = """<?xml version="1.0" encoding="UTF-8"?>
<hashlist version="1.1">
  <creatorinfo><name>DIT</name><tool>ShotPut Pro 2021.1</tool><startdate>2024-01-01T10:00:00Z</startdate></creatorinfo>
  <hash>
    <file>CLIPS/A001C001.mov</file>
    <size>{size1}</size>
    <lastmodificationdate>2024-01-01T09:00:00Z</lastmodificationdate>
    <xxhash64be>{xxh64}</xxhash64be>
    <hashdate>2024-01-01T10:00:01Z</hashdate>
  </hash>
  <hash>
    <file>A001.xml</file>
    <size>{size2}</size>
    <md5>{md5}</md5>
  </hash>
</hashlist>
"""


def test_a_legacy_mhl_file_verifies_sizes_and_hashes(card: Path) -> None:
    clip, xml = (card / "CLIPS" / "A001C001.mov").read_bytes(), (card / "A001.xml").read_bytes()
    text = LEGACY_MHL.format(
        size1=len(clip), xxh64=xxhash.xxh64(clip).hexdigest(), size2=len(xml), md5=hashlib.md5(xml).hexdigest()
    )
    (card / "A001_2024-01-01_100000.mhl").write_text(text)
    v = verify(card)
    assert v.reason is None
    assert by_name(v)["CLIPS/A001C001.mov"].verified_by == ("A001_2024-01-01_100000.mhl",)
    assert by_name(v)["A001.xml"].verified_by == ("A001_2024-01-01_100000.mhl",)
    (card / "A001.xml").write_text("<clipinfo/>\n<!-- edited -->\n")
    assert verify(card).reason == f"checksum mismatch: A001.xml size expected {len(xml)}, got {len(xml) + 16}"


def ascmhl_create(root: Path, *args: str) -> None:
    subprocess.run([str(ASCMHL), "create", str(root), "-h", "xxh128", *args], check=True, capture_output=True)


def test_an_asc_mhl_history_made_by_the_reference_tool_verifies_every_file(card: Path) -> None:
    ascmhl_create(card)
    v = verify(card, Mode.REQUIRED)
    assert v.reason is None
    assert by_name(v)["CLIPS/A001C002.mov"].verified_by == ("ascmhl",)
    flip(card / "CLIPS" / "A001C002.mov")
    reason = verify(card).reason
    assert reason.startswith("checksum mismatch: CLIPS/A001C002.mov xxh128 expected ")


def test_an_asc_mhl_history_missing_a_file_is_incomplete(card: Path) -> None:
    ascmhl_create(card)
    (card / "CLIPS" / "A001C001.mov").unlink()
    assert verify(card).reason == "incomplete: CLIPS/A001C001.mov listed in ascmhl is missing"


def test_the_latest_generation_wins_and_a_tampered_generation_breaks_the_chain(card: Path) -> None:
    ascmhl_create(card)
    (card / "CLIPS" / "A001C003.mov").write_bytes(b"a third clip")
    ascmhl_create(card, "-h", "md5")  # generation 2: the new clip, and md5 beside xxh128 for all
    v = verify(card, Mode.REQUIRED)
    assert v.reason is None and by_name(v)["CLIPS/A001C003.mov"].verified_by == ("ascmhl",)
    assert "md5" in by_name(v)["CLIPS/A001C003.mov"].hashes
    first = sorted((card / "ascmhl").glob("0001_*.mhl"))[0]
    first.write_text(first.read_text().replace("<hostname>", "<hostname>x"))
    assert verify(card).reason.startswith(f"checksum mismatch: ascmhl/{first.name} c4 expected ")
    first.unlink()
    assert verify(card).reason == f"incomplete: ascmhl/{first.name} listed in ascmhl/ascmhl_chain.xml is missing"


def test_copy_hashing_copies_the_bytes_and_hashes_them_as_the_tools_do(card: Path, tmp_path: Path) -> None:
    source = card / "CLIPS" / "A001C001.mov"
    digest = checksums.copy_hashing(source, tmp_path / "copy.mov", ("md5", "sha256"))
    assert (tmp_path / "copy.mov").read_bytes() == source.read_bytes()
    assert digest.hashes["md5"] == tool("md5sum", str(source), cwd=tmp_path).split()[0]
    assert digest.hashes["xxh128"] == tool("xxh128sum", str(source), cwd=tmp_path).split()[0]
    assert digest == checksums.hash_file(source, ("md5", "sha256"))


def test_a_written_generation_passes_the_reference_tool_until_a_byte_changes(tmp_path: Path) -> None:
    result = tmp_path / "clip"
    (result / "thumbs").mkdir(parents=True)
    (result / "audio.wav").write_bytes(b"RIFF" + b"\0" * 5000)
    (result / "thumbs" / "0001.jpg").write_bytes(b"\xff\xd8 a thumbnail")
    (result / "manifest.json").write_text("{}\n")
    digests = {n: checksums.hash_file(result / n) for n in files_of(result)}
    generation.write(result, "clip", digests, "inputs: see manifest.json")
    check = subprocess.run([str(ASCMHL_DEBUG), "verify", str(result)], capture_output=True, text=True)
    assert check.returncode == 0, check.stdout + check.stderr
    flip(result / "audio.wav", 10)
    check = subprocess.run([str(ASCMHL_DEBUG), "verify", str(result)], capture_output=True, text=True)
    assert check.returncode != 0 and "audio.wav" in check.stdout + check.stderr


def test_a_nested_history_is_read_and_its_broken_chain_found(card: Path) -> None:
    ascmhl_create(card / "CLIPS")  # the clips' own history, as an offload of the clip folder left it
    ascmhl_create(card)  # the card's, which references it
    v = verify(card, Mode.REQUIRED)
    assert v.reason is None
    assert by_name(v)["CLIPS/A001C001.mov"].verified_by == ("CLIPS/ascmhl",)
    assert by_name(v)["A001.xml"].verified_by == ("ascmhl",)
    nested = sorted((card / "CLIPS" / "ascmhl").glob("0001_*.mhl"))[0]
    nested.write_text(nested.read_text().replace("<hostname>", "<hostname>x"))
    assert verify(card).reason.startswith(f"checksum mismatch: CLIPS/ascmhl/{nested.name} c4 expected ")


@pytest.mark.parametrize("size", [300_000, 5 << 20], ids=["small", "large"])  # written inline, or by its thread
def test_a_copy_that_runs_out_of_space_says_where(tmp_path: Path, tmpfs, size: int) -> None:
    source = tmp_path / "clip.mov"
    source.write_bytes(b"x" * size)
    full = tmpfs("256k")
    with pytest.raises(OSError) as caught:
        checksums.copy_hashing(source, full / "clip.mov", ("md5",))
    assert caught.value.errno == errno.ENOSPC and caught.value.filename == str(full / "clip.mov")


def test_hashes_computed_on_two_threads_are_the_tools_own(tmp_path: Path) -> None:
    big = tmp_path / "clip.mov"
    big.write_bytes(bytes(range(256)) * (12 << 12) + b"tail")  # 12 MiB and a bit: md5 and sha256 on two threads
    data = big.read_bytes()
    expected = {
        "md5": hashlib.md5(data).hexdigest(),
        "sha256": hashlib.sha256(data).hexdigest(),
        "xxh128": xxhash.xxh3_128(data).hexdigest(),
    }
    assert checksums.hash_file(big, ("md5", "sha256")).hashes == expected
    copied = checksums.copy_hashing(big, tmp_path / "copy.mov", ("md5", "sha256"))
    assert copied.hashes == expected and (tmp_path / "copy.mov").read_bytes() == data


def test_the_main_file_is_what_is_delivered_never_a_list_of_the_delivery(tmp_path: Path) -> None:
    (tmp_path / "MD5SUMS").write_text(f"{'0' * 32}  clip.mov\n")  # dropped alone into a `unit: file` inbox
    v = verify(tmp_path, main="MD5SUMS")
    assert v.reason is None and by_name(v)["MD5SUMS"].verified_by == ()


def test_what_the_reference_library_prints_stays_out_of_the_log(card: Path, capsys) -> None:
    ascmhl_create(card)
    (card / "ascmhl" / "notes.mhl").write_text("<hashlist/>")  # a name the library complains about, on stderr
    assert verify(card).reason is None
    assert capsys.readouterr().err == ""
