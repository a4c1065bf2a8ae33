"""``Episodes(x, y)`` reads labels with gaps as ``from_dataset`` and ``from_tensors`` do:
labels 3, 7, 100 are three classes named "3", "7", "100", not 101 classes of which 98 are
empty (refused as too small, with advice to lower the shots that could not help)."""

import numpy as np
import pytest
import torch

from metaloop.tasks import Episodes
from metaloop.tasks.episodes import SmallClassesError


def _data(labels=(3, 7, 100), per=6):
    y = torch.tensor(labels).repeat(per)
    return torch.randn(len(y), 4), y


@pytest.mark.parametrize("as_numpy", [False, True])
def test_labels_with_gaps_are_the_classes_present_named_by_value(as_numpy):
    x, y = _data()
    fam = Episodes(x.numpy() if as_numpy else x, y.numpy() if as_numpy else y, ways=3,
                   shots=2, queries=3)
    assert fam.num_classes == 3 and fam.class_names == ["3", "7", "100"]
    assert fam.dropped == []
    ds = Episodes.from_dataset(list(zip(x, y.tolist())), ways=3, shots=2, queries=3)
    assert ds.class_names == fam.class_names
    g = torch.Generator().manual_seed(0)
    a = fam.sample(4, generator=g)
    b = ds.sample(4, generator=torch.Generator().manual_seed(0))
    assert torch.equal(a.support_x, b.support_x) and torch.equal(a.query_y, b.query_y)
    assert torch.equal(a.classes, b.classes)
    for t in range(4):                          # each example's class is the one named
        for i, c in enumerate(a.classes[t].tolist()):
            name = int(fam.class_names[c])
            rows = a.support_x[t][a.support_y[t] == i]
            assert all(y[(x == r).all(1)].item() == name for r in rows)


def test_labels_with_gaps_select_and_split_by_their_names():
    x, y = _data(labels=(0, 10, 20, 30), per=5)
    fam = Episodes(x, y, ways=2, shots=1, queries=2, classes=["10", "30"])
    assert fam.class_names == ["10", "30"]
    assert Episodes(x, y, ways=2, shots=1, queries=2).subset(["0", "20"]).class_names == \
        ["0", "20"]


def test_contiguous_labels_and_given_class_names_are_unchanged():
    x, y = _data(labels=(0, 1, 2))
    assert Episodes(x, y, ways=3, shots=2, queries=3).class_names == ["0", "1", "2"]
    named = Episodes(x, y, ways=3, shots=2, queries=3, class_names=["a", "b", "c"])
    assert named.class_names == ["a", "b", "c"]
    x, y = _data()
    with pytest.raises(ValueError, match=r"labels must be in \[0, 3\) \(len\(class_names\)\)"):
        Episodes(x, y, ways=3, class_names=["a", "b", "c"])
    with pytest.raises(ValueError, match=r"labels must be in \[0,"):
        Episodes(x, torch.tensor([-1, 3, 7]).repeat(6), ways=3)
    with pytest.raises(ValueError, match="must be int labels"):
        Episodes(x, y.float(), ways=3)


def test_huge_label_values_are_not_a_table_of_that_many_classes():
    x, y = _data(labels=(5, 10**12), per=4)
    fam = Episodes(x, y, ways=2, shots=1, queries=1)
    assert fam.class_names == ["5", str(10**12)]


def test_small_classes_with_gaps_name_only_classes_that_exist():
    x, y = _data(labels=(3, 7, 100))
    y = torch.cat([y, torch.tensor([50])])
    x = torch.cat([x, torch.randn(1, 4)])
    with pytest.raises(SmallClassesError, match=r"1 class\(es\) .*'50' \(1\)"):
        Episodes(x, y, ways=3, shots=2, queries=3)
    fam = Episodes(x, y, ways=3, shots=2, queries=3, drop_small=True)
    assert fam.dropped == ["50"] and fam.class_names == ["3", "7", "100"]


def test_float64_features_give_float32_tasks_as_documented():
    x, y = _data(labels=(0, 1, 2))
    fam = Episodes(x.double(), y, ways=3, shots=2, queries=3)
    b = fam.sample(2, generator=torch.Generator().manual_seed(0))
    assert b.support_x.dtype == b.query_x.dtype == torch.float32
    assert np.isin(b.support_x.numpy(), x.numpy()).all()          # the values, not rescaled
    assert "float32 whatever ``x``'s dtype" in Episodes.__doc__
