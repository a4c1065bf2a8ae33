"""TextTable: CSV, TSV and JSONL tables of labelled texts as N-way K-shot tasks; class splits,
sampling determinism, and a named error for each kind of bad table."""

from __future__ import annotations

import csv
import json
import re

import pytest
import torch

import metaloop as ml
from metaloop.tasks import TextTable
from metaloop.tasks.protocol import TaskFamily
from metaloop.tasks.splits import split_classes
from metaloop.tasks.text_table import read_text_table, read_texts

CLASSES = [f"topic_{i:02d}" for i in range(10)]


def _rows(classes=CLASSES, per_class=6):
    # texts with a comma, quotes and a newline, to exercise CSV quoting
    return [{"text": f'text {j} of {c}, "quoted"\nsecond line', "label": c}
            for c in classes for j in range(per_class)]


def write_table(path, rows, columns=("text", "label"), delimiter=None):
    """Write rows (dicts) as CSV / TSV (by extension, or ``delimiter``) or JSONL."""
    if path.suffix == ".jsonl":
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))
        return path
    sep = delimiter or ("\t" if path.suffix == ".tsv" else ",")
    with path.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(columns), delimiter=sep, extrasaction="ignore")
        w.writeheader()
        w.writerows(rows)
    return path


@pytest.fixture
def table(tmp_path):
    return write_table(tmp_path / "t.csv", _rows())


@pytest.mark.parametrize("suffix", [".csv", ".tsv", ".jsonl"])
def test_formats_read_the_same_examples_and_tasks(tmp_path, table, suffix):
    other = write_table(tmp_path / f"u{suffix}", _rows())
    a = TextTable(table, ways=3, shots=2, queries=3)
    b = TextTable(other, ways=3, shots=2, queries=3)
    assert b.texts == a.texts and torch.equal(b.labels, a.labels)
    assert b.class_names == CLASSES and b.num_classes == 10 and b.kind == "classification"
    assert 'text 0 of topic_00, "quoted"\nsecond line' in b.texts      # quoting survived
    ba = a.sample(4, torch.Generator().manual_seed(3))
    bb = b.sample(4, torch.Generator().manual_seed(3))
    assert torch.equal(ba.support_x, bb.support_x) and torch.equal(ba.classes, bb.classes)


def test_bom_other_delimiter_and_column_names(tmp_path):
    path = tmp_path / "semi.csv"
    rows = [{"sentence": f"{c}{j}", "topic": c} for c in ("a", "b") for j in range(3)]
    write_table(path, rows, columns=("topic", "sentence"), delimiter=";")
    path.write_bytes(b"\xef\xbb\xbf" + path.read_bytes())                  # Excel's BOM
    fam = TextTable(path, text_column="sentence", label_column="topic", delimiter=";",
                    ways=2, shots=1, queries=2)
    assert fam.class_names == ["a", "b"] and fam.texts[:3] == ["a0", "a1", "a2"]


def test_jsonl_numbers_become_strings_and_blank_lines_are_skipped(tmp_path):
    path = tmp_path / "n.jsonl"
    path.write_text("".join(json.dumps({"text": f"t{j}", "label": j % 2}) + "\n\n"
                            for j in range(6)))
    texts, labels = read_text_table(path)
    assert labels == ["0", "1"] * 3 and texts[:2] == ["t0", "t1"]


def test_sample_shapes_labels_and_class_membership(table):
    fam = TextTable(table, ways=4, shots=2, queries=3)
    b = fam.sample(5, torch.Generator().manual_seed(0))
    assert b.support_x.shape == (5, 8, 1) and b.query_x.shape == (5, 12, 1)
    assert b.support_x.dtype == torch.float32 and b.classes.shape == (5, 4)
    assert b.support_y[0].tolist() == [0, 0, 1, 1, 2, 2, 3, 3]
    assert b.query_y[0].tolist() == [0, 0, 0, 1, 1, 1, 2, 2, 2, 3, 3, 3]
    for i in range(5):
        names = [fam.class_names[int(c)] for c in b.classes[i]]
        assert len(set(names)) == 4
        texts = fam.text_of(torch.cat([b.support_x[i], b.query_x[i]]))
        labels = torch.cat([b.support_y[i], b.query_y[i]]).tolist()
        assert len(set(texts)) == 20                       # no text twice in a task
        for t, y in zip(texts, labels):
            assert f"of {names[y]}," in t                  # every text is of its class
    assert fam.wordings(b.classes[0]) == [{"name": n, "words": n.replace("_", " ")}
                                          for n in (fam.class_names[int(c)]
                                                    for c in b.classes[0])]


@pytest.mark.parametrize("classes, message", [
    ([-1], r"class id -1 is outside \[0, 10\)"),         # was the last class, silently
    ([10], r"class id 10 is outside \[0, 10\)"),         # was a bare IndexError
    ([1.0], r"class ids must be ints, got 1\.0"),
    (torch.tensor([0.0, 1.0]), r"classes must be integer class ids \[ways\], got "
                               r"torch\.float32"),
])
def test_wordings_name_a_class_id_out_of_range(table, classes, message):
    fam = TextTable(table, ways=3, shots=1, queries=2, split="all")
    assert fam.num_classes == 10
    with pytest.raises(ValueError, match=rf"^TextTable\.wordings: {message}"):
        fam.wordings(classes)
    assert fam.wordings(torch.tensor([9, 0]))[0]["name"] == fam.class_names[9]


def test_more_texts_than_float32_ids_hold_are_refused_without_a_tokenizer(monkeypatch):
    from metaloop.tasks import text_table
    monkeypatch.setattr(text_table, "EXACT_IDS", 3)          # 2**24 texts, in small
    assert text_table.text_inputs(None, ["a", "b", "c"], "T")[:, 0].tolist() == [0, 1, 2]
    with pytest.raises(ValueError, match=r"^T: 4 texts without a tokenizer: their ids must be "
                                         r"below 2\*\*24 to be exact in float32"):
        text_table.text_inputs(None, ["a", "b", "c", "d"], "T")


def test_sampling_is_deterministic_in_the_seed(table):
    fam = TextTable(table, ways=3, shots=1, queries=2)
    a, b = (fam.sample(6, torch.Generator().manual_seed(7)) for _ in range(2))
    c = fam.sample(6, torch.Generator().manual_seed(8))
    assert torch.equal(a.support_x, b.support_x) and torch.equal(a.query_x, b.query_x)
    assert torch.equal(a.classes, b.classes)
    assert not torch.equal(a.support_x, c.support_x)



def test_sample_takes_a_generator_and_classes_a_list(tmp_path):
    """``sample(2, 0)`` failed inside torch.rand ("received an invalid combination of
    arguments ... generator=int"), and ``classes="ab"`` was read as the classes "a" and
    "b"."""
    path = write_table(tmp_path / "t.csv", _rows(["a", "b", "ab"], per_class=3))
    fam = TextTable(path, ways=2, shots=1, queries=2)
    with pytest.raises(TypeError, match=r"TextTable.sample generator must be a torch.Generator "
                                        r"or None, got int 0; .*manual_seed\(0\)"):
        fam.sample(2, 0)
    with pytest.raises(ValueError, match=r"TextTable classes must be a list of class names, "
                                         r"not one string: got 'ab'.*\['ab'\]"):
        TextTable(path, ways=2, shots=1, queries=2, classes="ab")
    assert TextTable(path, ways=2, shots=1, queries=2,
                     classes=["ab", "b"]).class_names == ["ab", "b"]

def test_splits_are_disjoint_and_follow_split_classes(table):
    train, val, test = split_classes(CLASSES, (0.6, 0.2, 0.2), seed=4)
    fams = {s: TextTable(table, ways=2, shots=1, queries=1, split=s, fractions=(0.6, 0.2, 0.2),
                         split_seed=4) for s in ("train", "val", "test", "trainval")}
    assert fams["train"].class_names == train and fams["val"].class_names == val
    assert fams["test"].class_names == test
    assert fams["trainval"].class_names == sorted(train + val)
    assert sorted(train + val + test) == CLASSES
    assert len(test) == 2 and not set(test) & set(train + val)
    texts = fams["test"].texts
    assert all(any(f"of {c}," in t for c in test) for t in texts) and len(texts) == 12
    other = TextTable(table, ways=2, shots=1, queries=1, split="test", split_seed=5,
                      fractions=(0.6, 0.2, 0.2))
    assert other.class_names == split_classes(CLASSES, (0.6, 0.2, 0.2), seed=5)[2]


def test_explicit_classes_tokenizer_and_protocol(table):
    def tokenizer(texts):                       # [N, 3]: length, and two fixed ids
        return torch.tensor([[len(t), 7, 0] for t in texts])
    fam = TextTable(table, ways=2, shots=1, queries=2, classes=["topic_03", "topic_01"],
                    tokenizer=tokenizer)
    assert fam.class_names == ["topic_01", "topic_03"] and fam.input_shape == (3,)
    b = fam.sample(2, torch.Generator().manual_seed(0))
    assert b.support_x.shape == (2, 2, 3) and b.support_x[0, 0, 1] == 7
    assert isinstance(fam, TaskFamily) and ml.tasks.TextTable is TextTable
    with pytest.raises(ValueError, match="needs text-id inputs"):
        fam.text_of(b.support_x[0])


def test_text_of_takes_one_task_and_names_a_batch(table):
    """A [B, N, 1] batch gave one text per task (x[:, 0] is its first row) without a word;
    a single id [1] was an IndexError."""
    fam = TextTable(table, ways=2, shots=1, queries=1)
    b = fam.sample(3, torch.Generator().manual_seed(0))
    assert len(fam.text_of(b.support_x[1])) == 2
    with pytest.raises(ValueError, match=r"one task's text ids \[N, 1\], got \[3, 2, 1\] "
                                         r"\(a batch of tasks: give one, e\.g\. x\[0\]\)"):
        fam.text_of(b.support_x)
    with pytest.raises(ValueError, match=r"got \[1\]"):
        fam.text_of(b.support_x[0, 0])
    with pytest.raises(ValueError, match=r"ids \[-1\] are outside the [0-9]+ texts"):
        fam.text_of(torch.tensor([[-1.0]]))


def test_with_shots_shares_texts_and_rechecks_sizes(table):
    fam = TextTable(table, ways=3, shots=1, queries=2)
    five = fam.with_shots(5, 1)
    assert (five.shots, five.queries, five.ways) == (5, 1, 3) and five.texts is fam.texts
    assert five.sample(1).support_x.shape == (1, 15, 1)
    with pytest.raises(ValueError, match="10 class.es. have fewer than shots"):
        fam.with_shots(5, 2)


def test_drop_small_drops_and_names_the_classes(tmp_path):
    rows = _rows(CLASSES[:4]) + _rows(["tiny", "wee"], per_class=2)
    path = write_table(tmp_path / "s.csv", rows)
    with pytest.raises(ValueError, match=r"2 class\(es\) have fewer than shots \+ queries = "
                       r"1 \+ 2 = 3 texts: 'tiny' \(2\), 'wee' \(2\); .*drop_small=True"):
        TextTable(path, ways=2, shots=1, queries=2)
    fam = TextTable(path, ways=2, shots=1, queries=2, drop_small=True)
    assert fam.dropped == ["tiny", "wee"] and fam.class_names == CLASSES[:4]
    assert fam.describe() == ("24 texts in 4 classes; dropped 2 class(es) with fewer than 3 "
                              "texts, e.g. 'tiny'")
    assert TextTable(path, ways=2, shots=1, queries=1).dropped == []
    # fewer shots bring the classes back
    assert fam.with_shots(1, 1).class_names == sorted(CLASSES[:4] + ["tiny", "wee"])


# ------------------------------------------------------------------------ bad input

def test_missing_file_and_unknown_format(tmp_path):
    with pytest.raises(ValueError, match=f"text table {tmp_path / 'no.csv'} does not exist"):
        TextTable(tmp_path / "no.csv")
    path = tmp_path / "t.xlsx"
    path.write_text("x")
    with pytest.raises(ValueError, match=r"t.xlsx: unknown format '.xlsx'; use one of "
                       r"\['.csv', '.jsonl', '.ndjson', '.tab', '.tsv'\]"):
        TextTable(path)
    with pytest.raises(ValueError, match="is not a file"):
        TextTable(tmp_path)


def test_missing_columns_are_named_with_the_columns_present(tmp_path):
    path = write_table(tmp_path / "c.csv", [{"sentence": "s", "label": "a"}],
                       columns=("sentence", "label"))
    with pytest.raises(ValueError, match=r"c.csv has no text column 'text'; its columns are "
                       r"\['sentence', 'label'\]"):
        TextTable(path)
    with pytest.raises(ValueError, match=r"has no label column 'Label' \(did you mean "
                       r"'label'\?\); its columns are \['sentence', 'label'\]"):
        TextTable(path, text_column="sentence", label_column="Label")
    semi = tmp_path / "semi.csv"                 # a European spreadsheet's export
    semi.write_text("text;label\nbonjour;a\nsalut;b\n")
    with pytest.raises(ValueError, match=r"no text column 'text' \(the header looks separated "
                                         r"by ';': give delimiter=';'; --delimiter in "
                                         r"metaloop adapt and predict, family.delimiter in a "
                                         r"config\)"):
        TextTable(semi)
    assert read_text_table(semi, delimiter=";") == (["bonjour", "salut"], ["a", "b"])
    js = write_table(tmp_path / "c.jsonl", [{"body": "s", "label": "a"}])
    with pytest.raises(ValueError, match=r"c.jsonl has no text column 'text'; its columns "
                       r"are \['body', 'label'\]"):
        TextTable(js)


def test_empty_labels_and_texts_name_their_lines(tmp_path):
    rows = _rows(CLASSES[:2])
    rows[1]["label"], rows[4]["label"] = "", "  "
    path = write_table(tmp_path / "e.csv", rows)
    # every row spans two lines (the text has a newline): row i starts on line 2 + 2 i
    with pytest.raises(ValueError, match=r"e.csv: 2 row\(s\) have empty labels \(column "
                       r"'label'\) at lines 4, 10; fill or remove them"):
        TextTable(path)
    js = write_table(tmp_path / "e.jsonl", [{"text": "", "label": "a"}, {"text": "x"},
                                            {"text": None, "label": "b"}])
    with pytest.raises(ValueError, match=r"e.jsonl: 1 row\(s\) have no field 'label' \(the "
                                         r"label\) at line 2;"):
        TextTable(js)
    js.write_text('{"text": "", "label": "a"}\n{"text": "t", "label": "b"}\n'
                  '{"text": null, "label": "b"}\n')
    with pytest.raises(ValueError, match=r"e.jsonl: 2 row\(s\) have empty texts \(column "
                       r"'text'\) at lines 1, 3"):
        TextTable(js)


def test_empty_tables_and_malformed_lines(tmp_path):
    empty = tmp_path / "empty.csv"
    empty.write_text("")
    with pytest.raises(ValueError, match="empty.csv is empty: it needs a header row"):
        TextTable(empty)
    head = tmp_path / "head.tsv"
    head.write_text("text\tlabel\n")
    with pytest.raises(ValueError, match="head.tsv has a header but no rows"):
        TextTable(head)
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "a", "label": "x"}\n{"text": \n')
    with pytest.raises(ValueError, match="bad.jsonl: line 2 is not valid JSON"):
        TextTable(bad)
    bad.write_text('["a", "x"]\n')
    with pytest.raises(ValueError, match="bad.jsonl: line 1 is a JSON list, not an object"):
        TextTable(bad)
    latin = tmp_path / "latin.csv"
    latin.write_bytes("text,label\ncaf\xe9,a\n".encode("latin-1"))
    with pytest.raises(ValueError, match=r"latin.csv is not UTF-8 text: byte 0xe9 at offset 14 "
                                         r"\(line 2\).*save it as UTF-8"):
        TextTable(latin)
    with pytest.raises(ValueError, match="a delimiter applies to CSV and TSV files, not JSONL"):
        TextTable(bad, delimiter=",")


def test_a_row_with_more_fields_than_the_header_is_named(tmp_path):
    """An unquoted comma in a text splits the row: the cell after it would be read as the
    label and the rest dropped."""
    path = tmp_path / "t.csv"
    path.write_text('text,label\n"a, quoted one",x\nhello, world,y\nfine,y\nmore, cells,x\n')
    with pytest.raises(ValueError, match=r"t.csv: 2 row\(s\) have more fields than the "
                                         r"header's 2 at line\(s\) 3, 5; quote a text"):
        TextTable(path)


def test_too_few_classes_bad_split_and_unknown_classes(table):
    with pytest.raises(ValueError, match=r"t.csv has 10 class\(es\) with at least 2 texts, "
                       r"fewer than ways = 11"):
        TextTable(table, ways=11, shots=1, queries=1)
    with pytest.raises(ValueError, match=r"t.csv \(split 'test'\) has 2 class\(es\) with at "
                       r"least 2 texts, fewer than ways = 3"):
        TextTable(table, ways=3, shots=1, queries=1, split="test")
    with pytest.raises(ValueError, match="TextTable split must be one of"):
        TextTable(table, split="holdout")
    with pytest.raises(ValueError, match=r"has no class\(es\) \['sport'\]; its labels are"):
        TextTable(table, ways=2, classes=["topic_01", "sport"])
    with pytest.raises(ValueError, match="TextTable shots must be a positive int, got 0"):
        TextTable(table, shots=0)


def test_read_texts_reads_a_text_column_or_the_lines_of_a_txt_file(tmp_path):
    """The queries of ``metaloop predict`` on a text run: a table's text column (a label
    column, if any, ignored) in the file's order, or one text per line of a .txt file."""
    (tmp_path / "q.csv").write_text('id,text\n1," b, with a comma "\n2,a\n')
    assert read_texts(tmp_path / "q.csv") == ["b, with a comma", "a"]
    (tmp_path / "q.jsonl").write_text('{"sentence": "x", "label": "y"}\n\n{"sentence": 3}\n')
    assert read_texts(tmp_path / "q.jsonl", "sentence") == ["x", "3"]
    (tmp_path / "q.tsv").write_text("text\tlabel\nfirst\t\n")    # an empty label: ignored
    assert read_texts(tmp_path / "q.tsv") == ["first"]
    (tmp_path / "q.txt").write_text("  one  \ntwo, three\r\n\n\t\n")
    assert read_texts(tmp_path / "q.txt") == ["one", "two, three"]    # trailing blanks: ignored


@pytest.mark.parametrize("content,lines", [
    ("  one  \n\n\t\ntwo, three\r\n", "2 blank line(s) among the texts, at line(s) 2, 3;"),
    ("\none\ntwo\n\n", "1 blank line(s) among the texts, at line(s) 1;"),
    ("a\n" + "\n" * 7 + "b\n", "7 blank line(s) among the texts, at line(s) 2, 3, 4, 5, 6 "
                               "and 2 more;"),
])
def test_read_texts_refuses_a_blank_line_before_the_last_text_by_its_number(
        tmp_path, content, lines):
    """Blank lines among the texts of a .txt file were skipped, so text i was no longer line
    i and a caller could not map the texts back to their lines; they are now refused by
    number, and blank lines after the last text are still ignored."""
    path = tmp_path / "q.txt"
    path.write_text(content)
    with pytest.raises(ValueError, match=re.escape(f"text file {path}: {lines}")):
        read_texts(path)


@pytest.mark.parametrize("name,content,kw,message", [
    ("q.txt", "", {}, "holds no text"),
    ("q.txt", "a\n", {"delimiter": ";"}, "a .txt file holds one text per line"),
    ("q.txt", b"\xff\n", {}, "is not UTF-8 text: byte 0xff at offset 0 (line 1)"),
    ("missing.txt", None, {}, "does not exist"),
    ("q.csv", "text,label\n,x\n", {}, "1 row(s) have empty texts (column 'text') at line 2"),
    ("q.csv", "sentence\nx\n", {}, "has no text column 'text'"),
    ("q.csv", "text\nx\n", {"text_column": ""}, "text column name must be a non-empty"),
    ("q.jsonl", '{"text": "x"}\n', {"delimiter": ","}, "not JSONL"),
])
def test_read_texts_names_what_is_wrong(tmp_path, name, content, kw, message):
    path = tmp_path / name
    if isinstance(content, bytes):
        path.write_bytes(content)
    elif content is not None:
        path.write_text(content)
    with pytest.raises(ValueError, match=re.escape(message)):
        read_texts(path, **kw)


@pytest.mark.parametrize("header,which,name,columns", [
    ("text,text,label", "text", "text", "1, 2"),          # the last one used to win
    ("text,label,label", "label", "label", "2, 3"),       # read as one class before
    ("label, text ,text", "text", "text", "2, 3"),         # names are stripped
])
def test_a_column_named_twice_in_the_header_is_named(tmp_path, header, which, name, columns):
    """A header naming a read column twice was read from its last column, silently (QA: a
    table whose second ``text`` column held 'zzz' ran at chance)."""
    path = tmp_path / "dup.csv"
    path.write_text(header + "\n" + "".join(f"real {i},zzz,c{i % 3}\n" for i in range(9)))
    message = (f"dup.csv: the {which} column {name!r} is named more than once: the header "
               f"(line 1) names it in columns {columns}; which one holds the {which}s is "
               f"ambiguous")
    with pytest.raises(ValueError, match=re.escape(message)):
        TextTable(path, ways=2, shots=1, queries=1)


def test_a_column_named_twice_that_is_not_read_is_ignored(tmp_path):
    path = tmp_path / "t.tsv"
    path.write_text("note\ttext\tnote\tlabel\n" + "".join(f"n\tt{i}\tm\tc{i % 2}\n"
                                                           for i in range(4)))
    assert read_text_table(path) == (["t0", "t1", "t2", "t3"], ["c0", "c1", "c0", "c1"])
    assert read_texts(path) == ["t0", "t1", "t2", "t3"]


def test_a_json_key_given_twice_in_one_object_is_named(tmp_path):
    path = tmp_path / "t.jsonl"
    path.write_text('{"text": "a", "label": "x"}\n\n{"text": "b", "text": "c", "label": "y"}\n'
                    '{"text": "d", "label": "y", "label": "z"}\n')
    with pytest.raises(ValueError, match=re.escape(
            "t.jsonl: the text column 'text' is named more than once: line 3 names it twice "
            "in one object; which one holds the texts is ambiguous")):
        read_text_table(path)
    path.write_text('{"text": "a", "label": "x"}\n{"text": "d", "label": "y", "label": "z"}\n')
    with pytest.raises(ValueError, match=re.escape(
            "the label column 'label' is named more than once: line 2 names it twice")):
        read_text_table(path)
    assert read_texts(path) == ["a", "d"]             # predict's queries: labels unread


@pytest.mark.parametrize("field,value,message", [
    ("text", ["a sentence"], "a JSON list as their text (field 'text') at line 2"),
    ("text", {"en": "a sentence"}, "a JSON object as their text (field 'text') at line 2"),
    ("label", ["x", "y"], "a JSON list as their label (field 'label') at line 2"),
])
def test_a_json_list_or_object_as_a_text_or_label_is_named(tmp_path, field, value, message):
    """A list was read as its Python text ("['a sentence']") and ran without a word."""
    path = tmp_path / "t.jsonl"
    rows = [{"text": f"t{i}", "label": f"c{i % 2}"} for i in range(4)]
    rows[1][field] = value
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    with pytest.raises(ValueError, match=re.escape(f"t.jsonl: 1 row(s) hold {message}; a "
                                                   f"{field} must be a string")):
        TextTable(path, ways=2, shots=1, queries=1)


def test_json_numbers_and_booleans_are_read_as_written_as_in_a_csv(tmp_path):
    """A JSONL label true was class "True" (Python's spelling) and 1.0e2 class "100.0", where
    the same table as CSV has "true" and "1.0e2": one table, two sets of class names."""
    path = tmp_path / "t.jsonl"
    path.write_text("".join(json.dumps({"text": i, "label": i % 2 == 0}) + "\n"
                            for i in range(4)))
    assert read_text_table(path) == (["0", "1", "2", "3"], ["true", "false", "true", "false"])
    cells = [("true", "true"), ("false", "false"), ("1", "1"), ("1.0", "1.0"),
             ("1.0e2", "1.0e2"), ("-0.50", "-0.50"), ('"01"', "01"), ("12345678901234567890",
                                                                        "12345678901234567890")]
    (tmp_path / "u.jsonl").write_text("".join(f'{{"text": {j}.5, "label": {c}}}\n'
                                              for j, (c, _) in enumerate(cells)))
    (tmp_path / "u.csv").write_text("text,label\n" + "".join(f"{j}.5,{v}\n"
                                                             for j, (_, v) in enumerate(cells)))
    texts, labels = read_text_table(tmp_path / "u.jsonl")
    assert (texts, labels) == read_text_table(tmp_path / "u.csv")
    assert labels == [v for _, v in cells] and texts[0] == "0.5"
    (tmp_path / "n.jsonl").write_text('{"text": "a", "label": null}\n')
    with pytest.raises(ValueError, match=r"1 row\(s\) have empty labels .* at line 1"):
        read_text_table(tmp_path / "n.jsonl")


def test_a_repeated_row_is_read_once_so_no_task_shows_a_text_as_support_and_query(tmp_path):
    rows = ["text,label"] + [f"t{c}{i},{c}" for c in "ab" for i in range(2)] + ["ta0,a"] * 3
    path = tmp_path / "t.csv"
    path.write_text("\n".join(rows) + "\n")
    fam = TextTable(path, ways=2, shots=1, queries=1)
    assert fam.repeated == 3 and len(fam.texts) == 4
    assert "3 repeated row(s)" in fam.describe()
    batch = fam.sample(200, torch.Generator().manual_seed(0))
    s = batch.support_x[..., 0].long()                                   # [n, 2]
    q = batch.query_x[..., 0].long()                                     # [n, 2]
    assert not (s[:, :, None] == q[:, None, :]).any()


def test_a_text_with_two_labels_is_named(tmp_path):
    path = tmp_path / "t.csv"
    path.write_text("text,label\nhello,a\nhello,b\nbye,b\nyo,a\n")
    with pytest.raises(ValueError, match=r"1 text\(s\) carry more than one label, e.g. 'hello' "
                                         r"as 'a', 'b'"):
        TextTable(path, ways=2, shots=1, queries=1)


def test_a_quote_left_open_is_named_not_read_as_one_long_text(tmp_path):
    """A text that starts with a quote swallowed the rows after it, up to the next quote (or
    the end of the file), into its own text: 4 rows became 1, without a word."""
    from metaloop.tasks.text_table import read_text_table, read_texts

    rows = ["text\tlabel", '"Quoted title, then more\tnews', "a plain line\tsport",
            "another plain line\tnews", "one more\tsport", 'and an "end\tnews']
    (tmp_path / "t.tsv").write_text("\n".join(rows) + "\n")
    with pytest.raises(ValueError, match=r"t\.tsv: the row at line 2 runs to line 6, and its "
                                         r"text holds lines that read as rows of their own "
                                         r"\(e\.g\. 'another plain line\\tnews'\).*double a "
                                         r"quote"):
        read_text_table(tmp_path / "t.tsv")
    with pytest.raises(ValueError, match="runs to line 6"):
        read_texts(tmp_path / "t.tsv")
    (tmp_path / "open.tsv").write_text("\n".join(rows[:-1]) + "\n")      # never closed
    with pytest.raises(ValueError, match=r"the row at line 2 runs to line 5"):
        read_text_table(tmp_path / "open.tsv")


def test_a_quoted_text_with_line_breaks_and_commas_is_still_one_text(tmp_path):
    with (tmp_path / "t.csv").open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["text", "label"])
        w.writerow(["Dear sir,\nthanks, truly,\nyours", "letter"])
        w.writerow(["a short note", "note"])
        w.writerow(["Line one\nnote, two", "letter"])       # a line that splits in two cells
    texts, labels = ml.tasks.text_table.read_text_table(tmp_path / "t.csv")
    assert texts[0] == "Dear sir,\nthanks, truly,\nyours" and labels == ["letter", "note",
                                                                           "letter"]


def test_texts_that_differ_only_in_case_spacing_or_unicode_form_are_one_text(tmp_path):
    """"great movie" and "GREAT  MOVIE" are one text to an uncased encoder (the same token
    ids), yet both were read, so a task could hold one as support and the other as query."""
    base = [f"movie {c} number {i}" for c in "ab" for i in range(3)]
    variants = [t.upper().replace(" ", "  ") for t in base]
    variants += ["\ufb01ne caf\u00e9", "FINE  CAFE\u0301"]          # the ligature fi, NFC, NFD
    labels = [t.split()[1] for t in base] * 2 + ["a", "a"]
    path = tmp_path / "t.csv"
    write_table(path, [{"text": t, "label": lab} for t, lab in zip(base + variants, labels)])
    fam = TextTable(path, ways=2, shots=1, queries=1)
    assert fam.repeated == 7 and len(fam.texts) == 7
    assert fam.texts[:3] == base[:3] and "\ufb01ne caf\u00e9" in fam.texts  # first spelling
    batch = fam.sample(200, torch.Generator().manual_seed(0))
    for i in range(200):
        support = {ml.tasks.text_table.folded(t) for t in fam.text_of(batch.support_x[i])}
        query = {ml.tasks.text_table.folded(t) for t in fam.text_of(batch.query_x[i])}
        assert not support & query
    (tmp_path / "two.csv").write_text("text,label\nGreat movie,pos\ngreat  MOVIE,neg\n"
                                      "x,pos\ny,neg\n")
    with pytest.raises(ValueError, match=r"1 text\(s\) carry more than one label, e.g. 'Great "
                                         r"movie' as 'pos', 'neg'.*differ only in case"):
        TextTable(tmp_path / "two.csv", ways=2, shots=1, queries=1)


@pytest.mark.parametrize("suffix", [".csv", ".jsonl"])
def test_a_label_spelled_two_ways_is_named_not_read_as_two_classes(tmp_path, suffix):
    """"Sports" and "sports" (or "weather  report" and "weather report", or an accent
    composed and decomposed) were two classes of one topic, without a word."""
    rows = [{"text": f"t{i}", "label": lab} for i, lab in enumerate(
        ["Sports", "sports", "weather  report", "weather report", "caf\u00e9", "cafe\u0301"])]
    path = write_table(tmp_path / f"t{suffix}", rows)
    with pytest.raises(ValueError, match=r"3 label\(s\) are spelled more than one way, "
                                         r"differing only in case, white space, invisible "
                                         r"format characters or Unicode form: 'Sports' and "
                                         r"'sports'; 'weather  report' and "
                                         r"'weather report'; .*spell each class one way"):
        read_text_table(path)
    with pytest.raises(ValueError, match="spelled more than one way"):
        TextTable(path, ways=2, shots=1, queries=1)
    # surrounding spaces are stripped: " sports " is class "sports"; "01" and "1" differ
    rows = [{"text": f"t{i}", "label": lab} for i, lab in enumerate([" sports ", "sports",
                                                                     "01", "1"])]
    assert read_text_table(write_table(tmp_path / f"u{suffix}", rows))[1] == [
        "sports", "sports", "01", "1"]


def test_a_txt_line_is_one_text_even_with_a_form_feed_or_line_separator_inside(tmp_path):
    """splitlines cut a .txt line at a form feed or U+2028 (common in pasted web text), so
    predict classified two halves of one text as two texts."""
    path = tmp_path / "q.txt"
    path.write_bytes("one\u2028still one\nform\x0cfeed\r\nthree\rfour\n".encode())
    assert read_texts(path) == ["one\u2028still one", "form\x0cfeed", "three", "four"]


@pytest.mark.parametrize("suffix", [".csv", ".jsonl", ".txt"])
def test_a_byte_that_is_not_utf8_is_named_at_its_offset_and_line_in_the_file(tmp_path, suffix):
    """The offset named was the byte's offset in the chunk being read (byte 1746 for one at
    34,514 in a CSV), which sent the user to the wrong place in a large table."""
    lines = [json.dumps({"text": f"t{i}", "label": "a"}) if suffix == ".jsonl" else f"t{i},a"
             for i in range(3000)]
    head = (b"" if suffix == ".jsonl" else b"text,label\n") + "\n".join(lines).encode() + b"\n"
    bad = ('{"text": "caf\xe9", "label": "a"}\n' if suffix == ".jsonl" else "caf\xe9,a\n")
    path = tmp_path / f"t{suffix}"
    path.write_bytes(head + bad.encode("latin-1"))
    line = head.count(b"\n") + 1
    offset = len(head) + bad.index("\xe9")
    read = read_texts if suffix == ".txt" else read_text_table
    with pytest.raises(ValueError, match=rf"is not UTF-8 text: byte 0xe9 at offset {offset} "
                                         rf"\(line {line}\): invalid continuation byte; save it "
                                         rf"as UTF-8"):
        read(path)
    path.write_bytes("text,label\nx,a\n".encode("utf-16"))            # Windows PowerShell's >
    with pytest.raises(ValueError, match="it is UTF-16 text"):
        read(path)
