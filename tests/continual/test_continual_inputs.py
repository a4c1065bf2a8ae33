"""Inputs the continual API refuses where they enter, naming what is wrong: LoRA training
without adapters, accuracies that are not numbers, labels the replay buffer cannot hold,
labels outside an experience's classes, and replay ratios that are not numbers."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from metaloop.continual import (
    accuracy_matrix,
    finetune_experience,
    full_buffer,
    init_params,
    mixed_batches,
    replay_buffer,
    replay_count,
    select_trainable,
)
from metaloop.continual.replay import empty_buffer, reservoir_update
from metaloop.continual.scenarios import Experience
from metaloop.models import MLP

D = 4


def experience(name="a", head="A", classes=(0, 1), outputs=2, n=24, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, D, generator=g)                                  # [n, D]
    y = torch.tensor(classes).repeat(n // len(classes))                 # [n]
    return Experience(name, head, outputs, tuple(classes), (x, y), (x[:6], y[:6]), (x, y))


def body():
    torch.manual_seed(0)
    return MLP(in_dim=D, hidden=(8,), out_dim=2)


def quick(**kw):
    return {"steps": 2, "batch_size": 8, "eval_every": 1,
            "generator": torch.Generator().manual_seed(1), **kw}


# trainable="lora" on a body without adapters -----------------------------------------------

def test_lora_without_adapters_is_refused_instead_of_training_the_heads_alone():
    e, m = experience(), body()
    params = init_params(m, [e], torch.Generator().manual_seed(0))
    with pytest.raises(ValueError, match=r"trainable='lora' but the params have no LoRA "
                                         r"parameters.*with_lora\(model, params\)"):
        finetune_experience(m, params, e, replay_ratio=0.0, trainable="lora", **quick())
    with pytest.raises(ValueError, match="no LoRA parameters"):
        select_trainable(params, "lora")
    assert select_trainable(params, "head") == ["heads.A.weight", "heads.A.bias"]


def test_lora_with_adapters_trains_the_adapters_and_heads():
    pytest.importorskip("peft", reason="LoRA needs: pip install -e '.[text]'")
    from metaloop.continual import with_lora

    e, m = experience(), body()
    params = init_params(m, [e], torch.Generator().manual_seed(0))
    lora_body, start = with_lora(m, params, rank=2, generator=torch.Generator().manual_seed(0))
    names = select_trainable(start, "lora")
    assert names and all("lora_" in n or n.startswith("heads.") for n in names)
    assert any("lora_" in n for n in names)
    out = finetune_experience(lora_body, start, e, replay_ratio=0.0, trainable="lora",
                              **quick(lr=0.1))
    frozen = [n for n in start if n not in names]
    assert frozen and all(torch.equal(out.params[n], start[n]) for n in frozen)
    assert any(not torch.equal(out.params[n], start[n]) for n in names)


# accuracy_matrix: what a tensor cannot hold, a list cannot either ----------------------------

@pytest.mark.parametrize("bad, shown", [
    ("0.9", r"'0\.9' \(str\)"), (True, r"True \(bool\)"),
    (np.bool_(False), r"(np\.)?False_? \(bool"),
    (torch.tensor(True), r"tensor\(True\) \(Tensor\)"), (0.5 + 0j, r"\(0\.5\+0j\) \(complex\)"),
    (None, r"None \(NoneType\)")])
def test_accuracy_matrix_refuses_a_value_that_is_not_a_real_number(bad, shown):
    rows = [[0.9, 0.1], [0.5, bad]]
    with pytest.raises(ValueError, match=rf"accuracy row 1, column 1 is {shown}"):
        accuracy_matrix(rows)
    named = [{"a": 0.9, "b": 0.1}, {"a": bad, "b": 0.8}]
    with pytest.raises(ValueError, match=rf"accuracy row 1, column 'a' is {shown}"):
        accuracy_matrix(named, names=["a", "b"])


@pytest.mark.parametrize("rows", [np.eye(2, dtype=bool), torch.eye(2, dtype=torch.bool)])
def test_accuracy_matrix_refuses_bool_arrays_as_check_matrix_does(rows):
    with pytest.raises(ValueError, match="got dtype torch.bool"):
        accuracy_matrix(rows)


def test_accuracy_matrix_refuses_an_array_of_strings():
    with pytest.raises(ValueError, match="cannot read an array of dtype <U3"):
        accuracy_matrix(np.array([["0.9", "0.1"], ["0.5", "0.8"]]))


def test_accuracy_matrix_refuses_a_name_that_is_not_in_names():
    rows = [{"a": 0.9, "b": 0.1, "c": 0.3}, {"a": 0.5, "b": 0.8}]
    with pytest.raises(ValueError, match=r"accuracy rows have \(row, experience\) \[\(0, 'c'\)\], "
                                         r"not in names \['a', 'b'\]"):
        accuracy_matrix(rows, names=["a", "b"])


@pytest.mark.parametrize("row", [3, "ab", {0.9, 0.1}])
def test_accuracy_matrix_refuses_a_row_that_is_not_a_sequence(row):
    with pytest.raises(ValueError, match=r"accuracy row 0 is .*each row is a sequence"):
        accuracy_matrix([row, [0.5, 0.8]])


def test_accuracy_matrix_names_the_first_value_outside_0_1():
    with pytest.raises(ValueError, match=r"in \[0, 1\].*row 1, column 0 is 80\.0"):
        accuracy_matrix([[0.9, 0.1], [80.0, 0.7]])


def test_accuracy_matrix_still_takes_any_real_number():
    rows = [[np.float32(0.5), 1], [torch.tensor(0.25), np.array(0.75)]]
    want = torch.tensor([[0.5, 1.0], [0.25, 0.75]], dtype=torch.float64)
    assert torch.equal(accuracy_matrix(rows), want)
    assert torch.equal(accuracy_matrix([np.array([0.5, 1.0]), torch.tensor([0.25, 0.75])]), want)
    named = [{"a": 0.5, "b": 1}, {"a": 0.25, "b": 0.75}]
    assert torch.equal(accuracy_matrix(named, names=["a", "b"]), want)


# labels entering the replay buffer --------------------------------------------------------

def with_labels(e, y):
    return e._replace(train=(e.train[0], y))


@pytest.mark.parametrize("dtype", [torch.float32, torch.int32])
def test_full_buffer_refuses_labels_that_are_not_int64_naming_the_experience(dtype):
    a, b = experience("a"), experience("b", seed=1)
    b = with_labels(b, b.train[1].to(dtype))
    with pytest.raises(ValueError, match=rf"earlier experience 1 \('b'\) has labels of dtype "
                                         rf"{dtype}; replay needs int64"):
        full_buffer([a, b])
    with pytest.raises(ValueError, match=rf"earlier experience 0 \('b'\) has labels of dtype "
                                         rf"{dtype}"):
        replay_buffer([b], buffer_size=5)


def test_reservoir_update_refuses_float_labels():
    x = torch.randn(6, D)
    with pytest.raises(ValueError, match=r"stream offered to the reservoir has labels of dtype "
                                         r"torch.float32"):
        reservoir_update(empty_buffer(x), x, torch.zeros(6), 0, 4)


def test_int64_labels_still_fill_the_buffer():
    a, b = experience("a"), experience("b", seed=1)
    buffer = full_buffer([a, b])
    assert buffer.y.dtype == torch.int64 and buffer.y.numel() == 48
    assert torch.equal(buffer.y, torch.cat([a.train[1], b.train[1]]))


# labels outside Experience.classes --------------------------------------------------------

@pytest.mark.parametrize("split", ["train", "val", "test"])
def test_finetune_refuses_labels_outside_the_experience_classes(split):
    # class-incremental: one shared 4-way head; experience "new" is classes 2 and 3
    old = experience("old", "all", (0, 1), outputs=4)
    new = experience("new", "all", (2, 3), outputs=4, seed=1)
    x, y = getattr(new, split)
    y = y.clone()
    y[0] = 1                                             # an old class in the new experience
    new = new._replace(**{split: (x, y)})
    m = body()
    params = init_params(m, [old, new], torch.Generator().manual_seed(0))
    with pytest.raises(ValueError, match=rf"experience 'new' has {split} labels \[1\] outside "
                                         rf"its classes \(2, 3\)"):
        finetune_experience(m, params, new, earlier=[old], replay_ratio=0.0, keep_heads=True,
                            **quick())


def test_finetune_refuses_labels_outside_an_earlier_experience_classes():
    old = experience("old", "all", (0, 1), outputs=4)
    old = with_labels(old, old.train[1].clone().index_fill_(0, torch.tensor([3]), 3))
    new = experience("new", "all", (2, 3), outputs=4, seed=1)
    m = body()
    params = init_params(m, [old, new], torch.Generator().manual_seed(0))
    with pytest.raises(ValueError, match=r"experience 'old' has train labels \[3\] outside its "
                                         r"classes \(0, 1\)"):
        finetune_experience(m, params, new, earlier=[old], replay_ratio=0.5, **quick())


@pytest.mark.parametrize("classes, match", [((0, 4), r"\[4\] are not"), ((0, 1.0), r"\[1\.0\]"),
                                            ((True, 1), r"\[True\]"), (3, "a sequence of int")])
def test_finetune_refuses_classes_that_are_not_outputs_of_the_head(classes, match):
    e = experience("e", "all", (0, 1), outputs=4)._replace(classes=classes)
    m = body()
    params = init_params(m, [e], torch.Generator().manual_seed(0))
    with pytest.raises(ValueError, match=rf"experience 'e' has classes .*{match}"):
        finetune_experience(m, params, e, replay_ratio=0.0, **quick())


def test_labels_within_the_classes_train():
    old = experience("old", "all", (0, 1), outputs=4)
    new = experience("new", "all", (2, 3), outputs=4, seed=1)
    m = body()
    params = init_params(m, [old, new], torch.Generator().manual_seed(0))
    out = finetune_experience(m, params, new, earlier=[old], replay_ratio=0.25, keep_heads=True,
                              **quick())
    assert out.steps == 2 and set(out.curve["accuracy"]) == {"old", "new"}


# replay_ratio: a number, as the API's other numbers ---------------------------------------

@pytest.mark.parametrize("ratio", [torch.tensor(0.5), torch.tensor([0.5])])
def test_a_tensor_replay_ratio_is_told_to_be_a_number(ratio):
    e = experience()
    with pytest.raises(ValueError, match=r"replay_ratio must be a number \(a Python or NumPy "
                                         r"float\) in \[0, 1\), got a tensor"):
        replay_count(0, 10, ratio)
    with pytest.raises(ValueError, match="replay_ratio must be a number"):
        next(mixed_batches(*e.train, full_buffer([e]), 8, ratio))
    m = body()
    with pytest.raises(ValueError, match="replay_ratio must be a number"):
        finetune_experience(m, init_params(m, [e]), e, earlier=[e], replay_ratio=ratio,
                            **quick())


@pytest.mark.parametrize("ratio", [np.float32(0.25), np.float64(0.25), 0.25])
def test_numpy_floats_are_replay_ratios_like_python_floats(ratio):
    assert [replay_count(t, 10, ratio) for t in range(4)] == [2, 3, 2, 3]
    e = experience()
    batches = mixed_batches(*e.train, full_buffer([e]), 8, ratio,
                            torch.Generator().manual_seed(0))
    assert [int((b.source >= 0).sum()) for b in itertools.islice(batches, 4)] == [2, 2, 2, 2]


@pytest.mark.parametrize("ratio", [float("nan"), np.float64(1.0), -0.1, True, "0.5"])
def test_replay_ratios_outside_0_1_are_still_refused(ratio):
    with pytest.raises(ValueError, match=r"replay_ratio must be in \[0, 1\)"):
        replay_count(0, 10, ratio)
