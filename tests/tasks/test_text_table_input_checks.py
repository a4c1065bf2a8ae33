"""Text tables a user writes by hand: texts with nothing visible, labels that differ by an
invisible character, swapped columns, a missing header row, a JSONL row without the text
field, and 1-way tasks, each refused by name."""

from __future__ import annotations

import json

import pytest

from metaloop.tasks import TextTable
from metaloop.tasks.text_table import folded, read_text_table, read_texts, visible

CLASSES = ("cooking", "music", "sports", "weather")


def _csv(path, lines, header="text,label"):
    path.write_text("\n".join(([header] if header else []) + lines) + "\n", encoding="utf-8")
    return path


def _good(per_class=4):
    return [f"text {j} about {c},{c}" for c in CLASSES for j in range(per_class)]


@pytest.mark.parametrize("blank", ["\u200b\u200b", "\u202e\u202d", "\u0301", "\x07\x1b",
                                   "\ufeff \u2060", "\u200b\u3000\u00a0"])
def test_a_text_with_nothing_visible_is_refused_as_an_empty_one(tmp_path, blank):
    """Zero-width spaces, bidi controls, a bare combining accent or control characters
    tokenize as [CLS][SEP], as an empty text does: two such rows under two labels were one
    input with two labels."""
    lines = _good() + [f'"{blank}",cooking', f'"{blank}{blank}",music']
    path = _csv(tmp_path / "t.csv", lines)
    with pytest.raises(ValueError, match=r"t.csv: 2 row\(s\) have texts with no visible "
                                         r"character \(column 'text'\) at lines 18, 19: only "
                                         r"white space, control, format or combining "
                                         r"characters \(e.g. .*\), which a tokenizer reads as "
                                         r"an empty text; fill or remove them$"):
        read_text_table(path)
    with pytest.raises(ValueError, match="no visible character"):
        TextTable(path, ways=2)
    with pytest.raises(ValueError, match=r"1 row\(s\) have texts with no visible .* line 3"):
        read_texts(_csv(tmp_path / "q.csv", ["a text", f'"{blank}"'], header="text"))
    txt = tmp_path / "q.txt"
    txt.write_text(f"a text\n\n{blank}\nanother\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"q.txt: 1 line\(s\) have no visible character, at "
                                         r"line 3: only white space"):
        read_texts(txt)


def test_a_label_with_nothing_visible_is_refused(tmp_path):
    path = _csv(tmp_path / "t.csv", _good() + ['a text,"\u200b"'])
    with pytest.raises(ValueError, match=r"1 row\(s\) have labels with no visible character "
                                         r"\(column 'label'\) at line 18: .*e.g. '\\u200b'"):
        read_text_table(path)


@pytest.mark.parametrize("text", ["e\u0301", "\U0001f44d", "\u0627\u200f", "\u200ba\u200b",
                                  "\u05d0", "\u2764\ufe0f"])
def test_texts_with_a_visible_character_are_read(tmp_path, text):
    assert visible(text)
    path = _csv(tmp_path / "t.csv", _good() + [f'"{text}",cooking'])
    assert read_text_table(path)[0][-1] == text


@pytest.mark.parametrize("suffix", [".csv", ".jsonl"])
def test_labels_that_differ_by_a_format_character_are_one_class_spelled_two_ways(tmp_path,
                                                                                 suffix):
    """"sports" and "sports\\u200b" were two classes that print alike."""
    rows = [(f"text {j} about {c}", c) for c in CLASSES for j in range(3)]
    rows += [("one more sports text", "sports\u200b"), ("and a last", "\u2066music\u2069")]
    path = tmp_path / f"t{suffix}"
    if suffix == ".jsonl":
        path.write_text("".join(json.dumps({"text": t, "label": lab}) + "\n"
                                for t, lab in rows))
    else:
        _csv(path, [f"{t},{lab}" for t, lab in rows])
    with pytest.raises(ValueError, match=r"2 label\(s\) are spelled more than one way, "
                                         r"differing only in case, white space, invisible "
                                         r"format characters or Unicode form: 'music' and "
                                         r"'\\u2066music\\u2069'; 'sports' and "
                                         r"'sports\\u200b'; spell each class one way"):
        read_text_table(path)
    assert folded("sports\u200b") == folded("\u2066Sports\u2069") == "sports"
    assert folded("soft\u00adhyphen") == "softhyphen" and folded("a \u200b b") == "a b"


def test_swapped_columns_give_a_short_error_that_asks_whether_they_are_swapped(tmp_path):
    """--text-column label --label-column text over 4 classes x 500 rows was a 53 KB
    error: each of the 4 "texts" listed its 500 "labels"."""
    lines = [f"text number {j} about {c},{c}" for c in CLASSES for j in range(500)]
    path = _csv(tmp_path / "big.csv", lines)
    with pytest.raises(ValueError) as e:
        TextTable(path, text_column="label", label_column="text", ways=2)
    msg = str(e.value)
    assert len(msg) < 1000, len(msg)
    assert msg.count("'cooking' as 'text number 0 about cooking', 'text number 1 about "
                     "cooking', 'text number 2 about cooking' and 497 more;") == 1
    assert "4 text(s) carry more than one label" in msg
    assert msg.endswith("; 2000 of the 2000 rows have labels of their own, as texts do: are "
                        "the text and label columns swapped? (text_column= and label_column=; "
                        "--text-column and --label-column in metaloop adapt and predict)")


def test_a_text_with_two_labels_in_a_sound_table_is_not_called_swapped(tmp_path):
    path = _csv(tmp_path / "t.csv", _good() + ["text 0 about cooking,music"])
    with pytest.raises(ValueError, match=r"1 text\(s\) carry more than one label, e.g. "
                                         r"'text 0 about cooking' as 'cooking', 'music'; .*"
                                         r"fix or remove those rows$"):
        TextTable(path, ways=2)


@pytest.mark.parametrize("first", ["Yesterday the striker was in the news.,sports",
                                   "Goal!,sports", "great match,sports"])
def test_a_csv_without_a_header_row_is_asked_about(tmp_path, first):
    """A header-less CSV said only "has no text column 'text'; its columns are
    ['Yesterday the striker was in the news.', 'sports']"."""
    lines = [first, "great match,sports", "a storm is coming,weather", "rain again,weather"]
    path = _csv(tmp_path / "t.csv", lines, header=None)
    with pytest.raises(ValueError, match=r"t.csv has no text column 'text'; its columns "
                                         r"are \[.*, 'sports'\]; its first line reads as "
                                         r"data: does the file have a header row\? Add a "
                                         r"first line that names the columns$"):
        read_text_table(path)


def test_a_header_that_names_other_columns_is_not_asked_about(tmp_path):
    path = _csv(tmp_path / "t.csv", ["a text,sports", "another,weather"],
                header="sentence,category")
    with pytest.raises(ValueError) as e:
        read_text_table(path)
    assert str(e.value).endswith("has no text column 'text'; its columns are ['sentence', "
                                 "'category']")


def test_a_jsonl_row_without_the_text_field_is_named_as_such(tmp_path):
    """A row with no "text" key was reported as an empty text."""
    path = tmp_path / "t.jsonl"
    rows = [{"text": f"text {j} about {c}", "label": c} for c in CLASSES for j in range(2)]
    rows[2] = {"label": "music", "txt": "a typo in the key"}
    rows[5] = {"label": "sports"}
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    with pytest.raises(ValueError, match=r"t.jsonl: 2 row\(s\) have no field 'text' \(the "
                                         r"text\) at lines 3, 6; add it or remove them$"):
        read_text_table(path)
    with pytest.raises(ValueError, match=r"have no field 'text' \(the text\) at lines 3, 6"):
        read_texts(path)


def test_text_table_refuses_fewer_than_two_ways(tmp_path):
    """ways=1 was accepted by the API while --ways 1 is refused: every 1-way task is
    answered right."""
    path = _csv(tmp_path / "t.csv", _good())
    with pytest.raises(ValueError, match=r"^TextTable ways must be >= 2: a 1-way task is "
                                         r"always answered right, got 1$"):
        TextTable(path, ways=1, queries=3)
    assert TextTable(path, ways=2, queries=3).ways == 2
