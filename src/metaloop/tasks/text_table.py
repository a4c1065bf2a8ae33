"""Few-shot text classification over the user's own table of labelled texts.

A text table is a CSV, TSV or JSONL file with one example per row: a text column and a label
column (``text`` and ``label`` by default). The classes are the distinct labels, sorted;
their names serve as the prompt wordings of approach 0 (``wordings``), so readable labels
(``"sports"``, ``"weather report"``) help zero-shot prompting; numeric labels work for every
other approach.

The format follows the file's extension: ``.csv`` (comma, or ``delimiter``), ``.tsv`` /
``.tab`` (tab), ``.jsonl`` / ``.ndjson`` (one JSON object per line). CSV and TSV files need a
header row; their text is read as UTF-8 (a byte-order mark is skipped). ``quoting`` says how
their quotes are read: ``"csv"`` (the default) reads them as CSV does (a quoted field may hold
the delimiter, line breaks and doubled quotes ``""``), ``"none"`` reads every character as
written, one row per line, the fields split at each delimiter, as GLUE / SST-style TSV files
are written (``"Great" final`` stays ``"Great" final``). A column (JSON key)
that is read must be named once: a header or JSON object that names it twice is an error,
not read from one of the two. A JSON text or label is read as it is written, so that a
table reads the same in every format: a number keeps its spelling (``1`` -> ``"1"``, ``1.0``
-> ``"1.0"``, ``1e2`` -> ``"1e2"``), a boolean is ``"true"`` or ``"false"``, and ``null`` is
an empty cell; a list or object is an error. Errors name the file and the line numbers (the
header is line 1 of a CSV or TSV file).

Texts and labels are compared as ``folded`` spells them: Unicode NFKC, case folded, format
characters (Unicode category Cf: zero-width spaces, bidi controls) dropped but for the
zero-width joiner and non-joiner (which change a word), each run of white space one space.
Two labels that differ only so are an error (one class spelled two ways), not two classes. A
text or label with no visible character (only white space, control, format and combining
characters, which a tokenizer reads as an empty text) is an error, as an empty one is. A
text is one example: ``TextTable`` reads a row whose text folds to an earlier row's, under
the same label, once (``repeated`` counts the others, and ``describe`` says so), so that no
task holds the same text (as an uncased encoder such as all-MiniLM-L6-v2 tokenizes it:
``"Great movie"`` and ``"GREAT  MOVIE"`` give the same token ids) as a support example and a
query; a text that the table labels two ways is an error.
A list of classes to use (``classes``, a split file's names) is matched to the labels in
Unicode NFC, as image folders' class names are (``metaloop.tasks.splits``), and the family
spells them as the table does.

Classes are split into disjoint meta-train / validation / test classes by
``split_classes(class_names, fractions, split_seed)`` over the whole table, before any class
is dropped, so the split of a class does not depend on shot counts.

Text inputs in a TaskBatch are numbers, as in ``metaloop.tasks.WordNet``: padded token ids
stored as float32 ``[n, S, L]`` with a ``tokenizer`` (``TextEncoder.tokenize``), otherwise
the example's index into ``family.texts`` ``[n, S, 1]``.
"""

from __future__ import annotations

import codecs
import copy
import csv
import difflib
import json
import numbers
import os
import unicodedata
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import cast

import torch

from metaloop.tasks.batch import TaskBatch
from metaloop.tasks.episodes import SmallClassesError, check_distinct_classes, class_positions
from metaloop.tasks.omniglot import (
    check_generator,
    check_positive_int,
    episode_indices,
    split_episodes,
)
from metaloop.tasks.splits import check_name_list, split_classes

Tokenizer = Callable[[Sequence[str]], torch.Tensor]

FORMATS = {".csv": "csv", ".tsv": "tsv", ".tab": "tsv", ".jsonl": "jsonl", ".ndjson": "jsonl"}
SPLITS = ("all", "train", "val", "test", "trainval")
QUOTING = ("csv", "none")
"""The ``quoting`` values of a CSV / TSV table: ``"csv"`` reads quotes as CSV does,
``"none"`` reads every character as written (one row per line, fields split at each
delimiter: a GLUE / SST-style TSV file)."""
QUOTING_HINT = ('if the file is not quoted (a GLUE-style TSV, whose texts hold quotes as '
                'written), read it with quoting="none" (--quoting none in metaloop adapt and '
                'predict, family.quoting = "none" in a config)')
"""The advice of an error caused by a quote in a table read with ``quoting="csv"``."""
SMALL_ADVICE = "add texts, lower [shots or ]queries, or drop them (drop_small=True, --drop-small)"
"""``SmallClassesError.advice`` of ``TextTable``, its part on the shots in brackets
(``metaloop.tasks.episodes.advice_for_shots``)."""


def _lines(numbers: Sequence[int], limit: int = 10) -> str:
    shown = ", ".join(str(n) for n in numbers[:limit])
    more = f" and {len(numbers) - limit} more" if len(numbers) > limit else ""
    return f"line{'s' if len(numbers) > 1 else ''} {shown}{more}"


def _missing_column(path: Path, which: str, name: str, columns: Sequence[str],
                    rows: Sequence[tuple[int, dict]] = ()) -> ValueError:
    """The error for a table without the column ``name``; ``rows``: the rows of a CSV or TSV
    file, whose first line is then asked about when its names look like data
    (``_header_looks_like_data``)."""
    near = difflib.get_close_matches(name, list(columns), n=1)
    hint = f" (did you mean {near[0]!r}?)" if near else ""
    seps = [c for c in ";\t|," if len(columns) == 1 and c in columns[0]]
    if seps:                 # one column whose name holds a separator: another delimiter
        hint = (f" (the header looks separated by {seps[0]!r}: give delimiter={seps[0]!r}; "
                f"--delimiter in metaloop adapt and predict, family.delimiter in a config)")
    header = ""
    if not seps and rows and _header_looks_like_data(columns, rows):
        header = ("; its first line reads as data: does the file have a header row? Add a "
                  "first line that names the columns")
    return ValueError(f"text table {path} has no {which} column {name!r}{hint}; its columns "
                      f"are {list(columns)}{header}")


def _header_looks_like_data(columns: Sequence[str], rows: Sequence[tuple[int, dict]]) -> bool:
    """Whether a CSV/TSV header row reads as a row of data: a column name of three or more
    words or ending a sentence (``.``, ``!``, ``?``), or one that the column holds as a
    value again (a label repeated below it)."""
    for c in columns:
        if len(c.split()) >= 3 or c.endswith((".", "!", "?")):
            return True
        if c and any(_cell(row.get(c)) == c for _, row in rows):
            return True
    return False


def _undecodable(what: str, path: Path, encoding: str) -> ValueError:
    """The error for a file that is not ``encoding`` text, naming its first bad byte, that
    byte's offset in the file and its line. (The offset of a decode error raised while a file
    is read counts from the start of the chunk being read, not of the file, so the file's
    bytes are decoded again here.)"""
    raw = path.read_bytes()
    name = codecs.lookup(encoding).name
    utf8 = name in ("utf-8", "utf-8-sig")
    try:
        raw.decode(encoding)
    except UnicodeDecodeError as e:
        line = raw[:e.start].count(b"\n") + 1
        where = f": byte 0x{raw[e.start]:02x} at offset {e.start} (line {line}): {e.reason}"
    else:                                                  # not expected: the reader failed
        where = ""
    hint = ""
    if utf8 and raw.startswith((b"\xff\xfe", b"\xfe\xff")):
        hint = "; it is UTF-16 text (it starts with a UTF-16 byte-order mark): save it as UTF-8"
    elif utf8:
        hint = "; save it as UTF-8" + (" (in Excel: CSV UTF-8)" if path.suffix.lower() == ".csv"
                                       else "")
    return ValueError(f"{what} {path} is not {'UTF-8' if utf8 else encoding} text{where}{hint}")


def _cell(value) -> str:
    """A cell's text, stripped: a JSON boolean as JSON spells it (``true``), ``null`` empty
    (JSON numbers arrive as the strings they are written as)."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    return value.strip() if isinstance(value, str) else str(value).strip()


JOINERS = frozenset("\u200c\u200d")
"""The zero-width non-joiner and joiner: format characters that ``folded`` keeps, as BPE and
SentencePiece tokenizers keep them, for they change the text: Persian
``"\\u0645\\u06cc\\u200c\\u0634\\u0648\\u062f"`` and ``"\\u0645\\u06cc\\u0634\\u0648\\u062f"`` are
two words, and an emoji ZWJ sequence is one picture where its parts without the joiners are
several."""


def folded(text: str) -> str:
    """``text`` as texts and labels are compared: Unicode NFKC, case folded, format
    characters (category Cf: zero-width spaces, bidi controls, byte-order marks, soft
    hyphens) but ``JOINERS`` dropped, as BERT-style tokenizers drop them, each run of white
    space one space: ``"Great  movie"`` and ``"GREAT MOVIE"`` fold alike, as do an ``é``
    written as one code point and as ``e`` with a combining accent, and ``"sports"`` and
    ``"sports\\u200b"``; a text that differs by a zero-width joiner or non-joiner does not.
    ASCII text, which NFKC leaves alone and holds no format character, takes a shorter
    path to the same result."""
    if text.isascii():
        return " ".join(text.lower().split())        # casefold() is lower() on ASCII
    text = unicodedata.normalize("NFKC", unicodedata.normalize("NFKC", text).casefold())
    return " ".join("".join(ch for ch in text
                            if ch in JOINERS or unicodedata.category(ch) != "Cf").split())


INVISIBLE = frozenset({"Cc", "Cf", "Mn", "Zs", "Zl", "Zp"})
"""The Unicode categories of characters that show nothing of their own: control, format
(zero-width spaces and joiners, bidi), non-spacing combining marks, and separators."""

_ASCII_BLANK = "".join(map(chr, range(0x21))) + "\x7f"
"""The ASCII characters that show nothing: the controls (category Cc) and the space."""


def visible(text: str) -> bool:
    """Whether ``text`` has a character that shows: one outside white space and the
    categories ``INVISIBLE`` (``"\\u200b\\u200b"``, ``"\\u202e\\u202d"``, ``"\\u200d\\u200c"``
    and a bare combining accent have none, and tokenize as an empty text does). ASCII text
    shows a character when it has one other than the controls and the space."""
    if text.isascii():
        return bool(text.strip(_ASCII_BLANK))
    return any(not ch.isspace() and unicodedata.category(ch) not in INVISIBLE for ch in text)


def _repeated(names) -> dict[str, list[int]]:
    """name -> its 1-based positions, for each name given more than once."""
    where: dict[str, list[int]] = {}
    for i, name in enumerate(names, 1):
        where.setdefault(name, []).append(i)
    return {n: pos for n, pos in where.items() if len(pos) > 1}


def _other_delimiter(columns: Sequence[str], delimiter: str, wanted: Sequence[str]) -> str:
    """The advice for a header read as ``columns`` with ``delimiter`` that splits into
    columns naming every one of ``wanted`` on another common delimiter (``;``, tab, ``|``,
    ``,``): give that one; "" when none does."""
    header = delimiter.join(columns)
    for sep in ";\t|,":
        if sep == delimiter or sep not in header:
            continue
        names = [c.strip() for c in next(csv.reader([header], delimiter=sep), [])]
        if len(names) > len(columns) and wanted and all(w in names for w in wanted):
            flag = "$'\\t'" if sep == "\t" else repr(sep)
            return (f"; the header splits into the columns {names[:6]} on {sep!r}, not on "
                    f"{delimiter!r}: give delimiter={sep!r} (--delimiter {flag} in metaloop "
                    f"adapt and predict, family.delimiter in a config)")
    return ""


def _parse_csv(path: Path, delimiter: str, encoding: str, strict: bool,
               quoting: str = "csv"):
    """(columns, [(line, row dict)], header line, ends, long rows' lines) of a CSV/TSV file,
    as ``_read_csv`` describes; a ``csv.Error`` (raised with ``strict``, as by a quote
    closed in mid-text or left open) is raised as ``_CsvError`` with the lines it was seen
    at. ``quoting="none"``: every character as written, one row per line."""
    rows, columns, long, header, ends = [], list[str](), [], 1, {}
    last = [""]

    def lines(f):                                    # the last physical line, for errors
        for line in f:
            last[0] = line
            yield line

    with path.open(newline="", encoding=encoding) as f:
        reader = csv.reader(lines(f), delimiter=delimiter, strict=strict,
                            quoting=csv.QUOTE_NONE if quoting == "none" else csv.QUOTE_MINIMAL)
        start = 1
        limit = csv.field_size_limit(2 ** 31 - 1)          # fits a C long on every platform
        try:
            for fields in reader:
                if fields and any(v.strip() for v in fields):
                    if not columns:
                        columns, header = [c.strip() for c in fields], start
                    else:
                        if len(fields) > len(columns):      # zip would drop the extra cells
                            long.append(start)
                        rows.append((start, dict(zip(columns, fields))))
                        if reader.line_num > start:
                            ends[start] = reader.line_num
                start = reader.line_num + 1
        except csv.Error as e:
            raise _CsvError(str(e), start, reader.line_num, last[0]) from e
        finally:
            csv.field_size_limit(limit)
    return columns, rows, header, ends, long


class _CsvError(ValueError):
    """A ``csv.Error`` of ``_parse_csv``: its message, the line the row it was reading
    starts on, the line it was seen at, and that line's text."""

    def __init__(self, message: str, start: int, line: int, text: str):
        super().__init__(message)
        self.message, self.start, self.line, self.text = message, start, line, text


class _ReadLeniently(Exception):
    """``_quote_error``'s word that the strict reading's error swallowed no row: the lenient
    reading stands."""


def _read_csv(path: Path, delimiter: str, encoding: str, wanted: dict[str, str] | None = None,
              quoting: str = "csv"):
    """(columns, [(line, row dict)], repeated, ends) of a CSV/TSV file with a header row;
    blank lines are skipped, and a row's line is the file line it starts on (``ends``: the
    line each row that spans several ends on, by its start line). ``repeated``: each column
    name the header gives more than once -> a description of where (a row dict holds only
    the last such column's value). A field may be of any length (the csv module's default
    limit, 131,072 characters, is lifted while reading). ``wanted``: the columns the caller
    reads (``{which: column name}``), which an error names another delimiter by
    (``_other_delimiter``) and ``_swallowed`` reads.

    The file is read strictly first: a quoted text that runs over several lines must end at
    its closing quote (a delimiter or the line's end follows it) and a quote must close
    before the file ends; text after the closing quote of a one-line text (`"Best film" -
    a review`) swallows no row and is read as it always was (the quotes dropped). Python's csv
    module otherwise reads on past a quote left open, making the rows up to the next quote
    part of one text, filed under the label of the row the next quote stands in. Such an
    error names the lines and, where the rows swallowed read as rows of their own, says so
    (``_swallowed``, from a second, lenient reading, made only then). Every such error names
    ``quoting="none"`` (``QUOTING_HINT``), which reads the file's quotes as written, one row
    per line: no quote opens or closes a text."""
    kind = "TSV" if delimiter == "\t" else "CSV"
    wanted = wanted or {}
    try:
        columns, rows, header, ends, long = _parse_csv(path, delimiter, encoding, strict=True,
                                                       quoting=quoting)
    except _CsvError as e:
        if quoting == "none":                   # no quote involved: a line the reader refused
            raise ValueError(f"text table {path} is not valid {kind} at line {e.start}: "
                             f"{e.message}") from e
        try:
            lenient = _parse_csv(path, delimiter, encoding, strict=False)
        except _CsvError:
            lenient = None
        if not (lenient and lenient[0] and any(w not in lenient[0] for w in wanted.values())):
            try:
                _quote_error(path, delimiter, wanted, e, lenient)
            except _ReadLeniently:
                assert lenient is not None
                columns, rows, header, ends, long = lenient
            else:
                hint = f"; {QUOTING_HINT}" if '"' in e.message else ""   # a quote's error
                raise ValueError(f"text table {path} is not valid {kind} at line {e.start}: "
                                 f"{e.message}{hint}") from e
        else:
            # a header without the columns read: the error that names them (and another
            # delimiter, as ';' for a file whose quoted texts are followed by ';') tells more
            columns, rows, header, ends, long = lenient
    if long:
        fix = _other_delimiter(columns, delimiter, list(wanted.values())) or (
            f"; with quoting=\"none\" each {delimiter!r} starts a field, so a text cannot hold "
            f"one: remove it from the texts or read a quoted file with quoting=\"csv\""
            if quoting == "none" else
            f"; quote a text that holds the delimiter {delimiter!r} (as \"a, b\")")
        raise ValueError(f"text table {path}: {len(long)} row(s) have more fields than the "
                         f"header's {len(columns)} at line(s) {', '.join(map(str, long[:5]))}"
                         f"{fix}")
    repeated = {n: f"the header (line {header}) names it in columns "
                   f"{', '.join(map(str, pos))}" for n, pos in _repeated(columns).items()}
    return columns, rows, repeated, ends


def _quote_error(path: Path, delimiter: str, wanted: dict[str, str], e: _CsvError,
                 lenient) -> None:
    """Raise the error for a strict reading's ``e`` when a quote caused it: a quoted text
    with more after its closing quote, or a quote still open at the end of the file
    (``_swallowed``'s error first, where the ``lenient`` reading, ``_parse_csv``'s result or
    None, finds rows swallowed)."""
    closed = "expected after" in e.message
    if not closed and e.message != "unexpected end of data":
        return
    if lenient is not None:
        columns, rows, _, ends, _ = lenient
        if columns and rows and ends:
            _swallowed(path, rows, ends, columns, delimiter, wanted)
        if closed and e.line == e.start:
            # text after the closing quote of a one-line text (`"Best film" - a review`): no
            # row swallowed (checked just above), read as the csv module always read it
            raise _ReadLeniently
    sep = "tab" if delimiter == "\t" else repr(delimiter)
    span = (f"the row that starts at line {e.start}" if e.line == e.start else
            f"the row that starts at line {e.start} and runs to line {e.line}")
    if closed:
        shown = e.text.rstrip("\r\n")
        shown = repr(shown[:80]) + ("..." if len(shown) > 80 else "")
        cause = (f"a quote left open at line {e.start} made the lines after it part of its "
                 f"text, up to the quote at line {e.line}: close it; " if e.line > e.start
                 else "")
        raise ValueError(
            f"text table {path}: a quoted text of {span} closes at line {e.line} with more "
            f"after its closing quote than a {sep} or the line's end (line {e.line} reads "
            f"{shown}); {cause}double each quote inside a quoted text (\"\") or quote the "
            f"whole text; {QUOTING_HINT}") from e
    raise ValueError(
        f"text table {path}: a quote opens in {span} and never closes, so the lines after "
        f"it up to the end of the file would be one text: close it, and double each quote "
        f"inside a quoted text (\"\") or quote the whole text; {QUOTING_HINT}") from e


def _swallowed(path: Path, rows, ends: dict[int, int], columns: list[str], delimiter: str,
               wanted: dict[str, str]) -> None:
    """Refuse a quote that opens in a row's text and closes lines later (or never), so that
    the rows between became part of that text: a field over several lines holding a line
    that reads as a row of its own (as many cells as the header, and, where the labels are
    read, a label the table has), which a text with line breaks of its own does not."""
    label = wanted.get("label")
    known = {_cell(row.get(label)) for _, row in rows} if label else set()
    for start, row in rows:
        end = ends.get(start)
        if end is None:
            continue
        for value in row.values():
            for piece in (value.split("\n")[1:] if isinstance(value, str) else []):
                cells = next(csv.reader([piece], delimiter=delimiter), [])
                if len(cells) != len(columns) or len(columns) < 2:
                    continue
                cell = dict(zip(columns, cells))
                # a label the table has, or any, where the quote ran to the end of the file
                # and took the row's own label with it
                looks = cell[label].strip() and (cell[label].strip() in known
                                                 or not _cell(row.get(label))) \
                    if label else delimiter == "\t"
                if looks:
                    raise ValueError(
                        f"text table {path}: the row at line {start} runs to line {end}, and "
                        f"its text holds lines that read as rows of their own (e.g. "
                        f"{piece[:60]!r}): a quote opens at line {start} and closes only at "
                        f"line {end} (or at the end of the file); double a quote inside a "
                        f"text (\"\") or quote the whole text; {QUOTING_HINT}")


def _read_jsonl(path: Path, encoding: str):
    """(columns in first-seen order, [(line, object)], repeated) of a JSON-lines file.
    ``repeated``: each key that an object names more than once -> a description of the
    lines where (``json`` keeps only the last value of such a key)."""
    rows: list[tuple[int, dict]] = []
    columns: dict[str, None] = {}
    repeated: dict[str, list[int]] = {}

    def pairs(items):
        for key in _repeated([k for k, _ in items]):
            repeated.setdefault(key, []).append(line_no)
        return dict(items)

    with path.open(encoding=encoding) as f:
        for line_no, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                # numbers (and NaN, Infinity) as written: 1.0 stays "1.0", as in a CSV
                obj = json.loads(line, object_pairs_hook=pairs, parse_int=str,
                                 parse_float=str, parse_constant=str)
            except json.JSONDecodeError as e:
                raise ValueError(f"text table {path}: line {line_no} is not valid JSON: "
                                 f"{e.msg}") from e
            except RecursionError:
                raise ValueError(f"text table {path}: line {line_no} nests JSON deeper than "
                                 f"it can be read (a row is an object of text fields)") from None
            if not isinstance(obj, dict):
                raise ValueError(f"text table {path}: line {line_no} is a JSON "
                                 f"{type(obj).__name__}, not an object with named fields")
            columns.update(dict.fromkeys(obj))
            rows.append((line_no, obj))
    return list(columns), rows, {k: f"{_lines(v)} name{'s' * (len(v) == 1)} it twice in one object"
                                 for k, v in repeated.items()}


def read_text_table(path: str | os.PathLike, text_column: str = "text",
                    label_column: str = "label", delimiter: str | None = None,
                    encoding: str = "utf-8-sig", quoting: str = "csv"
                    ) -> tuple[list[str], list[str]]:
    """The texts and labels of a CSV, TSV or JSONL table, one example per row.

    Texts and labels are stripped of surrounding white space; JSON numbers and booleans
    are read as written (``1.0`` -> ``"1.0"``, ``true`` -> ``"true"``), ``null`` as empty,
    JSON lists and objects are refused. Blank JSONL lines are skipped.

    Args:
        path: a ``.csv``, ``.tsv``, ``.tab``, ``.jsonl`` or ``.ndjson`` file.
        text_column, label_column: the column (JSON key) names.
        delimiter: the field separator of a CSV/TSV file (default: ``","`` for ``.csv``,
            tab for ``.tsv``); not allowed for JSONL.
        encoding: the text encoding (``utf-8-sig`` reads UTF-8 with or without a BOM).
        quoting: how a CSV/TSV file's quotes are read (``QUOTING``): ``"csv"`` as CSV
            does, ``"none"`` as written, one row per line (a GLUE-style TSV file);
            ``"none"`` is not allowed for JSONL.

    Returns:
        ``(texts, labels)``: two lists of N strings.

    Raises:
        ValueError: naming the file: it does not exist, an unknown extension, a delimiter or
            ``quoting="none"`` for JSONL, an unknown ``quoting``, text that is not in
            ``encoding``, malformed CSV or JSON (with the line; a quote's error names
            ``quoting="none"``), a
            missing column (listing the columns it has), a column named twice (in the header
            or a JSON object), no rows, empty labels or texts, labels or texts with no
            visible character (``visible``), JSONL rows without the text or label field, or
            JSON lists or objects as labels or texts (with their line numbers), or labels
            that differ only in case, white space, Unicode form or format characters other
            than ``JOINERS`` (``folded``: one class spelled two ways, named).
    """
    for which, name in (("text", text_column), ("label", label_column)):
        if not isinstance(name, str) or not name:
            raise ValueError(f"text table {path}: the {which} column name must be a non-empty "
                             f"string, got {name!r}")
    if text_column == label_column:
        raise ValueError(f"text table {path}: the text and label columns are both "
                         f"{text_column!r}")
    texts, labels = _read_columns(path, {"text": text_column, "label": label_column},
                                  delimiter, encoding, quoting)
    spellings: dict[str, list[str]] = {}
    for lab in dict.fromkeys(labels):
        spellings.setdefault(folded(lab), []).append(lab)
    twice = [names for names in spellings.values() if len(names) > 1]
    if twice:
        shown = "; ".join(" and ".join(map(repr, names)) for names in twice[:3])
        raise ValueError(f"text table {Path(path).expanduser()}: {len(twice)} label(s) are "
                         f"spelled more than one way, differing only in case, white space, "
                         f"invisible format characters or Unicode form: {shown}; spell each "
                         f"class one way")
    return texts, labels


def read_texts(path: str | os.PathLike, text_column: str = "text",
               delimiter: str | None = None, encoding: str = "utf-8-sig",
               quoting: str = "csv") -> list[str]:
    """The texts to classify: a table's text column (other columns, a label column
    included, are ignored), or a ``.txt`` file's lines, one text per line.

    Args:
        path: a ``.csv``, ``.tsv``, ``.tab``, ``.jsonl``, ``.ndjson`` or ``.txt`` file.
        text_column: the column (JSON key) name of a table.
        delimiter: as :func:`read_text_table` (not for JSONL or ``.txt``).
        encoding: as :func:`read_text_table`.
        quoting: as :func:`read_text_table` (``"none"`` not for JSONL or ``.txt``).

    Returns:
        N strings, in the file's order, stripped of surrounding white space; text i of a
        ``.txt`` file is its line i (a line ends at a line feed, CR LF or CR only), and
        blank lines after the last text are ignored.

    Raises:
        ValueError: as :func:`read_text_table` (naming the file), and a ``.txt`` file with
            no text, a line with no visible character (``visible``), a blank line before
            the last text (naming the lines, which would otherwise shift every later text
            off its line number), or given a delimiter or ``quoting="none"``.
    """
    p = Path(path).expanduser()
    if p.suffix.lower() != ".txt":
        if not isinstance(text_column, str) or not text_column:
            raise ValueError(f"text table {path}: the text column name must be a non-empty "
                             f"string, got {text_column!r}")
        return _read_columns(path, {"text": text_column}, delimiter, encoding, quoting)[0]
    if delimiter is not None or quoting != "csv":
        what = "a delimiter" if delimiter is not None else f"quoting={quoting!r}"
        raise ValueError(f"text file {p}: {what} applies to CSV and TSV files; a .txt "
                         f"file holds one text per line, read as written")
    if not p.is_file():
        raise ValueError(f"text file {p} " + ("is not a file" if p.exists()
                                               else "does not exist"))
    try:
        # read_text makes CR LF and CR line feeds; splitlines would also cut a text at a
        # form feed or a Unicode line separator (U+2028) inside it
        lines = p.read_text(encoding=encoding).split("\n")
    except UnicodeDecodeError as e:
        raise _undecodable("text file", p, encoding) from e
    texts = [line.strip() for line in lines if line.strip()]
    if not texts:
        raise ValueError(f"text file {p} holds no text (one text per line)")
    blank = [n for n, line in enumerate(lines, 1) if line.strip() and not visible(line)]
    if blank:
        raise ValueError(f"text file {p}: {len(blank)} line(s) have no visible character, "
                         f"at {_lines(blank)}: only white space, control, format or combining "
                         f"characters, which a tokenizer reads as an empty text; fill or "
                         f"remove them")
    last = max(n for n, line in enumerate(lines, 1) if line.strip())
    gaps = [n for n, line in enumerate(lines[:last], 1) if not line.strip()]
    if gaps:
        shown = ", ".join(map(str, gaps[:5])) + (f" and {len(gaps) - 5} more"
                                                 if len(gaps) > 5 else "")
        raise ValueError(f"text file {p}: {len(gaps)} blank line(s) among the texts, at "
                         f"line(s) {shown}; a .txt query holds one text per line, and the "
                         f"texts follow its lines (the i-th is line i's), so remove the "
                         f"blank lines or put a text on each (blank lines after the last "
                         f"text are ignored)")
    return texts


def check_quoting(who, quoting) -> str:
    """``quoting`` if it is one of ``QUOTING``; else a ValueError naming ``who``."""
    if not isinstance(quoting, str) or quoting not in QUOTING:
        raise ValueError(f"{who}: quoting must be one of {list(QUOTING)} (\"csv\": quotes read "
                         f"as CSV does; \"none\": every character as written, one row per "
                         f"line), got {quoting!r}")
    return quoting


def _read_columns(path, wanted: dict[str, str], delimiter: str | None,
                  encoding: str, quoting: str = "csv") -> list[list[str]]:
    """The values of the columns ``wanted`` (``{which: column name}``) of a table, in the
    order given, after the checks :func:`read_text_table` names."""
    path = Path(path).expanduser()
    if not path.exists():
        raise ValueError(f"text table {path} does not exist")
    if not path.is_file():
        raise ValueError(f"text table {path} is not a file")
    fmt = FORMATS.get(path.suffix.lower())
    if fmt is None:
        raise ValueError(f"text table {path}: unknown format {path.suffix or '(no extension)'!r}"
                         f"; use one of {sorted(FORMATS)}")
    check_quoting(f"text table {path}", quoting)
    if delimiter is not None and fmt == "jsonl":
        raise ValueError(f"text table {path}: a delimiter applies to CSV and TSV files, not "
                         f"JSONL")
    if quoting != "csv" and fmt == "jsonl":
        raise ValueError(f"text table {path}: quoting={quoting!r} applies to CSV and TSV "
                         f"files, not JSONL (a JSON string is read as JSON writes it)")
    if delimiter is not None and (not isinstance(delimiter, str) or len(delimiter) != 1):
        raise ValueError(f"text table {path}: delimiter must be one character, got "
                         f"{delimiter!r}")
    try:
        if fmt == "jsonl":
            columns, rows, repeated = _read_jsonl(path, encoding)
            ends = {}
        else:
            delimiter = delimiter or ("," if fmt == "csv" else "\t")
            columns, rows, repeated, ends = _read_csv(path, delimiter, encoding, wanted,
                                                      quoting)
    except UnicodeDecodeError as e:
        raise _undecodable("text table", path, encoding) from e
    if fmt != "jsonl" and not columns:
        named = " and ".join(repr(n) for n in wanted.values())
        raise ValueError(f"text table {path} is empty: it needs a header row naming the "
                         f"columns ({named}) and one row per example")
    for which, name in wanted.items():
        if name not in columns:
            if not rows:
                raise ValueError(f"text table {path} has no rows")
            raise _missing_column(path, which, name, columns,
                                  rows if fmt != "jsonl" else ())
    for which, name in wanted.items():
        if name in repeated:
            raise ValueError(f"text table {path}: the {which} column {name!r} is named more "
                             f"than once: {repeated[name]}; which one holds the {which}s is "
                             f"ambiguous, so rename or remove the others")
    if not rows:
        raise ValueError(f"text table {path} has a header but no rows")
    if ends:
        _swallowed(path, rows, ends, columns, cast(str, delimiter), wanted)  # CSV or TSV
    for which, name in wanted.items():
        nested = [(line, "list" if isinstance(row[name], list) else "object")
                  for line, row in rows if isinstance(row.get(name), (list, dict))]
        if nested:
            kinds = sorted({k for _, k in nested})
            raise ValueError(f"text table {path}: {len(nested)} row(s) hold a JSON "
                             f"{' or '.join(kinds)} as their {which} (field {name!r}) at "
                             f"{_lines([line for line, _ in nested])}; a {which} must be a "
                             f"string (a number or boolean is read as written)")
    values = [[_cell(row.get(name)) for _, row in rows] for name in wanted.values()]
    for (which, name), vals in sorted(zip(wanted.items(), values),
                                      key=lambda item: item[0][0] != "label"):
        if fmt == "jsonl":
            absent = [line for line, row in rows if name not in row]
            if absent:
                raise ValueError(f"text table {path}: {len(absent)} row(s) have no field "
                                 f"{name!r} (the {which}) at {_lines(absent)}; add it or "
                                 f"remove them")
        empty = [line for (line, _), v in zip(rows, vals) if not v]
        if empty:
            raise ValueError(f"text table {path}: {len(empty)} row(s) have empty {which}s "
                             f"(column {name!r}) at {_lines(empty)}; fill or remove them")
        blank = [(line, v) for (line, _), v in zip(rows, vals) if not visible(v)]
        if blank:
            raise ValueError(f"text table {path}: {len(blank)} row(s) have {which}s with no "
                             f"visible character (column {name!r}) at "
                             f"{_lines([line for line, _ in blank])}: only white space, "
                             f"control, format or combining characters (e.g. "
                             f"{blank[0][1][:20]!r}), which a tokenizer reads as an empty "
                             f"text; fill or remove them")
    return values


def _some(names: Sequence[str], limit: int = 3) -> str:
    """The first ``limit`` of ``names`` (each cut to 60 characters), and how many more."""
    shown = ", ".join(repr(n[:60]) for n in names[:limit])
    return shown + (f" and {len(names) - limit} more" if len(names) > limit else "")


def unique_rows(path: Path, texts: list[str], labels: list[str]
                 ) -> tuple[list[str], list[str], int]:
    """The table's rows with each text once, in first-seen order and spelling, and how many
    repeats were left out: texts are one text when they fold alike (``folded``: they differ
    only in case, white space, Unicode form or format characters other than ``JOINERS``,
    and an uncased encoder gives them the same token ids), so a repeated text could
    otherwise be a task's support example and its query at once.

    Raises:
        ValueError: a text that the table labels two ways (naming it and the first three
            of its labels; asking whether the columns are swapped when most rows have a
            label of their own).
    """
    label_of: dict[str, str] = {}
    first: dict[str, str] = {}                       # folded text -> its first spelling
    clash: dict[str, list[str]] = {}
    kept_texts, kept_labels = [], []
    for t, lab in zip(texts, labels):
        key = folded(t)
        seen = label_of.setdefault(key, lab)
        if key not in first:
            first[key] = t
            kept_texts.append(t)
            kept_labels.append(lab)
        if seen != lab:
            other = clash.setdefault(key, [seen])
            if lab not in other:
                other.append(lab)
    if clash:
        shown = "; ".join(f"{first[k][:60]!r} as {_some(labs)}"
                          for k, labs in list(clash.items())[:3])
        distinct = len(set(labels))
        swapped = (f"; {distinct} of the {len(labels)} rows have labels of their own, as texts "
                   f"do: are the text and label columns swapped? (text_column= and "
                   f"label_column=; --text-column and --label-column in metaloop adapt and "
                   f"predict)"
                   if distinct > len(labels) / 2 else "")
        raise ValueError(f"text table {path}: {len(clash)} text(s) carry more than one label, "
                         f"e.g. {shown}; a text must have one label (texts that differ only "
                         f"in case, white space, Unicode form or format characters other "
                         f"than ZWJ and ZWNJ are one text): fix or remove those rows{swapped}")
    return kept_texts, kept_labels, len(texts) - len(kept_texts)


def texts_of(texts: Sequence[str], tokenizer, x: torch.Tensor, kind: str) -> list[str]:
    """``texts[i]`` for each id of one task's inputs ``[N, 1]`` (the ``text_of`` of the text
    families without a tokenizer; ``kind`` names the ids: "text", "example").

    Raises:
        ValueError: a family with a tokenizer; inputs that are not ``[N, 1]`` ids (a whole
            batch ``[B, N, 1]`` is named as such) or ids outside ``texts``.
    """
    if tokenizer is not None:
        raise ValueError(f"text_of needs {kind}-id inputs; this family has a tokenizer")
    if not isinstance(x, torch.Tensor) or x.dim() != 2 or x.shape[1] != 1:
        shape = list(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
        batch = " (a batch of tasks: give one, e.g. x[0])" if isinstance(
            x, torch.Tensor) and x.dim() == 3 else ""
        raise ValueError(f"text_of needs one task's {kind} ids [N, 1], got {shape}{batch}")
    ids = [int(i) for i in x[:, 0].tolist()]              # the batches carry them as floats
    bad = [i for i in ids if not 0 <= i < len(texts)]
    if bad:
        raise ValueError(f"text_of: ids {bad[:5]} are outside the {len(texts)} {kind}s")
    return [texts[i] for i in ids]


_FRACTIONS = (0.7, 0.1, 0.2)         # TextTable's default class split (train, val, test)


def _check_classes_alone(split, fractions, split_seed) -> None:
    """``TextTable(classes=...)``: refuse a ``split``, ``fractions`` or ``split_seed`` other
    than the default beside it, which ``classes`` would silently replace."""
    try:
        same_fractions = tuple(fractions) == _FRACTIONS
    except TypeError:
        same_fractions = False
    given = [f"{name}={value!r}" for name, value, default in (
        ("split", split, "all"), ("fractions", fractions, None), ("split_seed", split_seed, 0))
        if (not same_fractions if name == "fractions" else value != default)]
    if given:
        raise ValueError(f"TextTable got classes= and {', '.join(given)}: give split or "
                         f"classes, not both (classes replaces split)")


class TextTable:
    """N-way K-shot tasks over the labelled texts of a CSV, TSV or JSONL file.

    Args:
        path: the table (see ``read_text_table``).
        text_column: the name of the text column (``"text"``).
        label_column: the name of the label column (``"label"``).
        ways: classes per task.
        shots: support texts per class.
        queries: query texts per class.
        delimiter: the CSV/TSV field separator (default by extension).
        quoting: how a CSV/TSV file's quotes are read: ``"csv"`` (the default) or
            ``"none"`` (as written, one row per line: a GLUE-style TSV file); see
            ``read_text_table``.
        split: ``"all"`` (every class, the default), or ``"train"``, ``"val"``, ``"test"``,
            ``"trainval"``: the classes ``split_classes(class names, fractions, split_seed)``
            gives that split (disjoint; ``"trainval"`` is train + val).
        fractions: (train, val, test) fractions of the classes, summing to 1.
        split_seed: the seed of the class split.
        classes: explicit class names to use instead of ``split`` (e.g. from a split file,
            ``read_split_file``); each must be a label of the table, compared in Unicode NFC
            (``"caf\\xe9"`` names the label ``"cafe\\u0301"`` and the other way round), and
            is listed once; ``class_names`` spell them as the table does. Give ``split``
            (with ``fractions``, ``split_seed``) or ``classes``, not both: ``classes`` with
            a ``split``, ``fractions`` or ``split_seed`` other than the default is refused.
        tokenizer: optional ``texts -> [N, L]`` token ids (e.g. ``TextEncoder.tokenize``),
            applied once to every text of the chosen classes.
        drop_small: drop the classes with fewer than ``shots + queries`` texts instead of
            raising; ``dropped`` then names them.
        encoding: the file's text encoding.

    Attributes:
        kind: ``"classification"``.
        path: the file.
        text_column, label_column, quoting: as given.
        class_names: the classes used (sorted labels), indexed by the ids in
            ``TaskBatch.classes``.
        num_classes: the number of classes used.
        all_class_names: every label of the table (sorted).
        texts: every text of the classes used; ``labels`` int64 ``[N]`` their class ids.
        dropped: the classes dropped for having too few texts (``drop_small``).
        repeated: how many rows repeated an earlier row's text (up to case, white space,
            Unicode form and format characters other than ``JOINERS``: ``folded``) and
            label, read once.
        input_shape: ``(L,)`` with a tokenizer, ``(1,)`` without.

    Raises:
        ValueError: ``classes`` with a ``split``, ``fractions`` or ``split_seed`` other than
            the default (naming them, before the file is read); naming the file: every
            error of ``read_text_table``, an unknown split,
            unknown or repeated class names in ``classes`` (two spellings equal in NFC
            included), ``ways`` below 2, fewer classes than ``ways`` (in the split), and
            classes with fewer than ``shots + queries`` texts (named; unless
            ``drop_small``), a text labelled two ways (named with its labels; texts compared
            as ``folded``).
    """

    kind = "classification"

    def __init__(self, path: str | os.PathLike, text_column: str = "text",
                 label_column: str = "label", ways: int = 5, shots: int = 1, queries: int = 5,
                 delimiter: str | None = None, split: str = "all",
                 fractions: Sequence[float] = _FRACTIONS, split_seed: int = 0,
                 classes: Sequence[str] | None = None, tokenizer: Tokenizer | None = None,
                 drop_small: bool = False, encoding: str = "utf-8-sig", quoting: str = "csv"):
        ways, shots, queries = check_positive_int("TextTable", ways=ways, shots=shots,
                                                  queries=queries)
        check_ways("TextTable", ways)
        self.path = Path(path).expanduser()
        if classes is not None:
            _check_classes_alone(split, fractions, split_seed)
        if classes is None and split not in SPLITS:
            raise ValueError(f"TextTable split must be one of {list(SPLITS)}, got {split!r}")
        texts, labels = read_text_table(self.path, text_column, label_column, delimiter,
                                        encoding, quoting)
        texts, labels, self.repeated = unique_rows(self.path, texts, labels)
        self.all_class_names = sorted(set(labels))
        if classes is not None:
            check_name_list("TextTable classes", classes)
            typed = [str(c) for c in classes]
            found, unknown = class_positions(typed, self.all_class_names)   # in NFC
            if unknown:
                raise ValueError(f"text table {self.path} has no class(es) {unknown[:10]}; its "
                                 f"labels are {self.all_class_names[:10]}"
                                 f"{' ...' if len(self.all_class_names) > 10 else ''}")
            check_distinct_classes(f"text table {self.path}: classes", typed)
            names = [self.all_class_names[i] for i in found]     # as the table spells them
            split = "classes"
        elif split == "all":
            names = self.all_class_names
        else:
            train, val, test = split_classes(self.all_class_names, fractions, split_seed)
            names = {"train": train, "val": val, "test": test, "trainval": train + val}[split]
        self.split, self.fractions, self.split_seed = split, tuple(fractions), split_seed
        self.text_column, self.label_column = text_column, label_column
        self.quoting = quoting
        wanted = set(names)
        by_class: dict[str, list[str]] = {c: [] for c in sorted(wanted)}
        for t, lab in zip(texts, labels):
            if lab in wanted:
                by_class[lab].append(t)
        self._by_class = by_class
        self.tokenizer, self.drop_small = tokenizer, drop_small
        self.ways, self.shots, self.queries = ways, shots, queries
        self._build()

    # ------------------------------------------------------------------ classes and inputs

    def _build(self) -> None:
        """Choose the classes for ``shots + queries`` (dropping or rejecting small ones),
        then the index table and the inputs."""
        need = self.shots + self.queries
        small = [c for c, ts in self._by_class.items() if len(ts) < need]
        where = "" if self.split == "all" else f" (split {self.split!r})"
        if small and not self.drop_small:
            sizes = ", ".join(f"{c!r} ({len(self._by_class[c])})" for c in small[:10])
            more = f" and {len(small) - 10} more" if len(small) > 10 else ""
            raise SmallClassesError(
                f"text table {self.path}{where}: {len(small)} class(es) have fewer than "
                f"shots + queries = {self.shots} + {self.queries} = {need} texts: "
                f"{sizes}{more}", SMALL_ADVICE, shots=self.shots)
        names = [c for c in self._by_class if c not in set(small)]
        if len(names) < self.ways:
            kept = f" ({len(small)} dropped as too small)" if small else ""
            raise ValueError(f"text table {self.path}{where} has {len(names)} class(es) with "
                             f"at least {need} texts{kept}, fewer than ways = {self.ways}: "
                             f"{names[:10]}{' ...' if len(names) > 10 else ''}; "
                             f"{self._fix_fewer_classes(len(small))}")
        self.dropped = small
        if names == getattr(self, "class_names", None):
            return                      # the same classes: share the texts and inputs
        self.class_names, self.num_classes = names, len(names)
        groups = [self._by_class[c] for c in names]
        self.texts = [t for g in groups for t in g]
        counts = torch.tensor([len(g) for g in groups])                      # [K]
        self.labels = torch.repeat_interleave(torch.arange(len(names)), counts)  # [N]
        starts = torch.cumsum(counts, 0) - counts                            # [K]
        m = int(counts.max())
        pos = torch.arange(m)                                                # [M]
        self._table = (starts[:, None] + pos).masked_fill(pos >= counts[:, None], 0)  # [K, M]
        self._counts = counts
        self._pad = None if bool((counts == m).all()) else counts
        self._inputs = text_inputs(self.tokenizer, self.texts, "TextTable")  # [N, L or 1]
        words = [c.replace("_", " ").replace("-", " ") for c in names]
        self._words = words if words != names else None

    def _fix_fewer_classes(self, dropped: int) -> str:
        """How to get ``ways`` classes: for a split by fractions, the split's share of the
        table's classes and the option that sets it; ``dropped``: the classes left out as
        too small."""
        fixes = ["lower ways"]
        if dropped:
            fixes.append(f"add texts to the {dropped} class(es) dropped as too small")
        if self.split in ("train", "val", "test", "trainval"):
            fixes.append(f"give split {self.split!r} more classes (it has {len(self._by_class)} "
                         f"of the table's {len(self.all_class_names)} by split fractions "
                         f"{[float(f) for f in self.fractions]} (train, val, test) and "
                         f"split_seed {self.split_seed}: fractions=, --split-fractions in "
                         f"metaloop adapt, family.split_fractions in a config)")
        fixes.append("bring more classes")
        return f"{', '.join(fixes[:-1])}, or {fixes[-1]}"

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self._inputs.shape[1:])

    def describe(self) -> str:
        """One line on what was read: texts and classes in use, and classes dropped."""
        return (f"{len(self.texts)} texts in {self.num_classes} classes"
                + (f"; {self.repeated} repeated row(s) of the table read once"
                   if self.repeated else "")
                + (f"; dropped {len(self.dropped)} class(es) with fewer than "
                   f"{self.shots + self.queries} texts, e.g. {self.dropped[0]!r}"
                   if self.dropped else ""))

    # ------------------------------------------------------------------ sampling

    def sample_indices(self, n: int, generator: torch.Generator | None = None
                       ) -> tuple[torch.Tensor, torch.Tensor]:
        """Class ids int64 ``[n, ways]`` and text ids ``[n, ways, shots+queries]``
        (positions in ``texts``)."""
        check_positive_int("TextTable.sample", n=n)
        check_generator("TextTable.sample", generator)
        return episode_indices(self._table, self._pad, n, self.ways, self.shots + self.queries,
                               generator)

    def sample(self, n: int, generator: torch.Generator | None = None) -> TaskBatch:
        """Sample n tasks.

        Returns:
            TaskBatch: support_x float32 ``[n, ways*shots, L]`` (token ids, or ``L = 1`` text
            ids without a tokenizer), support_y int64 ``[n, ways*shots]`` with labels
            ``arange(ways).repeat_interleave(shots)``, query likewise with ``queries``, and
            classes int64 ``[n, ways]`` (ids into ``class_names``).
        """
        classes, idx = self.sample_indices(n, generator)
        return split_episodes(self._inputs[idx], classes, self.shots)  # [n, ways, S+Q, L]

    def wordings(self, classes: torch.Tensor | Sequence[int]) -> list[dict[str, str]]:
        """Candidate label wordings of each class id: ``name`` (the label), and ``words``
        (underscores and hyphens as spaces) when some label of the family has them.

        Raises:
            ValueError: a class id that is not an int in ``[0, num_classes)``.
        """
        out = []
        for c in class_ids("TextTable.wordings", classes, self.num_classes):
            w = {"name": self.class_names[c]}
            if self._words is not None:
                w["words"] = self._words[c]
            out.append(w)
        return out

    def text_of(self, x: torch.Tensor) -> list[str]:
        """The texts of one task's text-id inputs ``[N, 1]`` (families without a tokenizer),
        e.g. ``fam.text_of(batch.support_x[0])``; see ``texts_of``."""
        return texts_of(self.texts, self.tokenizer, x, "text")

    def with_shots(self, shots: int, queries: int | None = None) -> TextTable:
        """The same table, split and ways with other shot (and query) counts, sharing the
        texts (classes are checked, or dropped, again for the new ``shots + queries``)."""
        queries = self.queries if queries is None else queries
        shots, queries = check_positive_int("TextTable", shots=shots, queries=queries)
        new = copy.copy(self)
        new.shots, new.queries = shots, queries
        if shots + queries != self.shots + self.queries:
            new._build()
        return new

    def __repr__(self) -> str:
        return (f"TextTable({str(self.path)!r}, split={self.split!r}, ways={self.ways}, "
                f"shots={self.shots}, queries={self.queries}, num_classes={self.num_classes})")


def check_ways(who: str, ways: int) -> None:
    """Refuse ``ways`` below 2, led by ``who``: a 1-way task is always answered right."""
    if ways < 2:
        raise ValueError(f"{who} ways must be >= 2: a {ways}-way task is always answered "
                         f"right, got {ways}")


def class_ids(who: str, classes: torch.Tensor | Sequence[int], num_classes: int) -> list[int]:
    """``classes`` (a TaskBatch's ``classes[i]``, or ints) as ints in ``[0, num_classes)``.

    Raises:
        ValueError: an id that is not an integer or lies outside the range (a negative id
            would silently index from the end), led by ``who``.
    """
    if isinstance(classes, torch.Tensor):
        if classes.is_floating_point() or classes.is_complex() or classes.dim() > 1:
            raise ValueError(f"{who}: classes must be integer class ids [ways], got "
                             f"{classes.dtype} {list(classes.shape)}")
        classes = classes.reshape(-1).tolist()
    ids = []
    for c in classes:
        if isinstance(c, bool) or not isinstance(c, numbers.Integral):
            raise ValueError(f"{who}: class ids must be ints, got {c!r}")
        if not 0 <= int(c) < num_classes:
            raise ValueError(f"{who}: class id {int(c)} is outside [0, {num_classes})")
        ids.append(int(c))
    return ids


EXACT_IDS = 2 ** 24     # float32 holds every integer below this exactly


def text_inputs(tokenizer: Tokenizer | None, texts: list[str], who: str) -> torch.Tensor:
    """The family's float32 inputs: token ids ``[N, L]``, or without a tokenizer each text's
    index ``[N, 1]`` (read back by ``texts_of``).

    Raises:
        ValueError: a tokenizer that does not return a ``[N, L]`` tensor, or an id (a token
            id, or a text index: more than 2**24 texts) that float32 cannot hold exactly,
            led by ``who``.
    """
    if tokenizer is None:
        if len(texts) > EXACT_IDS:
            raise ValueError(f"{who}: {len(texts)} texts without a tokenizer: their ids must "
                             f"be below 2**24 to be exact in float32; give a tokenizer, or "
                             f"split the table")
        return torch.arange(len(texts), dtype=torch.float32)[:, None]          # [N, 1]
    ids = tokenizer(texts)
    if not isinstance(ids, torch.Tensor) or ids.dim() != 2 or ids.shape[0] != len(texts):
        got = list(ids.shape) if isinstance(ids, torch.Tensor) else type(ids).__name__
        raise ValueError(f"{who} tokenizer must return a [N={len(texts)}, L] tensor, "
                         f"got {got}")
    if not ids.is_floating_point() and int(ids.max()) >= EXACT_IDS:
        raise ValueError(f"{who} tokenizer ids must be below 2**24 to be exact in float32")
    return ids.to(torch.float32)                                                # [N, L]
