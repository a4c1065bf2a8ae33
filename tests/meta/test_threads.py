"""``batching="threads"``: the tasks of a meta-batch on several CPU threads.

The meta-gradient must be the plain per-task ``autograd.grad`` loop's (written without
metaloop, ``_reference.plain_meta_gradient``) in float64, for every variant that runs on the
threads; the tasks must really run on more than one thread; torch's thread count must come
back, also after a failing task. No timing is asserted (``benchmarks/bench_maml.py``).
"""

from __future__ import annotations

import sys
import threading
from pathlib import Path

import pytest
import torch
from torch import nn

from metaloop.meta import ANIL, MAML, R2D2
from metaloop.meta._threads import replicate, run_threads
from metaloop.models import MLP, Conv4

sys.path.insert(0, str(Path(__file__).parent))
from _reference import plain_batch, plain_meta_gradient, rel_err  # noqa: E402

RTOL = 1e-10
HEAD = ["head.weight", "head.bias"]


@pytest.fixture
def two_threads():
    """torch at 2 intra-op threads (so "threads" uses 2 workers), restored afterwards."""
    old = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(old)


pytestmark = pytest.mark.usefixtures("float64", "two_threads")


@pytest.mark.parametrize("variant", ["second_order", "first_order", "anil", "checkpoint",
                                     "zero_head"])
def test_threads_give_the_plain_loops_meta_gradient(variant):
    torch.manual_seed(0)
    model = Conv4(1, 8, 3)
    batch = plain_batch(tasks=5)
    kw = {"first_order": variant == "first_order", "checkpoint": variant == "checkpoint",
          "head_init": "zero" if variant == "zero_head" else "learned"}
    make = ANIL if variant == "anil" else MAML
    learner = make(model, 0.4, 2, loss="ce", batching="threads", **kw)
    got, metrics = learner.meta_gradient(batch, with_metrics=True)
    params = dict(model.named_parameters())
    ref_params = ({**params, **{n: torch.zeros_like(params[n]).requires_grad_() for n in HEAD}}
                  if variant == "zero_head" else params)
    adapt = HEAD if variant == "anil" else list(params)
    ref = plain_meta_gradient(ref_params, batch, 0.4, 2, adapt, variant != "first_order")
    if variant == "zero_head":          # the zero head is a fresh tensor: no grad reaches theta
        ref = {n: torch.zeros_like(g) if n in HEAD else g for n, g in ref.items()}
    assert rel_err(got, ref) < RTOL
    loop, loop_metrics = make(model, 0.4, 2, loss="ce", batching="loop",
                              **kw).meta_gradient(batch, with_metrics=True)
    assert rel_err(got, loop) < RTOL
    # floats: pytest.approx reads no tensors (9.2 iterates a 0-d one and fails)
    assert {k: float(v) for k, v in metrics.items()} == pytest.approx(
        {k: float(v) for k, v in loop_metrics.items()}, rel=1e-12)


def test_learned_step_sizes_get_the_loops_gradient_on_threads():
    torch.manual_seed(1)
    model = Conv4(1, 8, 3)
    batch = plain_batch(tasks=3, seed=1)
    a = MAML(model, 0.4, 2, loss="ce", batching="threads", learn_lr=True)
    b = MAML(model, 0.4, 2, loss="ce", batching="loop", learn_lr=True)
    b.model.inner_lr = a.model.inner_lr                   # one table, the same leaves
    with torch.no_grad():
        a.model.inner_lr.mul_(torch.linspace(0.5, 1.5, a.model.inner_lr.numel()).view_as(
            a.model.inner_lr))
    got, ref = a.meta_gradient(batch), b.meta_gradient(batch)
    assert set(got) == set(ref) and "inner_lr" in got
    assert rel_err(got, ref) < RTOL
    assert float(got["inner_lr"].abs().max()) > 0


class _Recorder(nn.Module):
    """A tiny conv net that records which thread runs each forward pass."""

    seen: set[int] = set()

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 2, 3)
        self.head = nn.Linear(2 * 26 * 26, 3)

    def forward(self, x):
        _Recorder.seen.add(threading.get_ident())
        return self.head(torch.relu(self.conv(x)).flatten(1))


def test_tasks_run_on_several_threads_and_the_thread_count_comes_back():
    torch.manual_seed(2)
    model = _Recorder()
    learner = MAML(model, 0.1, 1, loss="ce", batching="threads")
    _Recorder.seen.clear()
    learner.meta_gradient(plain_batch(tasks=4, seed=2))
    assert len(_Recorder.seen) == 2 and threading.get_ident() in _Recorder.seen
    assert torch.get_num_threads() == 2
    torch.set_num_threads(1)                         # one thread: the loop, inline
    _Recorder.seen.clear()
    learner.meta_gradient(plain_batch(tasks=4, seed=2))
    assert _Recorder.seen == {threading.get_ident()}


def test_a_failing_task_raises_here_and_restores_the_thread_count():
    learner = MAML(Conv4(1, 8, 3), 0.4, 1, loss="ce", batching="threads")
    batch = plain_batch(tasks=4)
    batch.query_y[3, 0] = 7                          # a label outside the 3 ways
    with pytest.raises(ValueError, match=r"labels must lie in \[0, C=3\).*found 7"):
        learner.meta_gradient(batch)                 # raised on a worker thread (task 3)
    assert torch.get_num_threads() == 2

    def boom():
        raise RuntimeError("boom")
    with pytest.raises(RuntimeError, match="boom"):
        run_threads([lambda: 1, boom])
    assert torch.get_num_threads() == 2


def test_replicas_share_the_tensors_not_the_module():
    model = Conv4(1, 8, 3)
    twin = replicate(model)
    assert twin is not model and twin.body[0] is not model.body[0]
    for (n, p), (m, q) in zip(model.named_parameters(), twin.named_parameters()):
        assert n == m and p is q


def test_which_models_and_options_may_use_threads():
    assert MAML(MLP(1, (8,), 1), 0.1).batching == "vmap"
    assert MAML(Conv4(1, 8, 3), 0.4, loss="ce").batching == "loop"     # "threads": opt-in
    bn = nn.Sequential(nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2), nn.Flatten(), nn.Linear(8, 2))
    with pytest.raises(ValueError, match="without buffers.*running_mean"):
        MAML(bn, 0.1, batching="threads")
    with pytest.raises(ValueError, match="compile=True.*'threads'"):
        MAML(Conv4(1, 8, 3), 0.4, loss="ce", batching="threads", compile=True)
    assert MAML(Conv4(1, 8, 3), 0.4, loss="ce", compile=True).batching == "loop"
    with pytest.raises(ValueError, match="batching must be one of 'loop', 'vmap', 'auto'"):
        R2D2(Conv4(1, 8, 3), batching="threads")


def _dropout_net():
    return nn.Sequential(nn.Linear(1, 16), nn.Tanh(), nn.Dropout(0.5), nn.Linear(16, 1))


def test_dropout_in_training_mode_is_refused_on_threads_and_runs_in_eval_mode():
    """Dropout draws from torch's one global generator: with tasks on two threads the masks
    went to the tasks in an order that changed from run to run, so one seed gave different
    meta-gradients from run to run, not the loop's. It is refused by layer, when the learner
    is built and when dropout is switched on afterwards; in eval mode threads give the loop's
    meta-gradient."""
    import metaloop as ml
    batch = ml.tasks.Sinusoid(5, 6).sample(8, torch.Generator().manual_seed(2),
                                           dtype=torch.float64)
    message = r"batching='threads' cannot run 2 \(Dropout\): in training mode dropout.*eval mode"
    with pytest.raises(ValueError, match=message):
        MAML(_dropout_net(), 0.1, batching="threads")
    with pytest.raises(ValueError, match=message):
        ANIL(_dropout_net(), 0.1, batching="threads")
    torch.manual_seed(0)
    net = _dropout_net().eval()
    learner = MAML(net, 0.1, 2, batching="threads")
    ref = MAML(net, 0.1, 2, batching="loop").meta_gradient(batch)
    assert rel_err(learner.meta_gradient(batch), ref) < RTOL
    net.train()                                       # switched on after construction
    with pytest.raises(ValueError, match=message):
        learner.meta_gradient(batch)
