"""The Python examples of docs/data.md run as written (each in a fresh folder), and a print
whose comment shows its output (``print(x.shape)  # (360, 32)``) prints those values."""

import re
from pathlib import Path

import pytest

DOC = Path(__file__).resolve().parents[1] / "docs" / "data.md"
BLOCKS = re.findall(r"```python\n(.*?)```", DOC.read_text(), re.DOTALL)
VALUES = re.compile(r"-?\d+(?:\.\d+)?|'[^']*'")
"""The numbers and quoted names of a line: what a shown output and a printed line share,
whichever way each writes a shape (``(360, 32)``, ``[4, 15]``, ``torch.Size([4, 15])``)."""


def shown_outputs(block: str) -> list[list[str]]:
    """The values each print shows in its trailing comment, where that comment reads as
    output (``print(x.shape)  # (360, 32)``, ``print(names)  # ['a', 'b']``)."""
    return [VALUES.findall(m) for m in re.findall(r"^print\(.*\)\s+#\s*([\[(].*)$", block,
                                                   re.MULTILINE)]


def test_the_guide_has_examples():
    assert len(BLOCKS) >= 3
    assert sum(len(shown_outputs(b)) for b in BLOCKS) >= 3


def test_a_shown_output_is_read_as_its_values():
    assert shown_outputs("print(x.shape, y.shape)   # (360, 32) (360,)\nprint(a)  # no") == [
        ["360", "32", "360"]]
    assert VALUES.findall("torch.Size([360, 32]) torch.Size([360])") == ["360", "32", "360"]


@pytest.mark.parametrize("i", range(len(BLOCKS)))
def test_example_runs(i, tmp_path, monkeypatch, capsys):
    import torch

    monkeypatch.chdir(tmp_path)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        exec(compile(BLOCKS[i], f"docs/data.md example {i + 1}", "exec"), {"__name__": "doc"})
    finally:
        torch.set_num_threads(threads)
    out = capsys.readouterr().out
    assert out.strip()                              # every example prints what it shows
    printed = [VALUES.findall(line) for line in out.splitlines()]
    for shown in shown_outputs(BLOCKS[i]):
        assert shown in printed, f"example {i + 1} shows {shown}, printed:\n{out}"


def _section(title: str) -> str:
    """The text of docs/data.md's section ``### title``, up to the next heading."""
    text = DOC.read_text()
    start = text.index(f"### {title}\n")
    end = text.find("\n#", start + 1)
    return text[start:end if end >= 0 else len(text)]


def _table_rows(section: str) -> dict[str, str]:
    """problem -> message cell, of the two-column table in ``section``."""
    rows = re.findall(r"^\| (.+?) \| (.+) \|$", section, re.MULTILINE)
    return {problem: cell for problem, cell in rows if problem not in ("problem", "---")}


def _not_utf8() -> bytes:
    """A CSV whose first byte that is not UTF-8 sits at offset 1520, on line 41."""
    head = b"text,label\n" + b"a" * 35 + b",x\n" + b"".join(
        b"t%034d,x\n" % i for i in range(38))              # 11 + 39 * 38 = 1493 bytes
    return head + b"a" * 27 + b"\xe9,x\n"


_SWAPPED = ("text,label\nsports,The referee lost.\nsports,The match ended.\n"
            "weather,The storm closed the roads.\nweather,Rain all day.\n")
_SMALL = "text,label\n" + "".join(f"{c}{i},{c}\n" for c in ("a", "b") for i in range(6)) + \
    "o1,odd\no2,odd\nr1,rare\nr2,rare\nr3,rare\n"
_TEN = "text,label\n" + "".join(f"{c}{i},{c}\n" for c in "abcdefghij" for i in range(6))
TABLE_CASES = {
    # problem (as the table names it): (file, its contents or None, TextTable arguments)
    "no such file": ("topics.csv", None, {}),
    "another extension": ("t.xlsx", "text,label\n", {}),
    "a column is missing": ("t.csv", "text,label\na,x\n", {"text_column": "sentence"}),
    "a CSV or TSV without a header row (its first line reads as data)":
        ("t.csv", "The storm closed the coastal roads.,weather\nThe referee lost.,sports\n", {}),
    "empty labels or texts": ("t.csv", "text,label\na,\nb,x\nc,y\nd,\n", {}),
    "labels or texts with no visible character (a zero-width space, a bidi control, a bare "
    "combining accent)": ("t.csv", "text,label\n\u200b\u200b,pos\nok,neg\n\u202e,pos\n", {}),
    "a JSONL row without the text (or label) field":
        ("t.jsonl", '{"text": "a", "label": "x"}\n{"label": "y"}\n', {}),
    "a column named twice": ("t.csv", "text,text,label\na,b,x\n", {}),
    "a JSON list or object as a text or label":
        ("t.jsonl", '{"text": "a", "label": "x"}\n{"text": "b", "label": "x"}\n'
                    '{"text": ["c"], "label": "y"}\n', {}),
    "more fields than the header (an unquoted comma in a text)":
        ("t.csv", "text,label\na,x\nb,c,x\nd,x\ne,f,x\n", {}),
    "a file that is not UTF-8 (Excel's plain CSV, a UTF-16 file)": ("t.csv", _not_utf8(), {}),
    "a label spelled two ways": ("t.csv", "text,label\nhi,Sports\nyo,sports\n", {}),
    "a text under two labels":
        ("t.csv", "text,label\nGreat movie,pos\ngreat movie,neg\nx,pos\ny,neg\nz,pos\n", {}),
    "the text and label columns swapped (most rows have a label of their own)":
        ("t.csv", _SWAPPED, {}),
    "fewer classes than ways": ("t.csv", _TEN, {"split": "test", "ways": 4}),
    "classes too small for shots + queries": ("t.csv", _SMALL, {"ways": 2}),
}
"""A table that gives each error of "When the table is wrong" (shots=1, queries=5)."""


def test_every_table_error_the_guide_shows_has_a_case():
    rows = _table_rows(_section("When the table is wrong"))
    quoted = {p for p, cell in rows.items() if "`" in cell}     # "the line" quotes nothing
    assert len(quoted) >= 15
    assert quoted == set(TABLE_CASES)


@pytest.mark.parametrize("problem", sorted(TABLE_CASES))
def test_a_table_error_the_guide_quotes_is_the_one_raised(problem, tmp_path, monkeypatch):
    """Each quoted message is the error's text as far as it quotes it: ``[...]`` stands for
    what it leaves out, a cell that opens with the quote quotes the error's start, and the
    last quote ends where the error ends."""
    from metaloop.tasks.text_table import TextTable

    cell = _table_rows(_section("When the table is wrong"))[problem]
    name, contents, kwargs = TABLE_CASES[problem]
    monkeypatch.chdir(tmp_path)
    if isinstance(contents, bytes):
        Path(name).write_bytes(contents)
    elif contents is not None:
        Path(name).write_text(contents, encoding="utf-8")
    with pytest.raises(ValueError) as got:
        TextTable(name, **{"shots": 1, "queries": 5, **kwargs})
    message = str(got.value)
    quotes = re.findall(r"`([^`]+)`", cell)
    pieces = [p for q in quotes for p in q.split("[...]")]
    if cell.startswith("`"):
        assert message.startswith(pieces[0]), f"{problem}: {message}"
    assert message.endswith(pieces[-1]), f"{problem}: {message}"
    at = 0
    for piece in pieces:
        found = message.find(piece, at)
        assert found >= 0, f"{problem}: {piece!r} is not in (the rest of) {message!r}"
        at = found + len(piece)
