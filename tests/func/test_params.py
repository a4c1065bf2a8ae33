import pytest
import torch

from metaloop.func import combine, forward, last_linear_names, params_of, partition
from metaloop.models import MLP, Conv4


def test_partition_combine_roundtrip():
    p = params_of(MLP())
    head, body = partition(p, lambda n: n.startswith("head"))
    assert sorted(head) == ["head.bias", "head.weight"]
    assert combine(body, head).keys() == p.keys()
    with pytest.raises(ValueError, match="unknown parameter names"):
        partition(p, ["nope"])
    with pytest.raises(ValueError, match="matches no parameter"):
        partition(p, lambda n: False)


def test_last_linear_and_functional_forward_do_not_mutate():
    m = Conv4(1, 8, 3, image_size=16)
    assert last_linear_names(m) == ["head.weight", "head.bias"]
    x = torch.randn(4, 1, 16, 16)
    p = {k: v.detach() * 0 for k, v in params_of(m).items() if k.startswith("head")}
    assert torch.equal(forward(m, p, x), torch.zeros(4, 3))
    assert m.head.weight.abs().sum() > 0
    with pytest.raises(ValueError, match="no nn.Linear"):
        last_linear_names(torch.nn.ReLU())
