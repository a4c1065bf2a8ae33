"""``partition`` and ``combine`` against hand-written dicts: names are matched whole (one
name that begins another selects only itself), and combining the parts gives back every
tensor itself."""

import torch
from torch import nn

from metaloop.func.params import combine, detach, params_of, partition


def test_a_name_selects_only_itself_not_the_names_it_begins():
    a, b, c, d = (torch.full((2,), float(v)) for v in range(4))
    params = {"head.weight": a, "head.weight_scale": b, "header.weight": c, "w": d}
    chosen, rest = partition(params, ["head.weight"])
    assert list(chosen) == ["head.weight"] and chosen["head.weight"] is a
    assert list(rest) == ["head.weight_scale", "header.weight", "w"]
    assert rest["head.weight_scale"] is b and rest["header.weight"] is c and rest["w"] is d


def test_a_model_with_head_and_header_modules_partitions_by_whole_names():
    model = nn.Module()
    model.head = nn.Linear(3, 2)
    model.header = nn.Linear(3, 3)
    params = params_of(model)
    chosen, rest = partition(params, ["head.weight", "head.bias"])
    assert sorted(chosen) == ["head.bias", "head.weight"]
    assert sorted(rest) == ["header.bias", "header.weight"]
    back = combine(rest, chosen)
    assert sorted(back) == sorted(params)
    assert all(back[k] is params[k] for k in params)


def test_combine_keeps_every_key_and_later_dicts_win():
    base = {"a": torch.zeros(1), "b": torch.zeros(1)}
    adapted = {"b": torch.ones(1), "c": torch.full((1,), 2.0)}      # "c": a new key
    out = combine(base, adapted)
    assert list(out) == ["a", "b", "c"]
    assert out["a"] is base["a"] and out["b"] is adapted["b"] and out["c"] is adapted["c"]
    assert list(base) == ["a", "b"] and list(adapted) == ["b", "c"]    # inputs unchanged


def test_detach_keeps_every_tensor_scalars_included_sharing_storage():
    w = torch.ones(2, 3, requires_grad=True) * 2.0                   # a non-leaf
    params = {"w": w, "scale": torch.tensor(0.5, requires_grad=True)}
    out = detach(params, requires_grad=True)
    assert list(out) == ["w", "scale"]
    for k in params:
        assert out[k].is_leaf and out[k].requires_grad
        assert out[k].data_ptr() == params[k].data_ptr()
        assert torch.equal(out[k], params[k])
    assert not any(v.requires_grad for v in detach(params).values())
