"""Models whose output layer is not an ``nn.Linear`` (a 1x1 convolution, a bare
``nn.Parameter`` cosine head) through MAML, first-order MAML, ANIL and Reptile, with the
adapted parameters (or the head) named; and a head named for ``head_init="zero"``.
Meta-gradients are compared, in float64, with autograd through an inner loop written out
on plain tensors (``_reference.plain_meta_gradient``)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import metaloop as ml
from metaloop.meta import ANIL, MAML, Reptile

sys.path.insert(0, str(Path(__file__).parent))
from _reference import plain_meta_gradient, rel_err  # noqa: E402

F64 = torch.float64


class FullyConv(nn.Module):
    """A 1x1-convolution classifier over a conv body, then a spatial mean: no nn.Linear."""

    def __init__(self):
        super().__init__()
        self.body, self.cls = nn.Conv2d(1, 4, 3, padding=1), nn.Conv2d(4, 3, 1)

    def forward(self, x):
        return self.cls(torch.tanh(self.body(x))).mean((2, 3))          # [N, 3]


def fully_conv_ref(p, x):
    h = torch.tanh(F.conv2d(x, p["body.weight"], p["body.bias"], padding=1))
    return F.conv2d(h, p["cls.weight"], p["cls.bias"]).mean((2, 3))      # [N, 3]


class Cosine(nn.Module):
    """A projection and a cosine head, both bare nn.Parameters: no nn.Linear, no conv."""

    def __init__(self):
        super().__init__()
        self.proj, self.w = nn.Parameter(torch.randn(4, 6)), nn.Parameter(torch.randn(3, 6))

    def forward(self, x):
        return cosine_ref({"proj": self.proj, "w": self.w}, x)


def cosine_ref(p, x):
    f = torch.tanh(x @ p["proj"])                                        # [N, 6]
    return 5 * F.normalize(f, dim=-1) @ F.normalize(p["w"], dim=-1).T    # [N, 3]


def tasks(model: str, B=3, ways=3, shots=2, queries=3):
    g = torch.Generator().manual_seed(0)
    sy = torch.arange(ways).repeat_interleave(shots).repeat(B, 1)        # [B, S]
    qy = torch.arange(ways).repeat_interleave(queries).repeat(B, 1)      # [B, Q]
    shape = (1, 5, 5) if model == "conv" else (4,)
    return ml.TaskBatch(torch.randn(B, sy.shape[1], *shape, generator=g, dtype=F64), sy,
                        torch.randn(B, qy.shape[1], *shape, generator=g, dtype=F64), qy)


MODELS = {"conv": (FullyConv, fully_conv_ref, ["cls.weight", "cls.bias"]),
          "cosine": (Cosine, cosine_ref, ["w"])}


def build(model: str):
    torch.manual_seed(0)
    return MODELS[model][0]().double()


@pytest.mark.parametrize("model", ["conv", "cosine"])
@pytest.mark.parametrize("batching", ["loop", "vmap"])
@pytest.mark.parametrize("how", ["maml-head", "maml-all", "fomaml-head", "anil"])
def test_meta_gradient_matches_plain_autograd(model, batching, how):
    """MAML(FullyConv(), adapt=[...]) and ANIL(..., head=[...]) raised "FullyConv has no
    nn.Linear to use as the head"; they now adapt the named parameters, with the
    meta-gradient of autograd through the written-out inner loop."""
    net = build(model)
    _, ref_fwd, head = MODELS[model]
    adapt = None if how == "maml-all" else head
    kw = dict(inner_lr=0.3, inner_steps=2, loss="ce", batching=batching)
    if how == "anil":
        learner = ANIL(net, head=head, **kw)
    else:
        learner = MAML(net, adapt=adapt, first_order=how == "fomaml-head", **kw)
    assert learner.batching == batching
    b = tasks(model)
    params = dict(net.named_parameters())
    ref = plain_meta_gradient(params, b, 0.3, 2, adapt or list(params),
                              second_order=how != "fomaml-head", fwd=ref_fwd)
    got = learner.meta_gradient(b)
    assert set(got) == set(ref)
    assert rel_err(got, ref) < 1e-10
    assert any(float(g.abs().max()) > 0 for g in got.values())


@pytest.mark.parametrize("model", ["conv", "cosine"])
@pytest.mark.parametrize("batching", ["loop", "vmap"])
def test_reptile_direction_matches_plain_sgd(model, batching):
    """Reptile(FullyConv(), adapt=[...]) was refused as MAML was; its direction is
    theta_0 - theta_final of plain SGD on the named parameters."""
    net = build(model)
    _, ref_fwd, head = MODELS[model]
    learner = Reptile(net, inner_lr=0.3, inner_steps=3, loss="ce", adapt=head,
                      batching=batching)
    b = tasks(model)
    params = {n: p.detach() for n, p in net.named_parameters()}
    ref = {n: torch.zeros_like(p) for n, p in params.items()}
    for i in range(b.num_tasks):
        sx, sy, _, _ = b.task(i)
        p = {n: v.clone().requires_grad_(n in head) for n, v in params.items()}
        for _ in range(3):
            g = torch.autograd.grad(F.cross_entropy(ref_fwd(p, sx), sy), [p[n] for n in head])
            p = {**p, **{n: (p[n] - 0.3 * gi).detach().requires_grad_() for n, gi in
                         zip(head, g)}}
        for n in head:
            ref[n] += (params[n] - p[n].detach()) / b.num_tasks
    got = learner.meta_gradient(b)
    assert rel_err(got, ref) < 1e-12
    assert float(got[head[0]].abs().max()) > 0


@pytest.mark.parametrize("model", ["conv", "cosine"])
def test_adapt_and_predict_without_a_linear_head(model):
    """Test-time adaptation on one task of a model without nn.Linear: the named parameters
    move, the others stay, and predict gives [Q, 3]."""
    net = build(model)
    head = MODELS[model][2]
    learner = MAML(net, inner_lr=0.3, inner_steps=2, loss="ce", adapt=head)
    sx, sy, qx, _ = tasks(model).task(0)
    p = learner.adapt(sx, sy)
    own = dict(net.named_parameters())
    assert all(not torch.equal(p[n], own[n]) for n in head)
    assert all(torch.equal(p[n], own[n]) for n in own if n not in head)
    assert learner.predict(p, qx).shape == (qx.shape[0], 3)


@pytest.mark.parametrize("make", [
    lambda m: MAML(m, loss="ce", adapt=["cls.weight", "cls.bias"], head_init="zero"),
    lambda m: Reptile(m, loss="ce", head_init="zero"),
])
def test_zero_head_without_a_linear_names_the_argument_to_give(make):
    """head_init='zero' needs a head; where the model has no nn.Linear the message says to
    name it with head=, rather than that the model has no nn.Linear."""
    with pytest.raises(ValueError, match=r"head_init='zero' starts the head at zero, but "
                                         r"FullyConv has no nn.Linear to take as its head: "
                                         r"name the head's parameters with head=\[\.\.\.\]"):
        make(FullyConv())


def test_anil_without_a_linear_names_the_argument_to_give():
    with pytest.raises(ValueError, match=r"ANIL adapts the head, but FullyConv has no "
                                         r"nn.Linear to take as its head: name the head's "
                                         r"parameters with head=\[\.\.\.\] \(e.g. "
                                         r"\['cls.weight', 'cls.bias'\]\)"):
        ANIL(FullyConv(), loss="ce")


@pytest.mark.parametrize("learner", ["maml", "reptile", "anil"])
def test_zero_head_given_by_name(learner):
    """MAML and Reptile take head= (keyword only) for head_init='zero'; ANIL's head is
    the one zeroed. Each task's head starts at zero, sized to the task's ways; the body
    adapts too where everything adapts (MAML, Reptile), from the second step on."""
    net = build("conv")
    head = ["cls.weight", "cls.bias"]
    kw = dict(inner_lr=0.3, loss="ce", head_init="zero")
    L = {"maml": lambda: MAML(net, head=head, **kw),
         "reptile": lambda: Reptile(net, head=lambda n: n.startswith("cls."), **kw),
         "anil": lambda: ANIL(net, head=head, **kw)}[learner]()
    assert L.inner.head == head
    sx, sy, qx, _ = tasks("conv", ways=2).task(0)            # 2 ways, the model has 3
    start = L.inner.start(dict(net.named_parameters()), sy)
    assert start["cls.weight"].shape == (2, 4, 1, 1) and start["cls.bias"].shape == (2,)
    assert not start["cls.weight"].any() and not start["cls.bias"].any()
    p = L.adapt(sx, sy, steps=3)
    assert p["cls.weight"].shape[0] == 2 and L.predict(p, qx).shape == (qx.shape[0], 2)
    assert torch.equal(p["body.weight"], net.body.weight) == (learner == "anil")


def test_head_is_refused_where_nothing_reads_it():
    """head= says what head_init='zero' zeroes: with 'learned' it would change nothing."""
    for make in (MAML, Reptile):
        with pytest.raises(ValueError, match=r"\(head=\.\.\.\) names the head that "
                                             r"head_init='zero' starts at zero; with "
                                             r"head_init='learned' it would change nothing"):
            make(FullyConv(), loss="ce", head=["cls.weight", "cls.bias"])


class TwoHeads(nn.Module):
    """The task head ``out`` after a torch LayerNorm, then an auxiliary nn.Linear
    registered after it (the last nn.Linear, but not the head)."""

    def __init__(self):
        super().__init__()
        self.body, self.norm = nn.Linear(4, 6), nn.LayerNorm(6)
        self.out, self.aux = nn.Linear(6, 3), nn.Linear(6, 2)

    def forward(self, x):
        return self.out(torch.tanh(self.norm(self.body(x))))


def test_anil_head_is_the_zero_head():
    """ANIL(head=[out], head_init='zero') adapted ``out`` but zeroed the last nn.Linear
    (``aux``), and so was refused: "needs the head ['aux.weight', 'aux.bias'] among the
    adapted parameters". The named head is the zero head."""
    torch.manual_seed(0)
    net = TwoHeads()
    L = ANIL(net, loss="ce", head=["out.weight", "out.bias"], head_init="zero")
    assert L.inner.head == L.inner.names == ["out.weight", "out.bias"]
    sx, sy, _, _ = tasks("cosine", ways=2).task(0)
    start = L.inner.start(dict(net.named_parameters()), sy.long())
    assert not start["out.weight"].any() and start["out.weight"].shape == (2, 6)
    assert start["aux.weight"] is net.aux.weight


def test_anil_vmap_guard_takes_the_named_head():
    """The second-order vmap guard counted the named head as adapted "beyond the head"
    (the stale last nn.Linear, ``aux``) and refused ANIL(head=[out], batching='vmap'); the
    head's inner gradient does not go through the LayerNorm's double backward, and the
    meta-gradient is the loop's. A head named to take in the layers before the norm is
    still refused."""
    torch.manual_seed(0)
    net = TwoHeads().double()
    b = tasks("cosine")
    head = ["out.weight", "out.bias"]
    got = ANIL(net, 0.3, 2, loss="ce", head=head, batching="vmap").meta_gradient(b)
    ref = ANIL(net, 0.3, 2, loss="ce", head=head, batching="loop").meta_gradient(b)
    assert rel_err(got, ref) < 1e-12
    with pytest.raises(ValueError, match=r"ANIL\(batching='vmap', first_order=False\) would "
                                         r"give a wrong meta-gradient: .*norm \(LayerNorm\).*"
                                         r"adapts \['body.weight', 'body.bias', "
                                         r"'norm.weight'\] ... beyond the head"):
        ANIL(net, loss="ce", head=lambda n: True, batching="vmap")


class HeadFirst(nn.Module):
    """The head registered before the body that normalises: it still runs after it."""

    def __init__(self):
        super().__init__()
        self.head = nn.Linear(6, 3)
        self.body = nn.Sequential(nn.Linear(4, 6), nn.LayerNorm(6))

    def forward(self, x):
        return self.head(torch.tanh(self.body(x)))


def test_anil_vmap_guard_keeps_a_head_registered_before_the_norm_layers():
    """Judged by registration order alone, the guard refused ANIL(batching='vmap') on a model
    whose ``head`` is registered first, though its meta-gradient is the loop's."""
    torch.manual_seed(0)
    net = HeadFirst().double()
    b = tasks("cosine")
    got = ANIL(net, 0.3, 2, loss="ce", batching="vmap").meta_gradient(b)
    ref = ANIL(net, 0.3, 2, loss="ce", batching="loop").meta_gradient(b)
    assert rel_err(got, ref) < 1e-12


def test_anil_zeroes_the_output_layer_of_a_head_of_several_layers():
    """ANIL(head=[two layers], head_init='zero') zeroed both layers as [ways, ...] tensors
    and the first adapt failed; the output layer (the default head) is the zero head."""
    torch.manual_seed(0)
    mlp = ml.models.MLP(in_dim=4, hidden=(8, 8), out_dim=3).double()
    head = ["body.fc1.weight", "body.fc1.bias", "head.weight", "head.bias"]
    L = ANIL(mlp, loss="ce", head=head, head_init="zero")
    assert L.inner.names == head and L.inner.head == ["head.weight", "head.bias"]
    sx, sy, qx, _ = tasks("cosine").task(0)
    p = L.adapt(sx, sy)
    assert p["head.weight"].shape == (3, 8) and L.predict(p, qx).shape == (len(qx), 3)


def test_a_zero_head_of_tensors_with_other_first_dimensions_is_refused():
    with pytest.raises(ValueError, match=r"must share their first dimension \(the outputs\).*"
                                         r"got proj \[4, 6\], w \[3, 6\]"):
        MAML(Cosine(), loss="ce", head_init="zero", head=["w", "proj"])
