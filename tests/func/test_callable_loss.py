"""A loss of the user's own must return the mean loss, one 0-dim floating tensor: a vector
(``reduction="none"``) or a Python float failed with torch's "grad can be implicitly created
only for scalar outputs" or functorch's "Expected f(*args) to return a scalar Tensor"."""

import pickle

import pytest
import torch
import torch.nn.functional as F

import metaloop as ml
from metaloop.adapt.sgd import sgd_path, sgd_path_func
from metaloop.func.losses import CheckedLoss, cross_entropy, get_loss, mse


def per_example(pred, y):
    return F.cross_entropy(pred, y, reduction="none")                 # [N]: not reduced


def mean_ce(pred, y):
    return F.cross_entropy(pred, y)


BAD = {
    "vector": (per_example, r"a torch.float32 tensor of shape \[6\]"),
    "float": (lambda pred, y: 1.0, r"a float"),
    "int tensor": (lambda pred, y: (pred.argmax(1) != y).sum(), r"a torch.int64 tensor of "
                                                                r"shape \[\]"),
}


def task():
    g = torch.Generator().manual_seed(0)
    fam = ml.tasks.Episodes(torch.randn(40, 4, generator=g), torch.arange(40) % 4, ways=3,
                            shots=2, queries=2)
    return fam.sample(2, torch.Generator().manual_seed(0))


def mlp():
    torch.manual_seed(0)
    return ml.models.MLP(in_dim=4, hidden=(8,), out_dim=3)


@pytest.mark.parametrize("kind", list(BAD))
def test_get_loss_refuses_anything_but_a_0_dim_float_tensor(kind):
    fn, got = BAD[kind]
    loss = get_loss(fn)
    name = "per_example" if kind == "vector" else "<lambda>"
    with pytest.raises(ValueError, match=rf"^loss {name} must return the mean loss as a 0-dim "
                                         rf"floating tensor, but returned {got} \(for predictions "
                                         rf"\[6, 3\]\); reduce it with \.mean\(\)"):
        loss(torch.randn(6, 3), torch.zeros(6, dtype=torch.long))


def test_a_good_loss_passes_through_unchanged():
    """The value and its gradient are the callable's; the built-ins are not wrapped; the
    wrapper keeps the callable's name and pickles as it does."""
    loss = get_loss(mean_ce)
    pred = torch.randn(6, 3, requires_grad=True)
    y = torch.arange(6) % 3
    assert isinstance(loss, CheckedLoss) and loss.__name__ == "mean_ce"
    assert torch.equal(loss(pred, y), F.cross_entropy(pred, y))
    assert get_loss("ce") is cross_entropy and get_loss(mse) is mse
    assert get_loss(loss) is loss
    assert pickle.loads(pickle.dumps(loss)).loss is mean_ce
    module_loss = get_loss(torch.nn.MSELoss())      # no __name__: named by its repr
    assert repr(module_loss) == "CheckedLoss(MSELoss())"
    with pytest.raises(ValueError, match=r"^loss MSELoss\(\) must return the mean loss"):
        get_loss(torch.nn.MSELoss(reduction="none"))(torch.randn(6, 1), torch.randn(6, 1))


@pytest.mark.parametrize("batching", ["loop", "vmap"])
@pytest.mark.parametrize("kind", list(BAD))
def test_learners_name_the_loss(batching, kind):
    """MAML's meta-gradient (loop: autograd.grad; vmap: torch.func.grad) and adapt refuse
    it with the same message."""
    fn, got = BAD[kind]
    b = task()
    learner = ml.meta.MAML(mlp(), loss=fn, batching=batching)
    with pytest.raises(ValueError, match=rf"must return the mean loss as a 0-dim floating "
                                         rf"tensor, but returned {got}"):
        learner.meta_gradient(b)
    with pytest.raises(ValueError, match=r"must return the mean loss"):
        learner.adapt(*b.task(0)[:2])
    with pytest.raises(ValueError, match=r"must return the mean loss"):
        learner.adapt_path_batched(b.support_x, b.support_y)


def test_the_check_reads_shapes_only_under_vmap_and_grad():
    """Under torch.func.vmap the shape checked is the per-task one, so a mean loss passes
    there and gives torch.func.grad's gradient; a per-example loss is refused."""
    loss = get_loss(mean_ce)
    w = torch.randn(4, 3)
    x, y = torch.randn(2, 6, 4), torch.arange(6).repeat(2, 1) % 3     # [B, N, 4], [B, N]

    def task_grad(loss_fn):
        return torch.func.vmap(torch.func.grad(lambda w, x, y: loss_fn(x @ w, y)),
                               in_dims=(None, 0, 0))(w, x, y)
    assert torch.equal(task_grad(loss), task_grad(mean_ce))
    with pytest.raises(ValueError, match=r"returned a torch.float32 tensor of shape \[6\]"):
        task_grad(get_loss(per_example))


@pytest.mark.parametrize("path", [sgd_path, sgd_path_func])
def test_sgd_path_checks_the_loss_it_is_given(path):
    model = mlp()
    params = {n: p.detach().requires_grad_() for n, p in model.named_parameters()}
    x, y = torch.randn(6, 4), torch.arange(6) % 3

    def fwd(p, x):
        return torch.func.functional_call(model, p, (x,))
    with pytest.raises(ValueError, match=r"loss per_example must return the mean loss"):
        list(path(fwd, per_example, params, ["head.bias"], x, y, 0.1, 1))
    with pytest.raises(ValueError, match=r"loss must be a callable \(pred, y\) -> scalar, "
                                         r"got str"):
        path(fwd, "ce", params, ["head.bias"], x, y, 0.1, 1)
    *_, last = path(fwd, mean_ce, params, ["head.bias"], x, y, 0.1, 1)
    *_, ref = path(fwd, cross_entropy, params, ["head.bias"], x, y, 0.1, 1)
    assert torch.equal(last["head.bias"], ref["head.bias"])


def test_a_one_element_result_is_taken_as_the_mean_as_autograd_takes_it():
    """``((p - y) ** 2).mean(0)`` of one output is ``[1]``: autograd.grad takes it, and the
    check refused it."""
    pred, y = torch.randn(5, 1, requires_grad=True), torch.randn(5, 1)
    loss = get_loss(lambda p, t: ((p - t) ** 2).mean(0))
    out = loss(pred, y)
    assert out.shape == () and torch.equal(out, ((pred - y) ** 2).mean())
    torch.autograd.grad(out, pred)
    net = ml.models.MLP(in_dim=1, hidden=(4,), out_dim=1)
    b = ml.tasks.Sinusoid(shots=5, queries=5).sample(2, torch.Generator().manual_seed(0))
    ref = ml.meta.MAML(net, loss="mse", batching="loop").meta_gradient(b)
    got = ml.meta.MAML(net, loss=lambda p, t: ((p - t) ** 2).mean(0), batching="loop") \
        .meta_gradient(b)
    assert all(torch.allclose(got[n], ref[n], rtol=0, atol=1e-6) for n in ref)


def test_a_wrapped_loss_equals_the_loss_it_wraps():
    assert get_loss(mean_ce) == get_loss(mean_ce) == mean_ce
    assert hash(get_loss(mean_ce)) == hash(mean_ce)
    assert get_loss(mean_ce) != get_loss(per_example)
