"""split_classes takes class names: non-empty strings, each refused otherwise by index."""

from __future__ import annotations

import pytest

from metaloop.tasks import split_classes


@pytest.mark.parametrize("names, bad, index", [(["", "a", "b", "c"], "''", 0),
                                               (["a", None, "b", "c"], "None", 1),
                                               (["a", "b", "c", 3], "3", 3),
                                               (["a", "b", b"c", "d"], "b'c'", 2)])
def test_an_empty_or_non_string_name_is_refused(names, bad, index):
    with pytest.raises(ValueError, match=rf"^split_classes: class names must be non-empty "
                                         rf"strings, got {bad} at index {index}$"):
        split_classes(names, (0.5, 0.25, 0.25))


def test_string_names_split_as_before():
    assert sum(map(len, split_classes(["a", "b", "c", "d"], (0.5, 0.25, 0.25)))) == 4


def test_names_from_a_numpy_array_come_back_as_plain_strings():
    import numpy as np

    parts = split_classes(np.array(["a", "b", "c", "d", "e"]), (0.6, 0.2, 0.2), seed=0)
    assert all(type(n) is str for part in parts for n in part)
