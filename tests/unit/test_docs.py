"""Every relative link in README.md and docs/*.md leads somewhere: the file exists, its #anchor a heading there."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

FENCE = re.compile(r"^\s*(```|~~~)")
INLINE_CODE = re.compile(r"(`+).*?\1")
LINK = re.compile(r"(?<!\\)\[(?:[^\[\]]|\[[^\]]*\])*\]\(\s*<?([^)\s>]*)>?(?:\s+\"[^\"]*\")?\s*\)")
HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$")
SCHEME = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*:")


def documents() -> list[Path]:
    """README.md and every page under docs/."""
    return [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]


def prose(text: str) -> list[tuple[int, str]]:
    """(line number, line) outside fenced code blocks, with inline code spans removed."""
    lines, fenced = [], False
    for number, line in enumerate(text.splitlines(), 1):
        if FENCE.match(line):
            fenced = not fenced
            continue
        if not fenced:
            lines.append((number, INLINE_CODE.sub("", line)))
    return lines


def slug(heading: str) -> str:
    """The anchor GitHub gives a heading: its text lowercased, punctuation dropped, spaces as hyphens."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link in a heading keeps its text
    text = text.replace("`", "").strip().lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def anchors(path: Path) -> set[str]:
    """Every heading anchor of a markdown file, repeated headings numbered as GitHub numbers them."""
    seen: dict[str, int] = {}
    found = set()
    fenced = False
    for line in path.read_text(encoding="utf-8").splitlines():
        if FENCE.match(line):
            fenced = not fenced
            continue
        match = None if fenced else HEADING.match(line)
        if match:
            base = slug(match.group(2))
            count = seen.get(base, 0)
            seen[base] = count + 1
            found.add(base if count == 0 else f"{base}-{count}")
    return found


def broken_links(files: list[Path], root: Path = ROOT) -> list[str]:
    """'file:line: target (why)' for every relative link in `files` that leads nowhere."""
    problems = []
    for file in files:
        for number, line in prose(file.read_text(encoding="utf-8")):
            for target in LINK.findall(line):
                if not target or SCHEME.match(target):
                    continue  # web and mail links are not this test's to check
                path, _, anchor = target.partition("#")
                dest = (file.parent / path).resolve() if path else file
                where = f"{file.relative_to(root)}:{number}: {target}"
                if not dest.exists():
                    problems.append(f"{where} (no such file)")
                elif anchor and dest.suffix == ".md" and anchor not in anchors(dest):
                    problems.append(f"{where} (no heading '#{anchor}' in {dest.name})")
    return problems


def test_every_relative_link_resolves():
    assert (ROOT / "docs").is_dir()
    problems = broken_links(documents())
    assert not problems, "broken links:\n" + "\n".join(problems)


def test_a_broken_link_is_caught(tmp_path):
    (tmp_path / "docs").mkdir()
    page = tmp_path / "docs" / "page.md"
    page.write_text("# A page\n\n## Signals and `systemd`\n\n## Signals and systemd\n", encoding="utf-8")
    readme = tmp_path / "README.md"
    readme.write_text(
        "# Title\n\n"
        "[fine](docs/page.md#signals-and-systemd) and [again](docs/page.md#signals-and-systemd-1)\n"
        "[gone](docs/missing.md) and [bad anchor](docs/page.md#signals)\n"
        "[same page](#title) [same page, wrong](#nowhere)\n"
        "`[in code](docs/nothing.md)` [web](https://example.com/x)\n"
        "```\n[in a block](docs/nothing.md)\n```\n",
        encoding="utf-8",
    )
    problems = broken_links([readme, page], tmp_path)
    assert [p.split(": ", 1)[1] for p in problems] == [
        "docs/missing.md (no such file)",
        "docs/page.md#signals (no heading '#signals' in page.md)",
        "#nowhere (no heading '#nowhere' in README.md)",
    ]


def test_the_code_s_contract_sections_exist():
    # Comments in daemon/chute cite "contract §N": each N must be a section of docs/contract.md.
    cited = set()
    for source in (ROOT / "daemon" / "chute").rglob("*.py"):
        cited |= set(re.findall(r"contract §(\d+)", source.read_text(encoding="utf-8")))
    contract = (ROOT / "docs" / "contract.md").read_text(encoding="utf-8")
    sections = set(re.findall(r"^## (\d+)\. ", contract, re.MULTILINE))
    assert cited and cited <= sections, sorted(cited - sections)
