"""MAML's ``head_init="zero"`` message says where the head came from: a head named with
``head=`` (which happens to be the default's names) was called "the model's last nn.Linear,
taken by default", because only ANIL recorded the names given; MAML now records them too."""

import sys
from pathlib import Path

import pytest
import torch

import metaloop as ml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from test_anil_head_origin import OutNotLast, batch  # noqa: E402


@pytest.mark.parametrize("batching", ["loop", "vmap"])
def test_a_named_zero_head_is_called_named(batching):
    torch.manual_seed(0)
    learner = ml.meta.MAML(OutNotLast(), loss="ce", head_init="zero",
                           head=["aux.weight", "aux.bias"], batching=batching)
    with pytest.raises(ValueError) as e:
        learner.meta_gradient(batch())
    msg = str(e.value)
    assert "took ['aux.weight', 'aux.bias'] (named with head=) as the head" in msg
    assert "taken by default" not in msg


@pytest.mark.parametrize("batching", ["loop", "vmap"])
def test_the_default_zero_head_is_still_called_default(batching):
    torch.manual_seed(0)
    learner = ml.meta.MAML(OutNotLast(), loss="ce", head_init="zero", batching=batching)
    with pytest.raises(ValueError) as e:
        learner.meta_gradient(batch())
    assert ("took ['aux.weight', 'aux.bias'] (the model's last nn.Linear, taken by default) "
            "as the head") in str(e.value)


def test_anil_still_records_its_own_named_head():
    """ANIL builds on ``MAML.__init__`` and records the whole head it was given over it."""
    torch.manual_seed(0)
    learner = ml.meta.ANIL(OutNotLast(), loss="ce",
                           head=["aux.weight", "aux.bias", "classifier.weight",
                                 "classifier.bias"])
    assert sorted(learner._head_named) == ["aux.bias", "aux.weight", "classifier.bias",
                                           "classifier.weight"]
    assert ml.meta.ANIL(OutNotLast(), loss="ce")._head_named is None
    assert ml.meta.MAML(OutNotLast(), loss="ce")._head_named is None
