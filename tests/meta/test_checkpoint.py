"""Inner-loop checkpointing changes memory, never the meta-gradient.

In float64, ``checkpoint=True`` must give the meta-gradient of ``checkpoint=False`` (both
``meta_loss(batch).backward()`` and ``meta_gradient(batch)``) for an MLP on sinusoid tasks and
for Conv4 with BatchNorm on tiny random images. No memory or timing is asserted here: that is
``benchmarks/bench_maml.py``'s job.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

from metaloop.adapt.sgd import sgd_path
from metaloop.func.losses import get_loss
from metaloop.meta import ANIL, MAML

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from conftest import meta_gradient_cases, tiny_meta_batch  # noqa: E402

RTOL = 1e-6


# every test here runs in float64 (the float64 fixture of tests/conftest.py)
pytestmark = pytest.mark.usefixtures("float64")


def _setup(model_name):
    """(model, loss name, inner lr, batch): 3 tasks each."""
    model, loss, batch = tiny_meta_batch(model_name, 3, 1)
    return model, loss, 0.1 if model_name == "mlp" else 0.4, batch


def _both_gradients(learner, batch):
    """(meta_gradient(batch), the .grad left by meta_loss(batch).backward())."""
    got = learner.meta_gradient(batch)
    for p in learner.model.parameters():
        p.grad = None
    learner.meta_loss(batch)[0].backward()
    return got, {n: p.grad.clone() for n, p in learner.model.named_parameters()}


def _assert_close(a, b, what):
    for n in b:
        scale = b[n].abs().max().clamp_min(1e-6)   # conv biases before BN: exactly 0
        assert (a[n] - b[n]).abs().max() / scale < RTOL, (n, what)


@meta_gradient_cases
def test_checkpoint_gives_the_same_meta_gradient(kind, first_order, steps, method):
    model, loss, lr, batch = _setup(kind)
    plain, ckpt = (method(model, lr, steps, first_order, loss=loss, batching="loop",
                          checkpoint=c) for c in (False, True))
    ref_g, ref_b = _both_gradients(plain, batch)
    got_g, got_b = _both_gradients(ckpt, batch)
    assert any(ref_g[n].abs().max() > 0 for n in ref_g)
    _assert_close(ref_b, ref_g, "the two reference paths")
    _assert_close(got_g, ref_g, "meta_gradient")
    _assert_close(got_b, ref_b, "meta_loss().backward()")


def test_checkpointed_path_values_equal_plain_path():
    model, loss, lr, batch = _setup("conv4")
    sx, sy, _, _ = batch.task(0)
    params = dict(model.named_parameters())
    fwd = lambda p, x: torch.func.functional_call(model, p, (x,))  # noqa: E731
    runs = [list(sgd_path(fwd, get_loss(loss), params, list(params), sx, sy, lr, 3,
                          checkpoint=c)) for c in (False, True)]
    for a, b in zip(*runs):
        assert all(torch.allclose(a[n], b[n], rtol=1e-12, atol=1e-14) for n in a)
    assert all(type(v.grad_fn).__name__ == "_RecomputedStepBackward" for v in runs[1][-1].values())


def test_checkpoint_with_vmap_is_refused_by_name():
    model, loss, lr, _ = _setup("mlp")
    with pytest.raises(ValueError, match="checkpoint=True, batching='vmap'"):
        MAML(model, lr, 2, loss=loss, batching="vmap", checkpoint=True)
    assert MAML(model, lr, 2, loss=loss, checkpoint=True).batching == "loop"   # auto -> loop


def test_checkpoint_does_not_change_test_time_adaptation():
    model, loss, lr, batch = _setup("conv4")
    sx, sy, qx, _ = batch.task(1)
    a, b = (MAML(model, lr, 2, loss=loss, checkpoint=c) for c in (False, True))
    pa, pb = a.adapt(sx, sy), b.adapt(sx, sy)
    assert torch.allclose(a.predict(pa, qx), b.predict(pb, qx), rtol=1e-12, atol=1e-14)


class _Net(torch.nn.Module):
    """Linear -> ``middle`` (torch's dropout or BatchNorm1d, training mode) -> tanh ->
    linear head."""

    def __init__(self, middle: torch.nn.Module):
        super().__init__()
        self.body = torch.nn.Sequential(torch.nn.Linear(1, 16), middle, torch.nn.Tanh())
        self.head = torch.nn.Linear(16, 1)

    def forward(self, x, head=True):
        h = self.body(x)
        return self.head(h) if head else h


@pytest.mark.parametrize("method", [MAML, ANIL], ids=["maml", "anil"])
def test_recomputation_redraws_the_dropout_masks_of_the_forward_pass(method):
    """With dropout in training mode, the recomputed step must see the masks the forward
    pass drew (the recomputation starts from that random state), else its gradient is that
    of another function (107% off); and the random stream goes on as without recomputation."""
    _, loss, lr, batch = _setup("mlp")
    runs = []
    for recompute in (False, True):
        torch.manual_seed(0)
        learner = method(_Net(torch.nn.Dropout(0.5)), lr, 2, loss=loss, batching="loop",
                         recompute_inner_loop=recompute)
        torch.manual_seed(1)
        grads = learner.meta_gradient(batch)
        runs.append((grads, torch.rand(3)))
    (plain, after_plain), (recomputed, after_recomputed) = runs
    assert any(plain[n].abs().max() > 0 for n in plain)
    _assert_close(recomputed, plain, "meta_gradient")
    assert torch.equal(after_recomputed, after_plain)
    torch.manual_seed(2)                          # other masks: the dropout is really drawn
    other = method(_Net(torch.nn.Dropout(0.5)), lr, 2, loss=loss,
                   batching="loop").meta_gradient(batch)
    assert max(float((other[n] - plain[n]).abs().max()) for n in plain) > 1e-3


def test_recomputation_updates_running_statistics_once_per_step():
    """The recomputed steps re-ran the support pass in training mode, so a torch BatchNorm's
    running statistics were updated twice per step (num_batches_tracked 15 for 3 tasks x 2
    steps, not 9 counting the query passes): the flag documented as memory-only changed
    eval-mode predictions. The gradient was, and is, the plain path's."""
    _, loss, lr, batch = _setup("mlp")
    runs = []
    for recompute in (False, True):
        torch.manual_seed(0)
        learner = MAML(_Net(torch.nn.BatchNorm1d(16)), lr, 2, loss=loss, batching="loop",
                       recompute_inner_loop=recompute)
        grads = learner.meta_gradient(batch)
        runs.append((grads, {n: b.clone() for n, b in learner.model.named_buffers()}))
    (plain, stats_plain), (recomputed, stats_recomputed) = runs
    _assert_close(recomputed, plain, "meta_gradient")
    assert int(stats_plain["body.1.num_batches_tracked"]) == 3 * (2 + 1)
    for n, b in stats_plain.items():
        assert torch.equal(stats_recomputed[n], b), n
