"""Every link and image of README.md leads somewhere: a relative target is a file of the
repository (resolved from README.md's folder), and an anchor (``#part``, ``page.md#part``) is
a heading of that page. Links inside code are not links."""

import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

FENCE = re.compile(r"^(```|~~~).*?^\1[^\n]*$", re.S | re.M)
CODE_SPAN = re.compile(r"(`+)(?!`).*?(?<!`)\1(?!`)", re.S)
INLINE = re.compile(r"!?\[(?:[^\[\]]|\[[^\[\]]*\])*\]\(\s*<?([^)\s>]+)>?(?:\s+[\"'(][^)]*)?\)")
REFERENCE = re.compile(r"^ {0,3}\[[^\]]+\]:\s*<?(\S+?)>?(?:\s.*)?$", re.M)
HTML = re.compile(r"<(?:a|img|source)\b[^>]*?\b(?:href|src)\s*=\s*[\"']([^\"']+)[\"']", re.I)
HEADING = re.compile(r"^ {0,3}#{1,6}\s+(.*?)\s*#*\s*$", re.M)


def link_targets(text: str) -> list[str]:
    """The targets of the Markdown links, images, reference definitions and HTML links and
    images of ``text``, in order, outside code blocks and code spans."""
    text = CODE_SPAN.sub("", FENCE.sub("", text))
    found = [(m.start(), m.group(1)) for pattern in (INLINE, REFERENCE, HTML)
             for m in pattern.finditer(text)]
    return [target for _, target in sorted(found)]


def anchors(text: str) -> set[str]:
    """The anchors of a Markdown page: its headings as GitHub and MkDocs make them ids
    (lower case, punctuation but ``-`` and ``_`` left out, spaces as ``-``), explicit
    ``{#id}`` attributes, and HTML ``id``/``name`` attributes."""
    text = FENCE.sub("", text)
    ids = set(re.findall(r"\{#([\w-]+)\}", text))
    ids |= set(re.findall(r"<[^>]*\b(?:id|name)\s*=\s*[\"']([^\"']+)[\"']", text))
    for title in HEADING.findall(text):
        title = re.sub(r"\{#[\w-]+\}", "", CODE_SPAN.sub(lambda m: m.group(0).strip("`"),
                                                          title))
        title = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", title)          # a link's text
        ids.add(re.sub(r"[^\w\- ]", "", title.strip().lower()).replace(" ", "-"))
    return ids


def broken_links(page: Path) -> list[str]:
    """What is wrong with each link of the Markdown file ``page`` that leads nowhere: a
    relative target that is not a file or folder, or an anchor that is not a heading of its
    page. Absolute URLs (``https:``, ``mailto:``) are not checked (no network)."""
    wrong = []
    for target in link_targets(page.read_text(encoding="utf-8")):
        if re.match(r"[a-z][a-z0-9+.-]*:", target, re.I) or target.startswith("//"):
            continue
        path, _, anchor = target.partition("#")
        where = (page.parent / path).resolve() if path else page
        if not where.exists():
            wrong.append(f"{target}: no such file")
        elif anchor and (where.suffix != ".md" or anchor not in anchors(
                where.read_text(encoding="utf-8"))):
            wrong.append(f"{target}: no heading #{anchor} in {where.name}")
    return wrong


def test_every_readme_link_leads_to_a_file_or_heading_of_the_repository():
    readme = REPO / "README.md"
    targets = link_targets(readme.read_text(encoding="utf-8"))
    assert "docs/data.md" in targets and "docs/img/sinusoid_fits.png" in targets, targets
    assert broken_links(readme) == []


def test_the_check_finds_missing_files_and_anchors_and_skips_code(tmp_path):
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "guide.md").write_text("# The `guide`\n\n## Step 1: install\n")
    page = tmp_path / "README.md"
    page.write_text("# Top part\n\nSee [the guide](docs/guide.md#step-1-install), "
                    "[a gone page](docs/gone.md), [no such part](docs/guide.md#step-2), "
                    "[up](#top-part), [down](#nowhere) and ![a plot](docs/img/x.png "
                    "\"title\").\n\n[ref]: docs/guide.md#the-guide\n"
                    '<img src="docs/missing.png">\n\n`[not a link](docs/none.md)`\n\n'
                    "```\n[nor this](docs/none.md)\n```\n[web](https://example.org/x)\n")
    assert link_targets(page.read_text()) == [
        "docs/guide.md#step-1-install", "docs/gone.md", "docs/guide.md#step-2", "#top-part",
        "#nowhere", "docs/img/x.png", "docs/guide.md#the-guide", "docs/missing.png",
        "https://example.org/x"]
    assert broken_links(page) == [
        "docs/gone.md: no such file", "docs/guide.md#step-2: no heading #step-2 in guide.md",
        "#nowhere: no heading #nowhere in README.md", "docs/img/x.png: no such file",
        "docs/missing.png: no such file"]
