"""A model's own tensors are left as they were by every functional call: a submodule
registered under two names (``self.mid2 = self.mid``) and weights tied across modules
(``out.weight = inp.weight``), on the per-task loop and under vmap.

torch's ``functional_call(..., tie_weights=True)`` swapped the twice-registered module's
attribute once per name and restored the swapped-in tensor: the model kept the adapted
(detached, or vmap-batched) weight, and meta-training it then failed."""

import copy

import pytest
import torch
from torch import nn

import metaloop as ml
from metaloop.func.params import forward, params_of


class Aliased(nn.Module):
    """One hidden layer used twice, registered as ``mid`` and ``mid2``."""

    def __init__(self, d=6, out=3):
        super().__init__()
        self.inp = nn.Linear(d, 8, bias=False)
        self.mid = nn.Linear(8, 8)
        self.mid2 = self.mid
        self.head = nn.Linear(8, out)

    def forward(self, x, head=True):
        h = torch.tanh(self.mid2(torch.tanh(self.mid(torch.tanh(self.inp(x))))))
        return self.head(h) if head else h


class Tied(nn.Module):
    """An output layer sharing its weight with an earlier layer."""

    def __init__(self, d=6):
        super().__init__()
        self.inp = nn.Linear(d, d)
        self.mid = nn.Linear(d, d)
        self.head = nn.Linear(d, d)
        self.head.weight = self.inp.weight

    def forward(self, x, head=True):
        h = torch.tanh(self.mid(torch.tanh(self.inp(x))))
        return self.head(h) if head else h


def _batch(out, b=2, s=6, q=6, d=6, seed=0):
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(out).repeat(s // out + 1)[:s]
    return ml.TaskBatch(torch.randn(b, s, d, generator=g), y[None].repeat(b, 1),
                        torch.randn(b, q, d, generator=g), y[None].repeat(b, 1))


def _state(model):
    """Every parameter and buffer by every name, the object itself and a copy of its value."""
    out = {n: (t, t.detach().clone()) for n, t in
           model.named_parameters(remove_duplicate=False)}
    out.update({n: (t, t.detach().clone()) for n, t in
                model.named_buffers(remove_duplicate=False)})
    return out


def _assert_untouched(model, before):
    after = dict(model.named_parameters(remove_duplicate=False))
    after.update(model.named_buffers(remove_duplicate=False))
    assert after.keys() == before.keys()
    for n, (obj, value) in before.items():
        assert after[n] is obj, f"{n} was replaced by {type(after[n]).__name__}"
        assert isinstance(after[n], nn.Parameter) == isinstance(obj, nn.Parameter)
        assert torch.equal(after[n].detach(), value), n


@pytest.mark.parametrize("batching", ["loop", "vmap"])
@pytest.mark.parametrize("model_cls", [Aliased, Tied])
def test_learner_calls_leave_a_shared_module_or_tied_weight_as_it_was(model_cls, batching):
    torch.manual_seed(0)
    model = model_cls()
    out = model.head.out_features
    learner = ml.meta.MAML(model, inner_lr=0.3, inner_steps=2, loss="ce", batching=batching)
    before = _state(model)
    batch = _batch(out)
    loss, _ = learner.meta_loss(batch)
    _assert_untouched(model, before)
    learner.meta_gradient(batch)
    _assert_untouched(model, before)
    sx, sy, qx, _ = batch.task(0)
    params = learner.adapt(sx, sy)
    p1 = learner.predict(params, qx)
    _assert_untouched(model, before)
    p2 = learner.predict(learner.adapt(sx, sy), qx)
    assert torch.equal(p1, p2)                          # evaluation is repeatable
    assert torch.equal(learner.meta_loss(batch)[0], loss)
    family = ml.tasks.Episodes(torch.randn(10 * out, 6), torch.arange(out).repeat(10), ways=out,
                               shots=2, queries=2)
    ml.evaluate(learner, family, tasks=2, steps=(0, 1), progress=False)
    _assert_untouched(model, before)
    ml.train(learner, family, iterations=2, meta_batch=2, progress=False)   # trains on
    assert all(p.requires_grad and isinstance(p, nn.Parameter) for p in model.parameters())


def test_forward_under_vmap_leaves_no_batched_tensor_on_the_model():
    model = Aliased()
    before = _state(model)
    stacked = {k: v.detach()[None].repeat(3, *[1] * v.dim()) + 1 for k, v in
               params_of(model).items()}
    x = torch.randn(3, 4, 6)
    out = torch.func.vmap(lambda p, xi: forward(model, p, xi))(stacked, x)
    _assert_untouched(model, before)
    model(torch.randn(2, 6))                    # usable afterwards
    ref = torch.stack([forward(model, {k: v[i] for k, v in stacked.items()}, x[i])
                       for i in range(3)])
    torch.testing.assert_close(out, ref)


def test_a_given_tensor_is_used_wherever_the_model_uses_it():
    """Given under one name, a tied weight replaces the model's at both uses (as torch's
    tie_weights=True did); a module registered twice runs with the given tensor at both."""
    torch.manual_seed(0)
    x = torch.randn(4, 6)
    for model in (Aliased(), Tied()):
        p = {k: v.detach() * 0.5 for k, v in params_of(model).items()}
        ref = copy.deepcopy(model)
        for n, t in ref.named_parameters():
            t.data.copy_(p[n])
        torch.testing.assert_close(forward(model, p, x), ref(x))
    tied = Tied()
    w = torch.zeros_like(tied.inp.weight)
    got = forward(tied, {"inp.weight": w}, x)
    expect = forward(tied, {"inp.weight": w, "head.weight": w}, x)
    assert torch.equal(got, expect)
    with pytest.raises(ValueError, match="different values.*one tensor under both names"):
        forward(tied, {"inp.weight": w, "head.weight": w + 1}, x)
    al = Aliased()
    with pytest.raises(ValueError, match="different values"):
        forward(al, {"mid.weight": torch.zeros(8, 8), "mid2.weight": torch.ones(8, 8)}, x)
    assert torch.equal(forward(al, {"mid2.weight": torch.zeros(8, 8)}, x),
                       forward(al, {"mid.weight": torch.zeros(8, 8)}, x))


def test_tying_weights_after_a_first_call_is_seen():
    """The sharing of a model's tensors is cached per model, and read again after any module
    registers a parameter, buffer or submodule."""
    model = nn.Sequential(nn.Linear(4, 4), nn.Tanh(), nn.Linear(4, 4))
    x = torch.randn(3, 4)
    w = torch.zeros(4, 4)
    forward(model, {"0.weight": w}, x)
    model[2].weight = model[0].weight                   # tied after the first call
    torch.testing.assert_close(forward(model, {"0.weight": w}, x),
                               torch.tanh(x @ w.T + model[0].bias) @ w.T + model[2].bias)
    before = _state(model)
    forward(model, {"0.weight": w}, x)
    _assert_untouched(model, before)


@pytest.mark.parametrize("batching", ["loop", "vmap"])
def test_meta_gradient_of_a_model_with_a_module_used_twice_matches_a_written_out_loop(
        batching):
    torch.manual_seed(0)
    model = Aliased(out=3).double()
    batch = _batch(3, b=3, s=6, q=6)
    batch = ml.TaskBatch(batch.support_x.double(), batch.support_y, batch.query_x.double(),
                         batch.query_y)
    lr, steps = 0.3, 2
    learner = ml.meta.MAML(model, inner_lr=lr, inner_steps=steps, loss="ce", batching=batching)
    got = learner.meta_gradient(batch)

    def net(p, x):
        h = torch.tanh(x @ p["inp.weight"].T)
        h = torch.tanh(h @ p["mid.weight"].T + p["mid.bias"])
        h = torch.tanh(h @ p["mid.weight"].T + p["mid.bias"])
        return h @ p["head.weight"].T + p["head.bias"]

    params = {n: t.detach().clone().requires_grad_() for n, t in model.named_parameters()}
    total = 0
    for i in range(batch.support_x.shape[0]):
        sx, sy, qx, qy = batch.task(i)
        fast = dict(params)
        for _ in range(steps):
            loss = nn.functional.cross_entropy(net(fast, sx), sy)
            g = torch.autograd.grad(loss, list(fast.values()), create_graph=True)
            fast = {n: t - lr * gi for (n, t), gi in zip(fast.items(), g)}
        total = total + nn.functional.cross_entropy(net(fast, qx), qy)
    ref = torch.autograd.grad(total / batch.support_x.shape[0], list(params.values()))
    assert set(got) == set(params)
    for (n, _), r in zip(params.items(), ref):
        torch.testing.assert_close(got[n], r, rtol=1e-10, atol=1e-12)
