"""The vmap paths of the SGD learners with BatchNorm in the model, and the variants the
conformance suite does not cover, against a per-task unrolled reference.

The reference is written without metaloop's functional core: the network with
torch.nn.functional on plain tensors (BatchNorm as batch mean/variance arithmetic), each task's
inner loop unrolled with ``torch.autograd.grad`` (``create_graph`` for second order), the query
loss differentiated with respect to the starting parameters, averaged over tasks; float64.

Under vmap, torch's own BatchNorm, InstanceNorm and LayerNorm give wrong second derivatives
(pytorch/functorch#534), so second-order MAML refuses ``batching="vmap"`` for models with
them; the first-order and head-only (ANIL) paths, which never differentiate those kernels
twice, must still match the reference.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import metaloop as ml
from metaloop.meta import ANIL, MAML
from metaloop.models import Conv4

sys.path.insert(0, str(Path(__file__).parent))
from _reference import conv4_features_ref  # noqa: E402

RTOL = 1e-8
HEAD = ["head.weight", "head.bias"]

# every test here runs in float64 (the float64 fixture of tests/conftest.py)
pytestmark = pytest.mark.usefixtures("float64")


def _batch(size=16, tasks=3):
    """``tasks`` 3-way tasks of random float64 ``[1, size, size]`` images: 2 shots, 3
    queries per class."""
    g = torch.Generator().manual_seed(2)
    sy = torch.arange(3).repeat(tasks, 2)                                 # [B, 6]
    qy = torch.arange(3).repeat(tasks, 3)                                 # [B, 9]
    return ml.TaskBatch(torch.randn(tasks, 6, 1, size, size, generator=g), sy,
                        torch.randn(tasks, 9, 1, size, size, generator=g), qy)
def _distinct_step_sizes(learner):
    """Give the learned step-size table [steps, adapted] distinct entries; return the batch,
    the learner's parameters (net.* and inner_lr) and the network's alone."""
    with torch.no_grad():
        table = learner.model.inner_lr                               # [2, adapted]
        table.copy_(0.3 * (1 + 0.3 * torch.rand(table.shape,
                                                generator=torch.Generator().manual_seed(5))))
    params = dict(learner.model.named_parameters())
    return _batch(), params, {n[len("net."):]: v for n, v in params.items()
                              if n.startswith("net.")}




def conv4_ref(p, x):
    return conv4_features_ref(p, x) @ p["head.weight"].T + p["head.bias"]


class SmallNet(nn.Module):
    """conv -> a torch normalisation layer -> ReLU -> spatial mean -> linear head."""

    def __init__(self, norm: nn.Module):
        super().__init__()
        self.conv, self.norm, self.head = nn.Conv2d(1, 4, 3, padding=1), norm, nn.Linear(4, 3)

    def forward(self, x):
        return self.head(F.relu(self.norm(self.conv(x))).mean((2, 3)))


def small_ref(p, x):
    """``SmallNet`` with ``nn.BatchNorm2d(4, track_running_stats=False)``, written out."""
    h = F.conv2d(x, p["conv.weight"], p["conv.bias"], padding=1)
    mean = h.mean((0, 2, 3), keepdim=True)
    var = ((h - mean) ** 2).mean((0, 2, 3), keepdim=True)
    h = (h - mean) / torch.sqrt(var + 1e-5)
    h = h * p["norm.weight"][None, :, None, None] + p["norm.bias"][None, :, None, None]
    return F.relu(h).mean((2, 3)) @ p["head.weight"].T + p["head.bias"]


def unrolled_meta_loss(f, params, batch, lrs, adapt, second_order, start=None):
    """Mean over tasks of the query loss after ``len(lrs)`` SGD steps on the names ``adapt``
    from ``params`` (``start`` overrides entries of each task's start: a zero head);
    ``lrs[k][j]`` is step k's size for ``adapt[j]`` (floats, or a tensor table)."""
    losses = []
    for i in range(batch.num_tasks):
        sx, sy, qx, qy = batch.task(i)
        p = {**params, **(start or {})}
        for row in lrs:
            g = torch.autograd.grad(F.cross_entropy(f(p, sx), sy), [p[n] for n in adapt],
                                    create_graph=second_order)
            p = {**p, **{n: p[n] - a * gi for n, a, gi in zip(adapt, row, g)}}
        losses.append(F.cross_entropy(f(p, qx), qy))
    return torch.stack(losses).mean()


def grad_dict(loss, params):
    """d loss / d each of ``params`` (zeros where unused)."""
    g = torch.autograd.grad(loss, list(params.values()), allow_unused=True)
    return {n: torch.zeros_like(v) if gi is None else gi for (n, v), gi in zip(params.items(), g)}


def unrolled_meta_gradient(f, params, batch, lrs, adapt, second_order, start=None):
    """d ``unrolled_meta_loss`` / d ``params``: the reference meta-gradient."""
    return grad_dict(unrolled_meta_loss(f, params, batch, lrs, adapt, second_order, start),
                     params)


def assert_close(got, ref):
    assert set(got) == set(ref)
    top = max(float(r.abs().max()) for r in ref.values())
    for n in ref:
        assert float((got[n] - ref[n]).abs().max()) / top < RTOL, n
    assert top > 0


@pytest.mark.parametrize("norm", [lambda: nn.BatchNorm2d(4, track_running_stats=False),
                                  lambda: nn.BatchNorm2d(4),
                                  lambda: nn.InstanceNorm2d(4, affine=True),
                                  lambda: nn.LayerNorm([4, 8, 8])],
                         ids=["batchnorm", "batchnorm-running-stats", "instancenorm",
                              "layernorm"])
def test_second_order_vmap_with_torch_norm_layers_is_refused_by_name(norm):
    torch.manual_seed(0)
    net = SmallNet(norm())
    with pytest.raises(ValueError, match=r"batching='vmap', first_order=False.*wrong meta-"
                                         r"gradient.*norm \(\w+Norm\w*\).*conv\.weight"):
        MAML(net, 0.4, 2, loss="ce", batching="vmap")
    with pytest.raises(ValueError, match="wrong meta-gradient"):
        MAML(net, 0.4, 2, loss="ce", batching="vmap", learn_lr=True)
    learner = MAML(net, 0.4, 2, loss="ce", batching="loop")
    learner.batching = "vmap"                                        # set afterwards
    with pytest.raises(ValueError, match="wrong meta-gradient"):
        learner.meta_gradient(_batch(size=8))
    assert MAML(net, 0.4, 2, loss="ce").batching == "loop"           # auto -> loop


RUNS = [(MAML, "loop", False), (MAML, "vmap", True), (ANIL, "vmap", False),
        (ANIL, "vmap", True)]


@pytest.mark.parametrize("method,batching,first_order", RUNS,
                         ids=["maml-loop", "fomaml-vmap", "anil-vmap", "foanil-vmap"])
def test_torch_batchnorm_paths_that_run_match_the_unrolled_reference(method, batching,
                                                                      first_order):
    """Second-order MAML on the loop, first-order MAML and ANIL under vmap: exact with
    torch's BatchNorm2d (ANIL's inner gradient is the head's, never BatchNorm's)."""
    torch.manual_seed(0)
    net = SmallNet(nn.BatchNorm2d(4, track_running_stats=False))
    batch = _batch(size=8)
    params = dict(net.named_parameters())
    adapt = HEAD if method is ANIL else list(params)
    learner = method(net, 0.4, 2, first_order, loss="ce", batching=batching)
    assert learner.batching == batching
    ref = unrolled_meta_gradient(small_ref, params, batch, [[0.4] * len(adapt)] * 2, adapt,
                                 not first_order)
    assert_close(learner.meta_gradient(batch), ref)


def test_groupnorm_is_not_refused():
    """GroupNorm's double backward under vmap is exact: vmap equals the loop."""
    torch.manual_seed(0)
    net = SmallNet(nn.GroupNorm(2, 4))
    batch = _batch(size=8)
    assert_close(MAML(net, 0.4, 2, loss="ce", batching="vmap").meta_gradient(batch),
                 MAML(net, 0.4, 2, loss="ce", batching="loop").meta_gradient(batch))


@pytest.mark.parametrize("batching", ["loop", "vmap"])
@pytest.mark.parametrize("method", [MAML, ANIL], ids=["maml", "anil"])
def test_learned_step_sizes_with_batchnorm_match_the_unrolled_reference(method, batching):
    """MAML++'s per-step, per-tensor step sizes, distinct entries, on Conv4 with BatchNorm:
    the gradient of the network and of the table."""
    torch.manual_seed(3)
    model = Conv4(1, 4, 3, image_size=16).double()
    learner = method(model, 0.3, 2, loss="ce", batching=batching, learn_lr=True)
    assert learner.batching == batching
    batch, params, net = _distinct_step_sizes(learner)
    loss = unrolled_meta_loss(conv4_ref, net, batch, params["inner_lr"], learner.inner.names,
                              True)
    ref = grad_dict(loss, params)
    got = learner.meta_gradient(batch)
    assert_close(got, ref)
    assert got["inner_lr"].abs().min() > 0


@pytest.mark.parametrize("batching", ["loop", "vmap"])
def test_zero_head_with_batchnorm_matches_the_unrolled_reference(batching):
    """``head_init="zero"``: each task starts from a zero head of its size (3 of 7 outputs);
    the starting head gets no gradient, the body gets the second-order one."""
    torch.manual_seed(1)
    model = Conv4(1, 4, 7, image_size=16).double()
    learner = MAML(model, 0.4, 2, loss="ce", head_init="zero", batching=batching)
    batch = _batch()
    params = dict(model.named_parameters())
    zero = {"head.weight": torch.zeros(3, model.feature_dim, requires_grad=True),
            "head.bias": torch.zeros(3, requires_grad=True)}
    ref = unrolled_meta_gradient(conv4_ref, params, batch, [[0.4] * len(params)] * 2,
                                 list(params), True, start=zero)
    got = learner.meta_gradient(batch)
    assert_close(got, ref)
    assert not got["head.weight"].any()


@pytest.mark.parametrize("first_order", [False, True], ids=["second", "first"])
@pytest.mark.parametrize("method", [MAML, ANIL], ids=["maml", "anil"])
def test_recomputed_inner_loop_matches_the_unrolled_reference(method, first_order):
    """Inner-loop recomputation (checkpointing) against the reference directly, not only
    against the unrecomputed path: Conv4 with BatchNorm, 3 steps."""
    torch.manual_seed(1)
    model = Conv4(1, 4, 3, image_size=16).double()
    learner = method(model, 0.4, 3, first_order, loss="ce", recompute_inner_loop=True)
    assert learner.inner.checkpoint and learner.batching == "loop"
    batch = _batch()
    params = dict(model.named_parameters())
    adapt = HEAD if method is ANIL else list(params)
    ref = unrolled_meta_gradient(conv4_ref, params, batch, [[0.4] * len(adapt)] * 3, adapt,
                                 not first_order)
    assert_close(learner.meta_gradient(batch), ref)
    for p in model.parameters():
        p.grad = None
    learner.meta_loss(batch)[0].backward()
    assert_close({n: p.grad for n, p in params.items()}, ref)


@pytest.mark.parametrize("make", [
    lambda net, b: MAML(net, 0.4, 1, first_order=True, loss="ce", batching=b),
    lambda net, b: ANIL(net, 0.4, 1, loss="ce", batching=b),
    lambda net, b: ml.meta.Reptile(net, 0.4, 1, loss="ce", batching=b),
    lambda net, b: ml.meta.R2D2(net, batching=b),
    lambda net, b: ml.meta.ProtoNet(net, batching=b),
], ids=["fomaml", "anil", "reptile", "r2d2", "protonet"])
def test_vmap_refuses_batchnorm_running_statistics_by_name(make):
    """A torch BatchNorm that tracks running statistics updates them in place in training
    mode, which vmap over tasks cannot do (torch failed deep inside with a RuntimeError): the
    learner names the layer when built. Without running statistics, or in eval mode, vmap
    runs and gives the loop's meta-gradient."""
    torch.manual_seed(0)
    batch = _batch(size=8)
    with pytest.raises(ValueError, match=r"batching='vmap' cannot run norm \(BatchNorm2d\).*"
                                         r"running statistics.*track_running_stats=False"):
        make(SmallNet(nn.BatchNorm2d(4)), "vmap")
    assert make(SmallNet(nn.BatchNorm2d(4)), "auto").batching == "loop"
    net = SmallNet(nn.BatchNorm2d(4, track_running_stats=False))
    assert_close(make(net, "vmap").meta_gradient(batch), make(net, "loop").meta_gradient(batch))
    frozen = SmallNet(nn.BatchNorm2d(4)).eval()               # running statistics, not updated
    assert make(frozen, "vmap").batching == "vmap"


def test_maml_batching_set_to_vmap_afterwards_refuses_running_statistics():
    net = SmallNet(nn.BatchNorm2d(4))
    learner = MAML(net, 0.4, 1, first_order=True, loss="ce", batching="loop")
    learner.batching = "vmap"
    with pytest.raises(ValueError, match=r"cannot run norm \(BatchNorm2d\)"):
        learner.meta_gradient(_batch(size=8))


@pytest.mark.parametrize("batching", ["loop", "vmap", "threads"])
@pytest.mark.parametrize("first_order", [False, True], ids=["second", "first"])
@pytest.mark.parametrize("method", [MAML, ANIL], ids=["maml", "anil"])
def test_learned_step_sizes_with_a_zero_head_match_the_unrolled_reference(method, first_order,
                                                                         batching):
    """``learn_lr`` and ``head_init="zero"`` together, on every batching: each task starts
    from a zero head of its size, and the table's distinct entries scale each step."""
    torch.manual_seed(1)
    if batching == "threads":         # 2 workers (conftest restores the thread count)
        torch.set_num_threads(2)
    model = Conv4(1, 4, 7, image_size=16).double()
    learner = method(model, 0.3, 2, first_order, loss="ce", head_init="zero", learn_lr=True,
                     batching=batching)
    batch, params, net = _distinct_step_sizes(learner)
    zero = {"head.weight": torch.zeros(3, model.feature_dim, requires_grad=True),
            "head.bias": torch.zeros(3, requires_grad=True)}
    loss = unrolled_meta_loss(conv4_ref, net, batch, params["inner_lr"], learner.inner.names,
                              not first_order, start=zero)
    got = learner.meta_gradient(batch)
    assert_close(got, grad_dict(loss, params))
    # a zero head passes no gradient to the body at the first step (that row's body entries
    # are 0); the head weight's step sizes get one at both steps
    assert got["inner_lr"][:, learner.inner.names.index("head.weight")].abs().min() > 0
    assert not got["net.head.weight"].any()


@pytest.mark.parametrize("batching", ["loop", "vmap", "threads"])
@pytest.mark.parametrize("first_order", [False, True], ids=["second", "first"])
def test_adapting_the_body_only_matches_the_unrolled_reference(first_order, batching):
    """``adapt`` a predicate that leaves the head out of the inner loop (the reverse of
    ANIL): the head still gets its outer gradient."""
    torch.manual_seed(1)
    if batching == "threads":         # 2 workers (conftest restores the thread count)
        torch.set_num_threads(2)
    model = Conv4(1, 4, 3, image_size=16).double()
    learner = MAML(model, 0.4, 2, first_order, loss="ce", batching=batching,
                   adapt=lambda n: not n.startswith("head."))
    params = dict(model.named_parameters())
    body = [n for n in params if not n.startswith("head.")]
    assert learner.inner.names == body
    batch = _batch()
    ref = unrolled_meta_gradient(conv4_ref, params, batch, [[0.4] * len(body)] * 2, body,
                                 not first_order)
    got = learner.meta_gradient(batch)
    assert_close(got, ref)
    assert got["head.weight"].abs().max() > 0
