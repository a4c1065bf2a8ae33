"""A selector of what adapts is a predicate or a collection of names, nothing else."""

from __future__ import annotations

import pytest

import metaloop as ml
from metaloop.adapt import SGDAdapter
from metaloop.func import params_of, partition


def _mlp():
    return ml.models.MLP(in_dim=1, hidden=(4,), out_dim=1)


@pytest.mark.parametrize("select, named", [(3, "int 3"), (False, "bool False"),
                                           (None, "NoneType None"), (2.5, "float 2.5")])
def test_partition_names_a_selector_that_is_neither_callable_nor_iterable(select, named):
    with pytest.raises(ValueError, match=rf"predicate or a collection of parameter names, "
                                         rf"got {named}$"):
        partition(params_of(_mlp()), select)


def test_partition_names_a_collection_holding_something_other_than_names():
    with pytest.raises(ValueError, match=r"got a collection holding int 0$"):
        partition(params_of(_mlp()), [0])
    with pytest.raises(ValueError, match=r"the string 'head.weight'"):
        partition(params_of(_mlp()), "head.weight")


@pytest.mark.parametrize("make", [ml.meta.MAML, ml.meta.Reptile, ml.meta.Pretrain,
                                  lambda m, adapt: SGDAdapter(m, adapt=adapt)])
@pytest.mark.parametrize("adapt", [3, False, [0]])
def test_the_learners_refuse_such_an_adapt_with_a_value_error(make, adapt):
    with pytest.raises(ValueError, match=r"predicate or a collection of parameter names"):
        make(_mlp(), adapt=adapt)


def test_names_and_predicates_still_select():
    params = params_of(_mlp())
    names = [n for n in params if n.startswith("head")]
    assert list(partition(params, names)[0]) == names
    assert list(partition(params, (n for n in names))[0]) == names
    assert list(partition(params, lambda n: n.startswith("head"))[0]) == names


def test_bytes_are_named_as_bytes_not_as_a_collection_of_ints():
    import torch

    params = {"a": torch.zeros(1)}
    with pytest.raises(ValueError, match=r"got the bytes b'a'; pass \[b'a'\] for that one "
                                         r"name \(as a str\)"):
        partition(params, b"a")
