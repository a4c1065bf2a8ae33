"""ANIL's messages about its head say where the head came from: "taken by default" only for
the default head, not for one the user named with ``head=`` (which happened to be the
default's names), and the default head is called the model's ``head`` nn.Linear where that
one, not the last nn.Linear, was taken."""

import pytest
import torch
from torch import nn

import metaloop as ml


def batch(tasks=2, ways=3, shots=2, queries=2, d=6):
    g = torch.Generator().manual_seed(0)
    sy = torch.arange(ways).repeat(shots).repeat(tasks, 1)
    qy = torch.arange(ways).repeat(queries).repeat(tasks, 1)
    return ml.TaskBatch(torch.randn(tasks, sy.shape[1], d, generator=g), sy,
                        torch.randn(tasks, qy.shape[1], d, generator=g), qy)


class Unused(nn.Module):
    """``proj``, the last nn.Linear, is never used."""

    def __init__(self):
        super().__init__()
        self.body, self.out = nn.Linear(6, 8), nn.Linear(8, 3)
        self.proj = nn.Linear(8, 4)

    def forward(self, x):
        return self.out(torch.tanh(self.body(x)))


class UnusedHead(nn.Module):
    """A ``head`` nn.Linear that is never used, registered before the output layer."""

    def __init__(self):
        super().__init__()
        self.body, self.head, self.out = nn.Linear(6, 8), nn.Linear(8, 4), nn.Linear(8, 3)

    def forward(self, x):
        return self.out(torch.tanh(self.body(x)))


class OutNotLast(nn.Module):
    """``aux``, a hidden layer, is the last nn.Linear registered."""

    def __init__(self):
        super().__init__()
        self.body, self.classifier = nn.Linear(6, 8), nn.Linear(8, 3)
        self.aux = nn.Linear(8, 8)

    def forward(self, x):
        return self.classifier(torch.tanh(self.aux(torch.tanh(self.body(x)))))


def _model(make):
    torch.manual_seed(0)
    return make()


@pytest.mark.parametrize("batching", ["loop", "vmap"])
def test_an_unused_head_named_with_head_is_not_called_the_default(batching):
    """QA repro: ANIL(head=['proj.weight', 'proj.bias']) said "(the model's last nn.Linear,
    taken by default)", though the user had named it."""
    L = ml.meta.ANIL(_model(Unused), loss="ce", batching=batching,
                     head=["proj.weight", "proj.bias"])
    with pytest.raises(ValueError) as e:
        L.meta_gradient(batch())
    msg = str(e.value)
    assert "ANIL adapts the head ['proj.weight', 'proj.bias'] (named with head=), but" in msg
    assert "taken by default" not in msg
    assert "head=[...] (e.g. head=['out.weight', 'out.bias'])" in msg
    # left out, the same head is the default, and said so
    L = ml.meta.ANIL(_model(Unused), loss="ce", batching=batching)
    with pytest.raises(ValueError, match=r"\['proj.weight', 'proj.bias'\] \(the model's last "
                                         r"nn.Linear, taken by default\), but"):
        L.meta_gradient(batch())


def test_a_default_head_named_head_is_not_called_the_last_linear():
    """The default head is the model's ``head`` nn.Linear wherever it was registered: the
    message said "the model's last nn.Linear" of it, which ``out`` is."""
    L = ml.meta.ANIL(_model(UnusedHead), loss="ce", batching="loop")
    with pytest.raises(ValueError, match=r"\['head.weight', 'head.bias'\] \(the model's "
                                         r"nn.Linear named head, taken by default\), but"):
        L.meta_gradient(batch())


@pytest.mark.parametrize("batching", ["loop", "vmap"])
def test_a_zero_head_named_with_head_is_not_called_the_default(batching):
    """QA repro: ANIL(head=['aux.weight', 'aux.bias'], head_init='zero') said it "took
    ['aux.weight', 'aux.bias'] (the model's last nn.Linear, taken by default)"."""
    L = ml.meta.ANIL(_model(OutNotLast), loss="ce", head_init="zero", batching=batching,
                     head=["aux.weight", "aux.bias"])
    with pytest.raises(ValueError) as e:
        L.meta_gradient(batch())
    msg = str(e.value)
    assert ("ANIL(head_init='zero') took ['aux.weight', 'aux.bias'] (named with head=) as "
            "the head") in msg, msg
    assert "taken by default" not in msg
    # a larger head named: the part of it that head_init='zero' zeroes is the last nn.Linear
    L = ml.meta.ANIL(_model(OutNotLast), loss="ce", head_init="zero", batching=batching,
                     head=["classifier.weight", "classifier.bias", "aux.weight", "aux.bias"])
    with pytest.raises(ValueError, match=r"took \['aux.weight', 'aux.bias'\] \(the model's last "
                                         r"nn.Linear, the output layer of the head named with "
                                         r"head=\) as the head"):
        L.meta_gradient(batch())
    # left out: the default, and said so
    L = ml.meta.ANIL(_model(OutNotLast), loss="ce", head_init="zero", batching=batching)
    with pytest.raises(ValueError, match=r"took \['aux.weight', 'aux.bias'\] \(the model's last "
                                         r"nn.Linear, taken by default\) as the head"):
        L.meta_gradient(batch())

