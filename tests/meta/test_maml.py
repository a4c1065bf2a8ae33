"""MAML: its default path (``maml_meta_gradient``), each execution strategy on its own, and
the learner's flags.

The meta-gradient of every strategy against the unrolled reference is also checked in
``test_conformance.py`` (loop, vmap), ``test_threads.py``, ``test_fast_paths.py`` (compile)
and ``test_checkpoint.py`` (recomputation); here each strategy is called directly.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

import metaloop as ml
from metaloop.adapt.sgd import SGDAdapter
from metaloop.meta import MAML
from metaloop.meta._strategies import (
    on_threads,
    replicas,
    sgd_inner_loop,
    vmapped_query_losses,
)
from metaloop.meta.maml import maml_meta_gradient
from metaloop.models import MLP, Conv4

sys.path.insert(0, str(Path(__file__).parent))
from _reference import plain_batch, plain_meta_gradient, rel_err  # noqa: E402

# every test here runs in float64 (the float64 fixture of tests/conftest.py)
pytestmark = pytest.mark.usefixtures("float64")


def _mlp_ref(p, x):
    h = F.relu(x @ p["body.fc0.weight"].T + p["body.fc0.bias"])
    h = F.relu(h @ p["body.fc1.weight"].T + p["body.fc1.bias"])
    return h @ p["head.weight"].T + p["head.bias"]


def _sinusoid():
    """(MLP, 3 sinusoid tasks) in float64."""
    torch.manual_seed(1)
    batch = ml.tasks.Sinusoid(5, 6).sample(3, torch.Generator().manual_seed(2),
                                           dtype=torch.float64)
    return MLP(1, (16, 16), 1).double(), batch


def _images(size=16):
    """(Conv4 of 3 ways, 3 tasks of 3-way 2-shot 16x16 images) in float64."""
    torch.manual_seed(1)
    g = torch.Generator().manual_seed(2)
    sy = torch.arange(3).repeat(3, 2)                                     # [B, 6]
    qy = torch.arange(3).repeat(3, 3)                                     # [B, 9]
    batch = ml.TaskBatch(torch.randn(3, 6, 1, size, size, generator=g), sy,
                         torch.randn(3, 9, 1, size, size, generator=g), qy)
    return Conv4(1, 8, 3, image_size=size).double(), batch


# -- the default path -------------------------------------------------------------------------

@pytest.mark.parametrize("first_order", [False, True], ids=["second", "first"])
def test_the_default_path_is_the_plain_per_task_loop(first_order):
    torch.manual_seed(0)
    model = Conv4(1, 8, 3)
    batch = plain_batch(tasks=4)
    params = dict(model.named_parameters())
    grads, per_task = maml_meta_gradient(SGDAdapter(model, "ce", 0.4, 2), params, batch,
                                         first_order=first_order)
    ref = plain_meta_gradient(params, batch, 0.4, 2, list(params), not first_order)
    assert rel_err(grads, ref) < 1e-10
    assert [i for i, _ in per_task] == [0, 1, 2, 3]
    assert set(per_task[0][1]) == {"loss", "accuracy"}


def test_a_subset_of_tasks_gives_its_share_of_the_gradient():
    model, batch = _images()
    adapter, params = SGDAdapter(model, "ce", 0.4, 1), dict(model.named_parameters())
    whole, per_task = maml_meta_gradient(adapter, params, batch)
    a, first = maml_meta_gradient(adapter, params, batch, tasks=[0, 2])
    b, second = maml_meta_gradient(adapter, params, batch, tasks=[1])
    assert rel_err({n: a[n] + b[n] for n in a}, whole) < 1e-12      # each divided by B = 3
    assert sorted(first + second) == per_task


def test_the_loss_and_metrics_are_the_mean_query_loss_after_adaptation():
    """Moved from test_conformance: ``meta_loss`` is the mean over tasks of the query loss
    of ``adapt``'s parameters, and its metrics report it."""
    model, batch = _sinusoid()
    learner = MAML(model, 0.1, 2)
    value, metrics = learner.meta_loss(batch)
    expected = []
    for i in range(batch.num_tasks):
        sx, sy, qx, qy = batch.task(i)
        p = learner.adapt(sx, sy)
        expected.append(F.mse_loss(_mlp_ref(p, qx), qy))
    assert torch.allclose(value, torch.stack(expected).mean())
    assert metrics["loss"] == pytest.approx(float(value.detach()))
    _, grad_metrics = learner.meta_gradient(batch, with_metrics=True)
    assert float(grad_metrics["loss"]) == pytest.approx(float(metrics["loss"]), rel=1e-12)


def test_zero_head_gives_zero_logits_and_adapts_head_of_task_size():
    """Moved from test_conformance."""
    torch.manual_seed(0)
    model = Conv4(1, 8, 7, image_size=16).double()                     # 7 outputs, 3-way tasks
    learner = MAML(model, 0.4, 1, loss="ce", head_init="zero")
    _, batch = _images()
    sx, sy, qx, qy = batch.task(0)
    p0 = learner.adapt(sx, sy, steps=0)
    assert p0["head.weight"].shape == (3, model.feature_dim)
    assert torch.equal(learner.predict(p0, qx), torch.zeros(qx.shape[0], 3))
    p1 = learner.adapt(sx, sy, steps=1)
    assert p1["head.weight"].abs().sum() > 0
    g = learner.meta_gradient(batch)
    assert torch.equal(g["head.weight"], torch.zeros_like(model.head.weight))
    assert g["body.0.conv.weight"].abs().sum() > 0


def test_same_seed_same_gradient():
    """Moved from test_conformance."""
    a = MAML(_sinusoid()[0], 0.1, 2).meta_gradient(_sinusoid()[1])
    b = MAML(_sinusoid()[0], 0.1, 2).meta_gradient(_sinusoid()[1])
    assert all(torch.equal(a[n], b[n]) for n in a)


# -- the strategies, one at a time ------------------------------------------------------------

@pytest.mark.parametrize("recompute", [False, True], ids=["plain", "recomputed"])
def test_the_adapters_inner_loop_gives_the_written_out_one(recompute):
    """``sgd_inner_loop`` (the strategy behind recomputation, learned step sizes and ANIL's
    head-only path) in place of the written-out SGD steps: the same meta-gradient."""
    model, batch = _images()
    params = dict(model.named_parameters())
    adapter = SGDAdapter(model, "ce", 0.4, 2, checkpoint=recompute)
    plain, _ = maml_meta_gradient(adapter, params, batch)
    got, _ = maml_meta_gradient(adapter, params, batch,
                                inner_loop=sgd_inner_loop(adapter, first_order=False))
    assert rel_err(got, plain) < 1e-10
    theta = sgd_inner_loop(adapter, first_order=False)(params, *batch.task(0)[:2])
    assert set(theta) == set(params)
    assert not torch.equal(theta["head.weight"], params["head.weight"])


def test_learned_step_sizes_reach_the_table():
    """``sgd_inner_loop`` with a ``[steps, adapted]`` table: a table filled with alpha gives
    alpha's theta', and the table is differentiable."""
    model, batch = _images()
    adapter = SGDAdapter(model, "ce", 0.4, 2)
    params = dict(model.named_parameters())
    table = torch.full((2, len(adapter.names)), 0.4, requires_grad=True)
    sx, sy, qx, qy = batch.task(0)
    with_table = sgd_inner_loop(adapter, False, table)(params, sx, sy)
    plain = sgd_inner_loop(adapter, False)(params, sx, sy)
    assert all(torch.allclose(with_table[n], plain[n], rtol=1e-12, atol=1e-14) for n in plain)
    g, = torch.autograd.grad(F.cross_entropy(adapter.fwd(with_table, qx), qy), [table])
    assert g.shape == (2, len(adapter.names)) and g.abs().max() > 0


def test_vmapped_losses_are_the_per_task_losses():
    model, batch = _sinusoid()
    adapter = SGDAdapter(model, "mse", 0.1, 2)
    params = dict(model.named_parameters())
    losses, outs = vmapped_query_losses(adapter, params, batch, first_order=False)
    assert losses.shape == (3,) and outs.shape == (3, batch.query_x.shape[1], 1)
    for i in range(batch.num_tasks):
        sx, sy, qx, qy = batch.task(i)
        theta = adapter.run(params, sx, sy)
        assert torch.allclose(losses[i], F.mse_loss(_mlp_ref(theta, qx), qy), rtol=1e-12)
    g = torch.autograd.grad(losses.mean(), list(params.values()))
    ref, _ = maml_meta_gradient(adapter, params, batch)
    assert rel_err(dict(zip(params, g)), ref) < 1e-10


def test_threads_deal_the_tasks_round_robin_and_sum_the_parts():
    model, batch = _images()
    adapter = SGDAdapter(model, "ce", 0.4, 1)
    params = dict(model.named_parameters())
    cache: list[SGDAdapter] = []
    twins = replicas(adapter, 2, cache)
    assert len(twins) == 2 and replicas(adapter, 1, cache)[0] is twins[0]    # kept for reuse
    assert twins[0].model is not model
    assert all(p is q for p, q in zip(model.parameters(), twins[0].model.parameters()))
    seen = []

    def run(a, tasks):
        seen.append((a, list(tasks)))
        return maml_meta_gradient(a, params, batch, tasks=tasks)

    old = torch.get_num_threads()
    total, per_task = on_threads(run, batch.num_tasks, [adapter, *twins])
    assert torch.get_num_threads() == old
    assert sorted((id(a), t) for a, t in seen) == sorted(
        [(id(adapter), [0]), (id(twins[0]), [1]), (id(twins[1]), [2])])
    whole, ref_tasks = maml_meta_gradient(adapter, params, batch)
    assert rel_err(total, whole) < 1e-12
    assert [i for i, _ in per_task] == [0, 1, 2]
    # floats: pytest.approx reads no tensors (9.2 iterates a 0-d one and fails)
    flat = lambda tasks: [float(m[k]) for _, m in tasks for k in sorted(m)]  # noqa: E731
    assert [sorted(m) for _, m in per_task] == [sorted(m) for _, m in ref_tasks]
    assert flat(per_task) == pytest.approx(flat(ref_tasks), rel=1e-12)


# -- the learner's flags ----------------------------------------------------------------------

def test_recompute_inner_loop_and_its_older_name():
    model, _ = _sinusoid()
    for kw in ({"recompute_inner_loop": True}, {"checkpoint": True}):
        learner = MAML(model, 0.1, 2, **kw)
        assert learner.recompute_inner_loop and learner.inner.checkpoint
        assert learner.batching == "loop"                               # auto -> loop
    assert not MAML(model, 0.1, 2).recompute_inner_loop
    with pytest.raises(ValueError, match=r"recompute_inner_loop=True, batching='vmap'"):
        MAML(model, 0.1, 2, batching="vmap", recompute_inner_loop=True)
    with pytest.raises(ValueError, match=r"learn_lr=True, recompute_inner_loop=True"):
        MAML(model, 0.1, 2, learn_lr=True, recompute_inner_loop=True)


def test_only_the_default_settings_take_the_written_out_loop():
    model, _ = _sinusoid()
    plain = MAML(model, 0.1, 2)
    assert plain._inner_loop(plain.inner, None) is None
    recomputed = MAML(model, 0.1, 2, recompute_inner_loop=True)
    assert recomputed._inner_loop(recomputed.inner, None) is not None
    learned = MAML(model, 0.1, 2, learn_lr=True)
    assert learned._inner_loop(learned.inner, learned.model.inner_lr) is not None


@pytest.mark.parametrize("loss", ["mse", "ce"])
def test_vmap_metrics_are_the_loops_task_means(loss):
    """The vmap path's metrics come from the whole batch at once (``batch_metrics``), not
    a Python loop over its tasks; they are the loop path's per-task means."""
    import metaloop as ml

    torch.manual_seed(0)
    if loss == "mse":
        batch = ml.tasks.Sinusoid(shots=5, queries=4).sample(6, torch.Generator().manual_seed(0))
        net = ml.models.MLP(in_dim=1, hidden=(8,), out_dim=1).double()
    else:
        g = torch.Generator().manual_seed(0)
        fam = ml.tasks.Episodes(torch.randn(60, 4, generator=g), torch.arange(60) % 6,
                                ways=3, shots=2, queries=3)
        batch = fam.sample(6, torch.Generator().manual_seed(0))
        net = ml.models.MLP(in_dim=4, hidden=(8,), out_dim=3).double()
    batch = batch.to(torch.float64)
    _, vm = MAML(net, 0.1, 2, loss=loss, batching="vmap").meta_gradient(batch, with_metrics=True)
    _, lm = MAML(net, 0.1, 2, loss=loss, batching="loop").meta_gradient(batch, with_metrics=True)
    assert set(vm) == set(lm) == ({"loss"} if loss == "mse" else {"loss", "accuracy"})
    for k in vm:
        assert vm[k].shape == () and float(vm[k]) == pytest.approx(float(lm[k]), rel=1e-12)
