"""``batching="auto"`` runs vmap where it can and the loop otherwise, decided where the facts
are known: a forward pass that draws random numbers outside an ``nn.Dropout`` layer or
changes a buffer in place, or a dropout layer switched to training mode after the learner
was built, sends an "auto" learner to the loop (with the loop's numbers), and an explicit
``batching="vmap"`` gets a ``ValueError`` naming the problem and ``batching='loop'``
instead of torch's RuntimeError. ``head_init="zero"`` on a head the forward never uses is
refused (MAML, Reptile), as ANIL refuses such a head."""

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import metaloop as ml
from metaloop.meta._common import VmapUnsupported


def _batch(B=3, ways=5, S=1, Q=3):
    g = torch.Generator().manual_seed(1)
    sx, qx = torch.randn(B, ways * S, 8, generator=g), torch.randn(B, ways * Q, 8, generator=g)
    sy = torch.arange(ways).repeat_interleave(S).repeat(B, 1)
    qy = torch.arange(ways).repeat_interleave(Q).repeat(B, 1)
    return ml.TaskBatch(sx, sy, qx, qy)


class FDrop(nn.Module):
    """Dropout by F.dropout in forward (no nn.Dropout layer)."""

    def __init__(self):
        super().__init__()
        self.l1, self.head = nn.Linear(8, 16), nn.Linear(16, 5)

    def forward(self, x, head=True):
        f = F.dropout(torch.relu(self.l1(x)), 0.3, training=self.training)
        return self.head(f) if head else f


class Noisy(FDrop):
    """Noise by torch.randn_like in forward."""

    def forward(self, x, head=True):
        f = torch.relu(self.l1(x))
        f = f + 0.1 * torch.randn_like(f)
        return self.head(f) if head else f


class EMA(nn.Module):
    """A running average of the features, updated in place by forward."""

    def __init__(self):
        super().__init__()
        self.l1, self.head = nn.Linear(8, 16), nn.Linear(16, 5)
        self.register_buffer("ema", torch.ones(16))

    def forward(self, x, head=True):
        f = torch.relu(self.l1(x))
        self.ema.mul_(0.9).add_(0.1 * f.detach().mean(0))
        return self.head(f) if head else f


class DropMLP(nn.Module):
    def __init__(self):
        super().__init__()
        self.l1, self.drop, self.head = nn.Linear(8, 16), nn.Dropout(0.5), nn.Linear(16, 5)

    def forward(self, x, head=True):
        f = self.drop(torch.relu(self.l1(x)))
        return self.head(f) if head else f


LEARNERS = {
    "maml": lambda m, b: ml.meta.MAML(m, inner_lr=0.3, loss="ce", batching=b),
    "fomaml": lambda m, b: ml.meta.MAML(m, inner_lr=0.3, loss="ce", first_order=True,
                                        batching=b),
    "reptile": lambda m, b: ml.meta.Reptile(m, inner_lr=0.3, inner_steps=2, loss="ce",
                                            batching=b),
    "protonet": lambda m, b: ml.meta.ProtoNet(m, batching=b),
}


def _grads(learner, batch, seed=0):
    torch.manual_seed(seed)
    grads, metrics = learner.meta_gradient(batch, with_metrics=True)
    return grads, {k: float(v) for k, v in metrics.items()}


def _pair(model_cls, method):
    torch.manual_seed(0)
    model = model_cls()
    return (LEARNERS[method](model, "auto"),
            LEARNERS[method](copy.deepcopy(model), "loop"))


@pytest.mark.parametrize("method", list(LEARNERS))
@pytest.mark.parametrize("model_cls", [FDrop, Noisy, EMA])
def test_auto_falls_back_to_the_loop_with_its_numbers(model_cls, method):
    auto, loop = _pair(model_cls, method)
    assert auto.batching == "vmap"                   # decided at construction: plain MLP
    batch = _batch()
    for seed in (0, 1):                              # the first call falls back, then loop
        got, got_m = _grads(auto, batch, seed)
        want, want_m = _grads(loop, batch, seed)
        assert auto.batching == "loop"
        assert got.keys() == want.keys()
        for k in want:
            assert torch.equal(got[k], want[k]), k
        assert got_m == want_m
    for (n, a), (_, b) in zip(auto.model.named_buffers(), loop.model.named_buffers()):
        assert torch.equal(a, b), n        # the failed vmap attempt left no trace


@pytest.mark.parametrize("method", ["maml", "fomaml", "protonet"])
def test_auto_meta_loss_falls_back(method):
    auto, loop = _pair(FDrop, method)
    batch = _batch()
    torch.manual_seed(3)
    got = auto.meta_loss(batch)[0]
    torch.manual_seed(3)
    want = loop.meta_loss(batch)[0]
    assert auto.batching == "loop" and torch.equal(got, want)


@pytest.mark.parametrize("method", list(LEARNERS))
@pytest.mark.parametrize("model_cls, words", [(FDrop, "draws random numbers"),
                                              (Noisy, "draws random numbers"),
                                              (EMA, "changes a tensor in place")])
def test_explicit_vmap_names_the_problem(model_cls, words, method):
    torch.manual_seed(0)
    learner = LEARNERS[method](model_cls(), "vmap")
    with pytest.raises(ValueError, match=words) as info:
        learner.meta_gradient(_batch())
    assert isinstance(info.value, VmapUnsupported)
    assert "batching='loop'" in str(info.value)
    assert learner.batching == "vmap"


@pytest.mark.parametrize("method", list(LEARNERS))
def test_auto_built_in_eval_mode_then_trained_runs_the_loop(method):
    torch.manual_seed(0)
    model = DropMLP()
    model.eval()
    auto = LEARNERS[method](model, "auto")
    loop = LEARNERS[method](copy.deepcopy(model), "loop")
    assert auto.batching == "vmap"
    model.train()
    loop.model.train()
    got, _ = _grads(auto, _batch())
    want, _ = _grads(loop, _batch())
    assert auto.batching == "loop"
    for k in want:
        assert torch.equal(got[k], want[k]), k


def test_auto_built_in_eval_mode_then_trained_trains():
    torch.manual_seed(0)
    model = DropMLP()
    model.eval()
    learner = ml.meta.MAML(model, loss="ce")
    model.train()
    fam = ml.tasks.Episodes(torch.randn(200, 8), torch.arange(20).repeat(10), ways=5,
                            shots=1, queries=3)
    ml.train(learner, fam, iterations=2, meta_batch=2, progress=False)
    assert learner.batching == "loop"


@pytest.mark.parametrize("method", ["maml", "reptile", "protonet"])
def test_explicit_vmap_after_train_keeps_its_message(method):
    torch.manual_seed(0)
    model = DropMLP()
    model.eval()
    learner = LEARNERS[method](model, "vmap")
    model.train()
    with pytest.raises(ValueError,
                       match=r"cannot run (backbone\.)?drop \(Dropout\).*batching='loop'"):
        learner.meta_gradient(_batch())


def _family():
    return ml.tasks.Episodes(torch.randn(200, 8), torch.arange(20).repeat(10), ways=5,
                             shots=1, queries=3)


@pytest.mark.parametrize("method", list(LEARNERS))
@pytest.mark.parametrize("model_cls", [FDrop, EMA])
def test_evaluate_falls_back_with_the_loops_numbers(model_cls, method):
    auto, loop = _pair(model_cls, method)
    fam = _family()
    torch.manual_seed(5)
    got = ml.evaluate(auto, fam, tasks=6, steps=(0, 1), progress=False)
    torch.manual_seed(5)
    want = ml.evaluate(loop, fam, tasks=6, steps=(0, 1), progress=False)
    assert auto.batching == "loop"
    assert got["per_task"] == want["per_task"]
    for (n, a), (_, b) in zip(auto.model.named_buffers(), loop.model.named_buffers()):
        assert torch.equal(a, b), n


@pytest.mark.parametrize("method", list(LEARNERS))
def test_evaluate_explicit_vmap_names_the_problem(method):
    torch.manual_seed(0)
    learner = LEARNERS[method](FDrop(), "vmap")
    with pytest.raises(ValueError, match="draws random numbers.*batching='loop'"):
        ml.evaluate(learner, _family(), tasks=4, steps=(0, 1), progress=False)


class Aux(nn.Module):
    """The output layer ``cls``, and ``aux``, a Linear registered last that forward never
    uses (another task's head, say)."""

    def __init__(self):
        super().__init__()
        self.l1, self.cls, self.aux = nn.Linear(8, 16), nn.Linear(16, 5), nn.Linear(16, 3)

    def forward(self, x):
        return self.cls(torch.tanh(self.l1(x)))


ZERO = {
    "maml": lambda m, **kw: ml.meta.MAML(m, loss="ce", head_init="zero", **kw),
    "fomaml": lambda m, **kw: ml.meta.MAML(m, loss="ce", head_init="zero", first_order=True,
                                           **kw),
    "reptile": lambda m, **kw: ml.meta.Reptile(m, loss="ce", head_init="zero", **kw),
}


@pytest.mark.parametrize("batching", ["loop", "vmap", "auto"])
@pytest.mark.parametrize("method", list(ZERO))
def test_zero_head_unused_by_forward_is_refused(method, batching):
    torch.manual_seed(0)
    learner = ZERO[method](Aux(), batching=batching)
    with pytest.raises(ValueError, match=r"starts the head \['aux.weight', 'aux.bias'\].*"
                                         r"never uses it.*head=\['cls.weight', 'cls.bias'\]"):
        learner.meta_gradient(_batch())
    sx, sy, _, _ = _batch().task(0)
    with pytest.raises(ValueError, match="never uses it"):
        learner.adapt(sx, sy)


@pytest.mark.parametrize("method", list(ZERO))
def test_zero_head_named_runs(method):
    torch.manual_seed(0)
    learner = ZERO[method](Aux(), head=["cls.weight", "cls.bias"])
    learner.meta_gradient(_batch())
    sx, sy, _, _ = _batch().task(0)
    assert float(learner.adapt(sx, sy, steps=0)["cls.weight"].abs().sum()) == 0.0


class Count(nn.Module):
    """A forward that adds an unbatched value to a buffer in place: vmap runs it without an
    error, but once for the whole batch of tasks (the loop: once per task)."""

    def __init__(self):
        super().__init__()
        self.l1, self.head = nn.Linear(8, 16), nn.Linear(16, 5)
        self.register_buffer("calls", torch.zeros(()))

    def forward(self, x, head=True):
        self.calls.add_(1)
        f = torch.relu(self.l1(x))
        return self.head(f) if head else f


def test_auto_runs_an_in_place_count_per_task_as_the_loop():
    auto, loop = _pair(Count, "protonet")
    got, _ = _grads(auto, _batch())
    want, _ = _grads(loop, _batch())
    assert auto.batching == "loop"
    assert float(auto.model.backbone.calls) == float(loop.model.backbone.calls) == 6.0
    for k in want:
        assert torch.equal(got[k], want[k]), k


def test_evaluate_ensemble_of_auto_members_falls_back():
    torch.manual_seed(0)
    a, b = FDrop(), FDrop()
    auto = ml.meta.Ensemble([ml.meta.ProtoNet(a), ml.meta.MAML(b, loss="ce")])
    loop = ml.meta.Ensemble([ml.meta.ProtoNet(copy.deepcopy(a), batching="loop"),
                             ml.meta.MAML(copy.deepcopy(b), loss="ce", batching="loop")])
    assert auto.batching == "vmap"
    fam = _family()
    got = ml.evaluate(auto, fam, tasks=6, steps=(0, 1), progress=False)
    want = ml.evaluate(loop, fam, tasks=6, steps=(0, 1), progress=False)
    assert auto.batching == "loop"
    assert got["per_task"] == want["per_task"]


@pytest.mark.parametrize("first_order", [False, True])
def test_auto_zero_head_with_random_forward_is_not_blamed_on_the_head(first_order):
    auto, loop = (ml.meta.MAML(m, loss="ce", head_init="zero", first_order=first_order,
                               batching=b) for m, b in _models_pair(FDrop))
    got, _ = _grads(auto, _batch())
    want, _ = _grads(loop, _batch())
    assert auto.batching == "loop"
    for k in want:
        assert torch.equal(got[k], want[k]), k


def _models_pair(model_cls):
    torch.manual_seed(0)
    model = model_cls()
    return [(model, "auto"), (copy.deepcopy(model), "loop")]


class EMAAssigned(EMA):
    """The running average assigned anew by forward (``self.ema = ...``), not in place."""

    def forward(self, x, head=True):
        f = torch.relu(self.l1(x))
        self.ema = 0.9 * self.ema + 0.1 * f.detach().mean(0)
        return self.head(f) if head else f


@pytest.mark.parametrize("make", [
    lambda m, b: ml.meta.MAML(m, inner_lr=0.1, inner_steps=1, loss="ce", batching=b),
    lambda m, b: ml.meta.ProtoNet(m, batching=b)])
def test_a_buffer_assigned_anew_in_forward_falls_back_to_the_loop(make):
    """A buffer attribute assigned under vmap holds a tensor that escaped it: "auto" put
    the slot back and goes on with the loop, with the loop's numbers and buffer at every
    step (it failed with torch's "tensor may have escaped" at the next step)."""
    got, want = [], []
    for batching, out in (("auto", got), ("loop", want)):
        torch.manual_seed(0)
        model = EMAAssigned()
        learner = make(model, batching)
        for seed in range(2):
            b = _batch()
            loss, _ = learner.meta_loss(b) if seed else (learner.meta_gradient(b), None)
            out.append((loss if seed else {k: v.clone() for k, v in loss.items()},
                        model.ema.clone()))
        assert learner.batching == "loop"
    torch.testing.assert_close(got, want, rtol=0, atol=0)


def test_auto_copies_the_buffers_only_until_a_call_changes_none():
    """A model whose forward leaves its buffers alone is copied once (the first vmapped
    call), not at every step: a frozen buffer costs nothing after that."""
    class Frozen(nn.Module):
        def __init__(self):
            super().__init__()
            self.l1, self.head = nn.Linear(8, 16), nn.Linear(16, 5)
            self.register_buffer("scale", torch.full((16,), 2.0))

        def forward(self, x):
            return self.head(torch.relu(self.l1(x)) * self.scale)

    model = Frozen()
    learner = ml.meta.MAML(model, inner_lr=0.1, inner_steps=1, loss="ce")
    assert learner.batching == "vmap"
    clones = []
    real = torch.Tensor.clone

    def counting(t, *a, **k):
        if t is model.scale:
            clones.append(1)
        return real(t, *a, **k)
    try:
        torch.Tensor.clone = counting
        for _ in range(4):
            learner.meta_gradient(_batch())
    finally:
        torch.Tensor.clone = real
    assert learner.batching == "vmap" and getattr(learner, "_vmap_clean", False)
    assert len(clones) <= 2            # the first call's guard (and its first-use probe)
