"""ANIL: MAML whose inner loop adapts the head only, partitioned by name, with the body's
features computed once per task where the model allows it (``head_only_path``)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch
from torch import nn

import metaloop as ml
from metaloop.adapt.sgd import SGDAdapter, sgd_path
from metaloop.meta import ANIL, MAML
from metaloop.meta.anil import features_once, head_only_path
from metaloop.models import MLP, Conv4

sys.path.insert(0, str(Path(__file__).parent))
from _reference import plain_batch, plain_meta_gradient, rel_err  # noqa: E402

HEAD = ["head.weight", "head.bias"]

# every test here runs in float64 (the float64 fixture of tests/conftest.py)
pytestmark = pytest.mark.usefixtures("float64")


def test_anil_conv4_matches_plain_nchw_loop():
    """Moved from test_fast_paths: the head-only path against the plain per-task loop."""
    torch.manual_seed(1)
    model = Conv4(1, 8, 3)
    batch = plain_batch(seed=1)
    got = ANIL(model, inner_lr=0.4, inner_steps=2, loss="ce").meta_gradient(batch)
    params = dict(model.named_parameters())
    ref = plain_meta_gradient(params, batch, 0.4, 2, ["head.weight", "head.bias"])
    assert rel_err(got, ref) < 1e-6


def test_the_head_only_path_is_chosen_explicitly_not_by_name_matching():
    conv = Conv4(1, 8, 3)
    assert ANIL(conv, 0.4, loss="ce").inner.path_fn is head_only_path
    assert MAML(conv, 0.4, loss="ce", adapt=HEAD).inner.path_fn is None   # plain MAML
    assert features_once(conv, HEAD) and not features_once(conv, ["head.weight"])
    seq = nn.Sequential(nn.Linear(2, 4), nn.ReLU(), nn.Linear(4, 3))    # no forward(head=)
    anil = ANIL(seq, 0.1, loss="ce")
    assert anil.inner.names == ["2.weight", "2.bias"] and anil.inner.path_fn is None
    assert not features_once(seq, anil.inner.names)


@pytest.mark.parametrize("create_graph", [True, False])
def test_head_only_path_equals_the_whole_network_path(create_graph):
    """Features once + SGD on the linear head: the same parameters at every step as SGD on
    the head names through the whole network; the body's tensors pass through untouched."""
    torch.manual_seed(0)
    model = Conv4(1, 8, 3)
    sx, sy, _, _ = plain_batch(tasks=1).task(0)
    adapter = SGDAdapter(model, "ce", 0.4, 3, adapt=HEAD)
    params = dict(model.named_parameters())
    fast = list(head_only_path(adapter, sgd_path, params, sx, sy, 3, create_graph, 0.4))
    slow = list(sgd_path(adapter.fwd, adapter.loss_fn, params, HEAD, sx, sy, 0.4, 3,
                         create_graph))
    assert len(fast) == len(slow) == 4
    for a, b in zip(fast, slow):
        assert a.keys() == params.keys()
        assert all(torch.allclose(a[n], b[n], rtol=1e-12, atol=1e-14) for n in HEAD)
        assert all(a[n] is params[n] for n in params if n not in HEAD)


@pytest.mark.parametrize("batching", ["loop", "vmap"])
def test_anil_without_the_fast_path_gets_the_same_gradient(batching):
    """An MLP with and without ``path_fn``: the same meta-gradient (only the speed differs)."""
    torch.manual_seed(0)
    model = MLP(1, (8, 8), 1).double()
    batch = ml.tasks.Sinusoid(5, 6).sample(3, torch.Generator().manual_seed(2),
                                           dtype=torch.float64)
    fast = ANIL(model, 0.1, 2, batching=batching)
    slow = ANIL(model, 0.1, 2, batching=batching)
    slow.inner.path_fn = None
    assert fast.inner.path_fn is head_only_path
    assert rel_err(fast.meta_gradient(batch), slow.meta_gradient(batch)) < 1e-10


class _ScaledHead(nn.Module):
    """A user's model with ``head``, ``feature_dim`` and ``forward(x, head=False)`` whose
    output is not ``head(features)``: the logits are scaled and shifted after the head."""

    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(nn.Linear(4, 6), nn.Tanh())
        self.head = nn.Linear(6, 3)
        self.feature_dim = 6

    def forward(self, x, head=True):
        f = self.body(x)
        return 10 * self.head(f) + 1 if head else f


def test_a_user_model_that_works_on_its_heads_output_runs_the_whole_network():
    """The features-once path took any model with ``head``, ``feature_dim`` and
    ``forward(x, head=False)`` to compute ``head(features)``, which dropped this model's
    scaling: a meta-gradient off by up to 8.7 from MAML adapting the same head."""
    torch.manual_seed(0)
    model = _ScaledHead()
    g = torch.Generator().manual_seed(1)
    x = torch.randn(2, 12, 4, generator=g)
    y = torch.arange(12).remainder(3).repeat(2, 1)
    batch = ml.tasks.TaskBatch(x[:, :6], y[:, :6], x[:, 6:], y[:, 6:])
    anil = ANIL(model, inner_lr=0.3, inner_steps=2, loss="ce")
    assert not features_once(model, HEAD) and anil.inner.path_fn is None
    got = anil.meta_gradient(batch)
    ref = MAML(model, inner_lr=0.3, inner_steps=2, loss="ce", adapt=HEAD).meta_gradient(batch)
    assert set(got) == set(ref)
    for name in ref:
        torch.testing.assert_close(got[name], ref[name], rtol=1e-10, atol=1e-12)


def test_metaloop_models_keep_the_features_once_path():
    for model in (MLP(4, [5], 3), Conv4(1, 8, 3)):
        assert features_once(model, HEAD) and ANIL(model, 0.1, loss="ce").inner.path_fn \
            is head_only_path


class _NormNet(nn.Module):
    """A torch LayerNorm before the head: second order under vmap is refused when more than
    the head adapts."""

    def __init__(self):
        super().__init__()
        self.body, self.norm, self.head = nn.Linear(2, 4), nn.LayerNorm(4), nn.Linear(4, 2)

    def forward(self, x):
        return self.head(self.norm(self.body(x)))


@pytest.mark.parametrize("model, kwargs", [
    (MLP(1, (8,), 1), dict(batching="threads", compile=True)),
    (MLP(1, (8,), 1), dict(batching="vmap", recompute_inner_loop=True)),
    (MLP(1, (8,), 1), dict(batching="vmap", checkpoint=True)),
    (MLP(1, (8,), 1), dict(learn_lr=True, recompute_inner_loop=True)),
    (MLP(1, (8,), 1), dict(learn_lr=True, checkpoint=True)),
    (MLP(1, (8,), 1), dict(checkpoint=True, recompute_inner_loop=False)),
    (_NormNet(), dict(batching="vmap", head=lambda name: True)),
])
def test_construction_errors_name_anil_not_maml(model, kwargs):
    """ANIL is built as a MAML, and its refused combinations said "MAML(...)"."""
    with pytest.raises(ValueError) as anil:
        ANIL(model, **kwargs)
    assert str(anil.value).startswith("ANIL(") and "MAML(" not in str(anil.value)
    maml_kwargs = {("adapt" if k == "head" else k): v for k, v in kwargs.items()}
    with pytest.raises(ValueError) as maml:
        MAML(model, **maml_kwargs)
    assert str(maml.value).startswith("MAML(")
    assert str(anil.value)[len("ANIL"):] == str(maml.value)[len("MAML"):]
