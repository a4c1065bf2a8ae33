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
