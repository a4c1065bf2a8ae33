"""Families take counts of any integer type (numpy's included) and keep them as ints."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import metaloop as ml
from metaloop.tasks.omniglot import Omniglot, check_positive_int
from metaloop.tasks.protocol import check_family


def test_check_positive_int_returns_python_ints():
    got = check_positive_int("X", a=np.int64(2), b=3, c=np.int32(4), d=torch.tensor(5))
    assert got == (2, 3, 4, 5) and all(type(v) is int for v in got)


@pytest.mark.parametrize("value", [0, -1, np.int64(0), True, False, 2.0, np.float64(2),
                                   "2", None, torch.tensor(2.0)])
def test_check_positive_int_refuses_what_is_not_a_positive_integer(value):
    with pytest.raises(ValueError, match=r"^X b must be a positive int, got "):
        check_positive_int("X", a=1, b=value)


def test_episodes_takes_numpy_counts():
    """``Episodes(ways=np.int64(2))`` was refused as "not a positive int"."""
    x, y = torch.randn(20, 2), torch.arange(4).repeat_interleave(5)
    fam = ml.tasks.Episodes(x, y, ways=np.int64(2), shots=np.int32(1), queries=np.int64(1))
    b = fam.sample(np.int64(3), torch.Generator().manual_seed(0))
    assert b.support_x.shape == (3, 2, 2) and b.query_x.shape == (3, 2, 2)
    assert fam.ways == 2 and fam.shots == 1 and fam.queries == 1
    assert all(type(v) is int for v in (fam.ways, fam.shots, fam.queries))
    check_family(fam)
    more = fam.with_shots(np.int64(2), np.int64(2)).with_ways(np.int64(3))
    assert (more.ways, more.shots, more.queries) == (3, 2, 2)
    assert all(type(v) is int for v in (more.ways, more.shots, more.queries))


def test_omniglot_takes_numpy_counts_and_keeps_ints(omniglot_root):
    fam = Omniglot(omniglot_root, split="evaluation", ways=np.int64(5), shots=np.int32(1),
                   queries=np.int64(2))
    assert (fam.ways, fam.shots, fam.queries) == (5, 1, 2)
    assert all(type(v) is int for v in (fam.ways, fam.shots, fam.queries))
    b = fam.sample(np.int64(2), torch.Generator().manual_seed(0))
    assert b.support_x.shape == (2, 5, 1, 28, 28) and b.query_x.shape == (2, 10, 1, 28, 28)
    x, _ = fam.sample_flat(np.int64(3), torch.Generator().manual_seed(0))
    assert x.shape == (3, 1, 28, 28)
    more = fam.with_shots(np.int64(3), np.int64(4))
    assert (more.shots, more.queries) == (3, 4) and type(more.shots) is type(more.queries) is int
    check_family(fam)
    with pytest.raises(ValueError, match=r"Omniglot ways must be a positive int, got True"):
        Omniglot(omniglot_root, split="evaluation", ways=True)


def test_sinusoid_takes_numpy_counts_and_keeps_ints():
    fam = ml.tasks.Sinusoid(np.int64(5), np.int32(3))
    assert (fam.shots, fam.queries) == (5, 3) and type(fam.shots) is type(fam.queries) is int
    b = fam.sample(np.int64(2), torch.Generator().manual_seed(0))
    assert b.support_x.shape == (2, 5, 1) and b.query_y.shape == (2, 3, 1)
    a, _ = fam.sample_params(np.int64(4))
    assert a.shape == (4,)
    check_family(fam)


@pytest.mark.parametrize("kwargs, match", [
    ({"shots": True}, "Sinusoid shots must be a positive int, got True"),
    ({"queries": 2.0}, "Sinusoid queries must be a positive int, got 2.0"),
    ({"amplitude": (1.0, 1.0)}, r"amplitude range must have low < high"),
    ({"x_range": (0.0, float("inf"))}, "x_range must be a \\(low, high\\) pair of finite"),
])
def test_sinusoid_raises_what_its_docstring_lists(kwargs, match):
    with pytest.raises(ValueError, match=match):
        ml.tasks.Sinusoid(**kwargs)


@pytest.mark.parametrize("dtype", [torch.int64, "float64"])
def test_sinusoid_sample_refuses_a_dtype_that_is_not_floating(dtype):
    """``dtype="float64"`` went to ``Tensor.to`` as a device: "Invalid device string"."""
    with pytest.raises(ValueError, match=r"Sinusoid.sample dtype must be a floating-point "
                                         r"torch.dtype, got "):
        ml.tasks.Sinusoid(2, 2).sample(1, dtype=dtype)


def _ints(fam) -> bool:
    return all(type(v) is int for v in (fam.ways, fam.shots, fam.queries))


def test_fashion_mnist_text_table_and_wordnet_keep_numpy_counts_as_ints(fashion_mnist_root,
                                                                        tmp_path):
    """A numpy count was kept as given, so ``check_family`` (and a record's JSON) refused it
    after the constructor had taken it."""
    fm = ml.tasks.FashionMNIST(fashion_mnist_root, classes=range(3), ways=np.int64(2),
                               shots=np.int32(1), queries=np.int64(2))
    table = tmp_path / "t.csv"
    table.write_text("text,label\n" + "".join(f"t{c} {i},c{c}\n" for c in range(3)
                                              for i in range(4)))
    tt = ml.tasks.TextTable(table, ways=np.int64(2), shots=np.int64(1), queries=np.int32(2))
    wn = ml.tasks.WordNet(split="test", ways=np.int64(3), shots=np.int64(1),
                          queries=np.int64(2))
    for fam in (fm, tt, wn):
        assert _ints(fam), fam
        check_family(fam)
        more = fam.with_shots(np.int64(2), np.int64(1))
        assert (more.shots, more.queries) == (2, 1) and _ints(more), more
        check_family(more)

