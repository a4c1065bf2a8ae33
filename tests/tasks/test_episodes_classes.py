"""Episodes' ``classes`` selection: a class listed twice is refused, since it would be two
labels of one task and an example could be in the support and the query set at once."""

import pytest
import torch

import metaloop as ml


def _family(**kw):
    y = torch.arange(3).repeat_interleave(6)                      # 3 classes x 6 examples
    x = torch.arange(18, dtype=torch.float32)[:, None]            # [18, 1]: x is its own id
    return ml.tasks.Episodes(x, y, ways=2, shots=1, queries=5, class_names=["a", "b", "c"],
                             **kw)


def test_repeated_classes_are_refused_by_name():
    with pytest.raises(ValueError, match=r"Episodes classes .*more than once: \['a'\]"):
        _family(classes=["a", "a", "b"])
    with pytest.raises(ValueError, match=r"Episodes.subset classes .*more than once: \['c'\]"):
        _family().subset(["c", "b", "c"])


def test_support_and_query_never_share_an_example():
    fam = _family(classes=["a", "b", "c"])
    b = fam.sample(300, generator=torch.Generator().manual_seed(0))
    for i in range(len(b)):
        support = set(b.support_x[i].flatten().tolist())
        assert support.isdisjoint(b.query_x[i].flatten().tolist())
    assert (b.classes[:, 0] != b.classes[:, 1]).all()


def test_one_string_for_classes_is_refused_not_split_into_characters():
    """``classes="10"`` selected the classes "1" and "0"; ``"11"`` was "listed more than
    once". The same for ``subset``, ``class_names`` and ``split_classes``."""
    x, y = torch.rand(120, 4), torch.arange(12).repeat_interleave(10)
    msg = r"must be a list of class names, not one string: got '10'.*pass \['10'\]"
    with pytest.raises(ValueError, match=r"Episodes classes " + msg):
        ml.tasks.Episodes(x, y, ways=2, shots=2, queries=3, classes="10")
    with pytest.raises(ValueError, match=r"Episodes classes .*got '11'"):
        ml.tasks.Episodes(x, y, ways=1, shots=2, queries=3, classes="11")
    with pytest.raises(ValueError, match=r"Episodes.subset classes " + msg):
        ml.tasks.Episodes(x, y, ways=2, shots=2, queries=3).subset("10")
    with pytest.raises(ValueError, match=r"Episodes class_names must be a list"):
        ml.tasks.Episodes(x[:20], y[:20] % 2, ways=2, shots=2, queries=3, class_names="ab")
    with pytest.raises(ValueError, match=r"split_classes class_names must be a list of class "
                                         r"names, not one string: got 'abcdefghij'"):
        ml.tasks.split_classes("abcdefghij")
    fam = ml.tasks.Episodes(x, y, ways=2, shots=2, queries=3, classes=["10", "11"])
    assert fam.class_names == ["10", "11"]
    assert sum(map(len, ml.tasks.split_classes(("ab", "c", "d"), (0.8, 0.1, 0.1)))) == 3


def test_int_classes_select_the_classes_of_those_names():
    """``classes=[0, 2]`` on the default names "0", "1", "2" was refused: "unknown
    class(es): [0, 2]"."""
    x, y = torch.arange(18, dtype=torch.float32)[:, None], torch.arange(3).repeat_interleave(6)
    fam = ml.tasks.Episodes(x, y, ways=2, shots=1, queries=5, classes=[0, 2])
    assert fam.class_names == ["0", "2"]
    b = fam.sample(50, generator=torch.Generator().manual_seed(0))
    assert set(y[b.support_x.long().flatten()].tolist()) == {0, 2}
    assert ml.tasks.Episodes(x, y, ways=2, shots=1, queries=5).subset([1, 0]).class_names \
        == ["1", "0"]
    with pytest.raises(ValueError, match=r"unknown class\(es\): \['0'\]"):
        _family(classes=[0, "a"])
