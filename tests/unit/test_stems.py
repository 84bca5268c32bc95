"""`unit: stem`: which names are main files, and which sidecars go with each (docs/configuration.md)."""

from __future__ import annotations

from chute.stems import Stems, stem_of


def test_a_stem_is_the_name_without_its_last_suffix() -> None:
    assert [stem_of(n) for n in ("clip.mov", "clip.v2.mov", "README", ".hidden")] == [
        "clip",
        "clip.v2",
        "README",
        ".hidden",
    ]


def test_sidecars_are_the_other_files_sharing_the_main_files_stem() -> None:
    names = [
        "clip.mov",
        "clip.srt",
        "clip.en.srt",
        "clip.mov.md5",
        "clip.xml",
        "clipper.srt",
        "other.srt",
        "clip.srt.part",
    ]
    assert Stems(["*"], []).sidecars("clip.mov", names) == ["clip.en.srt", "clip.mov.md5", "clip.srt", "clip.xml"]


def test_a_sidecar_goes_with_the_main_file_of_the_longest_stem_and_never_is_one() -> None:
    stems = Stems(["*"], [])
    names = ["clip.mov", "clip.v2.mov", "clip.srt", "clip.v2.srt", "clip.md5"]
    assert stems.sidecars("clip.mov", names) == ["clip.md5", "clip.srt"]
    assert stems.sidecars("clip.v2.mov", names) == ["clip.v2.srt"]
    assert not stems.is_main("clip.srt") and not stems.is_main("clip.MD5")
    assert stems.main_of("lonely.srt", names) is None


def test_include_picks_the_main_files_and_exclude_keeps_a_name_out_of_every_group() -> None:
    stems = Stems(["*.mxf"], ["*.xml"])
    names = ["clip.mxf", "clip.wav", "clip.xml", "clip.srt"]
    assert not stems.is_main("clip.wav")
    assert stems.sidecars("clip.mxf", names) == ["clip.srt", "clip.wav"]
