"""``metaloop predict``'s tab-separated lines escape the control characters of file and
class names (ESC, DEL, C0 but tab and line breaks, C1), so that a name cannot drive the
terminal; tabs and line breaks stay quoted as the csv module reads them back."""

import csv
import io

import pytest

from metaloop.recipes.predict import tsv_line


@pytest.mark.parametrize(("name", "shown"), [
    ("a\x1b[31mred.png", '"a\\x1b[31mred.png"'),
    ("form\x0cfeed\x0b.png", '"form\\x0cfeed\\x0b.png"'),
    ("bell\x07\x7f.png", '"bell\\x07\\x7f.png"'),
    ("csi\x9b2J.png", '"csi\\x9b2J.png"'),
    ("nul\x00.png", '"nul\\x00.png"'),
])
def test_control_characters_are_escaped_and_quoted(name, shown):
    line = tsv_line([name, "cat\x1b]0;t\x07"])
    assert line == f'{shown}\t"cat\\x1b]0;t\\x07"\n'
    assert not any(ord(c) < 32 and c not in "\t\n\r" or 0x7f <= ord(c) <= 0x9f for c in line)


def test_escaped_fields_read_back_as_their_escaped_text():
    line = tsv_line(['a\x1b"b', "x\ty", "plain é"])
    assert list(csv.reader(io.StringIO(line), dialect="excel-tab")) == [
        ['a\\x1b"b', "x\ty", "plain é"]]
