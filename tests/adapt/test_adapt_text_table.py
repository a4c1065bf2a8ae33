"""The user's own text tables (``metaloop adapt --family table``): inputs a real table has."""

from __future__ import annotations

import csv

import pytest

from metaloop.tasks.text_table import TextTable, read_text_table


@pytest.mark.parametrize("suffix,delimiter", [(".csv", ","), (".tsv", "\t")])
def test_texts_longer_than_the_csv_modules_default_field_limit_are_read(tmp_path, suffix,
                                                                         delimiter):
    """A 200,000-character text (a whole document) is valid CSV / TSV; the csv module's
    default limit of 131,072 characters per field made it "not valid CSV"."""
    long = "word " * 40_000
    path = tmp_path / f"docs{suffix}"
    with path.open("w", newline="") as f:
        w = csv.writer(f, delimiter=delimiter)
        w.writerow(["text", "label"])
        for c in ("a", "b"):
            for i in range(3):
                w.writerow([f"{c}{i} {long}", c])
    before = csv.field_size_limit()
    texts, labels = read_text_table(path)
    assert texts[0] == f"a0 {long}".strip() and len(texts[0]) == 200_002
    assert labels == ["a"] * 3 + ["b"] * 3
    assert csv.field_size_limit() == before            # the module's setting is restored
    fam = TextTable(path, ways=2, shots=1, queries=2)
    assert fam.class_names == ["a", "b"] and len(fam.texts) == 6
