"""WordNet refuses 1-way tasks by name, before it looks for its data."""

from __future__ import annotations

import pytest

from metaloop.tasks.wordnet import WordNet


def test_one_way_is_refused_before_the_data_is_read(tmp_path):
    """WordNet(ways=1) was accepted while --ways 1 is refused; without the data it said
    only that data.noun was missing."""
    with pytest.raises(ValueError, match=r"^WordNet ways must be >= 2: a 1-way task is always "
                                         r"answered right, got 1$"):
        WordNet(root=tmp_path / "nowhere", ways=1)
