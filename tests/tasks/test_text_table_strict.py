"""A CSV or TSV text table is read strictly: a quote left open, whose text Python's lenient
csv reading ran on into the next rows (filing them under a later row's label, without a
word), or more after a closing quote than the delimiter, is an error naming the lines; the
files that are well formed (quoted line breaks, doubled quotes, a BOM, CR LF, TSV) read as
before."""

from __future__ import annotations

import csv

import pytest

from metaloop.cli.main import main
from metaloop.tasks.text_table import read_text_table, read_texts

TOPICS = ("sports", "weather", "cooking", "music")


def _quoted_rows(open_at: int | None = None) -> str:
    """A table of 24 texts, every text quoted, the one on line ``open_at`` without its
    closing quote."""
    lines = ["text,label"]
    for topic in TOPICS:
        for i in range(6):
            lines.append(f'"A sentence about {topic} number {i}.",{topic}')
    if open_at is not None:
        lines[open_at - 1] = lines[open_at - 1].replace('.",', ".,")
    return "\n".join(lines) + "\n"


def test_a_quote_left_open_in_an_all_quoted_table_is_named_not_read(tmp_path):
    """Line 7's text lost its closing quote: the lenient reading made lines 7 and 8 one text
    labelled 'weather' (line 8's), 23 rows, and the run went on (exit 0)."""
    path = tmp_path / "t.csv"
    path.write_text(_quoted_rows(open_at=7))
    with pytest.raises(ValueError) as e:
        read_text_table(path)
    message = str(e.value)
    assert str(path) in message and "starts at line 7" in message
    assert "closes at line 8" in message and "line 8 reads" in message
    assert "a quote left open at line 7" in message and '("")' in message
    with pytest.raises(ValueError, match="starts at line 7"):
        read_texts(path)


def test_text_after_the_closing_quote_of_a_one_line_text_reads_as_before(tmp_path):
    """A text that starts with a quoted phrase (`"Best film" - a review`) swallows no row: it
    reads as the csv module always read it, quotes dropped, in CSV and TSV alike."""
    path = tmp_path / "t.csv"
    path.write_text('text,label\n"Great" movie,pos\nbad film,neg\n')
    assert read_text_table(path) == (["Great movie", "bad film"], ["pos", "neg"])
    tsv = tmp_path / "t.tsv"
    tsv.write_text('text\tlabel\n"Best film of the year" - NYT review\tpos\nplain\tneg\n')
    assert read_text_table(tsv) == (["Best film of the year - NYT review", "plain"],
                                    ["pos", "neg"])


def test_a_quote_never_closed_is_named(tmp_path):
    path = tmp_path / "t.csv"
    path.write_text('text,label\ngood,pos\n"never closed, neg\n')
    with pytest.raises(ValueError, match=r"line 3"):
        read_text_table(path)


def test_well_formed_tables_read_as_before(tmp_path):
    rows = [("Dear sir,\nthanks, truly,\nyours", "letter"), ('She said "hi", twice', "note"),
            ("plain text", "note"), ('""', "letter"), ("tab\there", "note")]
    for name, kw, encoding in (("a.csv", {}, "utf-8"), ("bom.csv", {}, "utf-8-sig"),
                               ("crlf.csv", {"lineterminator": "\r\n"}, "utf-8"),
                               ("t.tsv", {"delimiter": "\t"}, "utf-8")):
        with (tmp_path / name).open("w", newline="", encoding=encoding) as f:
            w = csv.writer(f, **kw)
            w.writerow(["text", "label"])
            w.writerows(rows)
        texts, labels = read_text_table(tmp_path / name)
        assert texts == [t.strip() for t, _ in rows], name
        assert labels == [lab for _, lab in rows], name
    # a quote inside an unquoted text is a character of it
    (tmp_path / "mid.csv").write_text('text,label\nhe said "hi" then,x\nok,y\n')
    assert read_text_table(tmp_path / "mid.csv")[0] == ['he said "hi" then', "ok"]


def test_another_delimiter_is_still_named_before_a_quote_error(tmp_path):
    path = tmp_path / "t.csv"
    path.write_text('text;label\n"one";a\n"two";b\n')
    with pytest.raises(ValueError, match=r"the header looks separated by ';'"):
        read_text_table(path)


def test_adapt_refuses_the_table_with_exit_2_before_the_model_loads(tmp_path, capsys):
    path = tmp_path / "t.csv"
    path.write_text(_quoted_rows(open_at=7))
    out = tmp_path / "out"
    assert main(["adapt", "--family", "table", "--data", str(path), "--ways", "3", "--shots",
                 "1", "--queries", "2", "--tasks", "2", "--approaches", "probe-ridge",
                 "--out", str(out), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "metaloop adapt: error:" in err and "starts at line 7" in err
    assert not out.exists()
