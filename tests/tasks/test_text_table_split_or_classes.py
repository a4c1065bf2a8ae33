"""``TextTable(split=..., classes=...)``: ``classes`` replaces the split, so a split (or its
``fractions`` / ``split_seed``) given beside it was silently ignored, even ``split="bogus"``;
it is now refused, naming both, before the table is read. The default split with ``classes``
(what ``metaloop.build`` and the config path pass) still works."""

import numpy as np
import pytest

from metaloop.tasks.text_table import TextTable

CLASSES = ["animal", "person", "plant"]


@pytest.fixture
def table(tmp_path):
    rows = ["text,label"] + [f"{c} sentence number {i},{c}" for c in CLASSES
                             for i in range(4)]
    path = tmp_path / "t.csv"
    path.write_text("\n".join(rows) + "\n", encoding="utf-8")
    return path


@pytest.mark.parametrize("given, named", [
    ({"split": "bogus"}, "split='bogus'"),
    ({"split": "test"}, "split='test'"),
    ({"fractions": (0.5, 0.0, 0.5)}, "fractions=(0.5, 0.0, 0.5)"),
    ({"split_seed": 3}, "split_seed=3"),
    ({"split": "train", "split_seed": 1}, "split='train', split_seed=1"),
])
def test_a_split_beside_classes_is_refused_naming_both(table, given, named):
    with pytest.raises(ValueError) as e:
        TextTable(table, ways=2, shots=1, queries=2, classes=CLASSES[:2], **given)
    msg = str(e.value)
    assert msg == (f"TextTable got classes= and {named}: give split or classes, not both "
                   f"(classes replaces split)")


def test_refused_before_the_table_is_read(tmp_path):
    with pytest.raises(ValueError, match="give split or classes, not both"):
        TextTable(tmp_path / "missing.csv", ways=2, classes=CLASSES, split="test")


@pytest.mark.parametrize("given", [{}, {"split": "all"}, {"fractions": [0.7, 0.1, 0.2]},
                                   {"fractions": np.array([0.7, 0.1, 0.2]), "split_seed": 0}])
def test_classes_with_the_default_split_still_work(table, given):
    fam = TextTable(table, ways=2, shots=1, queries=2, classes=["plant", "animal"], **given)
    assert fam.class_names == ["animal", "plant"] and fam.split == "classes"


def test_a_split_alone_still_works(table):
    fam = TextTable(table, ways=2, shots=1, queries=2, split="all", split_seed=3)
    assert fam.class_names == CLASSES
    with pytest.raises(ValueError, match="split must be one of"):
        TextTable(table, ways=2, split="bogus")
