"""The learners' boolean constructor flags take True or False only: a string such as "False"
would read as True (``bool("False")``), so it is refused, naming the flag."""

import numpy as np
import pytest
import torch

import metaloop as ml
from metaloop.meta._head_learner import HeadNet
from metaloop.models import MLP


def mlp(out_dim=3):
    torch.manual_seed(0)
    return MLP(in_dim=2, hidden=(3,), out_dim=out_dim)


def solved_ensemble(**kw):
    return ml.meta.Ensemble([ml.meta.ProtoNet(mlp()), ml.meta.ProtoNet(mlp())], **kw)


FLAGS = [
    (lambda **kw: ml.meta.R2D2(mlp(), **kw), "learn_lam"),
    (lambda **kw: ml.meta.R2D2(mlp(), **kw), "intercept"),
    (lambda **kw: ml.meta.R2D2(mlp(), **kw), "transductive"),
    (lambda **kw: HeadNet(mlp(), **kw), "learn_lam"),
    (lambda **kw: ml.meta.MetaOptNet(mlp(), **kw), "transductive"),
    (lambda **kw: ml.meta.ProtoNet(mlp(), **kw), "transductive"),
    (lambda **kw: ml.meta.Reptile(mlp(), **kw), "transductive"),
    (lambda **kw: ml.meta.MAML(mlp(), **kw), "first_order"),
    (lambda **kw: ml.meta.MAML(mlp(), **kw), "learn_lr"),
    (lambda **kw: ml.meta.MAML(mlp(), **kw), "compile"),
    (lambda **kw: ml.meta.MAML(mlp(), **kw), "recompute_inner_loop"),
    (lambda **kw: ml.meta.ANIL(mlp(), **kw), "first_order"),
    (solved_ensemble, "refine_jointly"),
]


@pytest.mark.parametrize("value", ["False", "True", None, 2, 0.0])
@pytest.mark.parametrize("make, flag", FLAGS, ids=[f"{i}-{f}" for i, (_, f) in enumerate(FLAGS)])
def test_a_flag_that_is_not_a_bool_is_refused(make, flag, value):
    if flag == "recompute_inner_loop" and value is None:
        assert make(**{flag: value}).recompute_inner_loop is False       # None: not given
        return
    must = "a bool" if flag == "intercept" else "True or False"
    with pytest.raises(ValueError, match=rf"{flag} must be {must}, got {value!r}"):
        make(**{flag: value})


@pytest.mark.parametrize("learn_lam", [True, False])
def test_learn_lam_given_as_a_bool_decides_whether_lam_is_learned(learn_lam):
    learner = ml.meta.R2D2(mlp(), learn_lam=learn_lam)
    assert learner.model.learn_lam is learn_lam
    assert ("log_lam" in dict(learner.model.named_parameters())) is learn_lam


def test_the_string_false_does_not_learn_lam():
    """The user's case: learn_lam="False" used to learn lam; it is refused."""
    with pytest.raises(ValueError, match=r"learn_lam must be True or False, got 'False'"):
        ml.meta.R2D2(mlp(), learn_lam="False")
    with pytest.raises(ValueError, match=r"intercept must be a bool, got 'False'"):
        ml.meta.R2D2(mlp(), intercept="False")


@pytest.mark.parametrize("value, expected", [
    (np.True_, True), (np.False_, False), (np.int64(1), True), (np.int32(0), False),
    (torch.tensor(True), True), (torch.tensor([0]), False), (1, True), (False, False)])
def test_numpy_and_tensor_booleans_are_flags(value, expected):
    """A numpy bool, a numpy 0/1 and a one-element bool tensor are flags, as plain bool() read
    them before flags were checked."""
    from metaloop.meta._common import check_flag

    assert check_flag("f", value) is expected
    x, y = torch.randn(4, 2), torch.tensor([0, 0, 1, 1])
    assert ml.tasks.Episodes(x, y, ways=2, shots=1, queries=1, drop_small=value).drop_small \
        is expected


@pytest.mark.parametrize("value", ["False", b"1", 2, 0.0, torch.tensor(0.0),
                                   torch.tensor([True, False]), None])
def test_what_is_no_flag_is_still_refused(value):
    from metaloop.meta._common import check_flag

    with pytest.raises(ValueError, match="f must be True or False"):
        check_flag("f", value)
