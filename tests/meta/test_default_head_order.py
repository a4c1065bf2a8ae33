"""The default head (no layer called ``head``: the last ``nn.Linear`` *registered*) is refused
where another ``nn.Linear`` takes its output in (one forward pass in which only the head's
output carries a gradient): a model that registers its output
layer first (``self.fc`` before ``self.body``, common in user code) made ANIL adapt a hidden
layer, and ``head_init="zero"`` zero one, silently (ANIL's meta-gradient then differed from
learn2learn's by 0.53 relative). A head named with ``head=`` is never refused."""

import pytest
import torch
from torch import nn

import metaloop as ml


class FcFirst(nn.Module):
    """The output layer registered before the body; ``hidden = ways`` keeps a zeroed hidden
    layer's shape, so only the order check can tell."""

    def __init__(self, hidden=3, ways=3):
        super().__init__()
        self.fc = nn.Linear(hidden, ways)
        self.body = nn.Sequential(nn.Linear(4, hidden), nn.Tanh(), nn.Linear(hidden, hidden),
                                  nn.Tanh())

    def forward(self, x):
        return self.fc(self.body(x))


class FcLast(FcFirst):
    """The same layers, the output layer registered last."""

    def __init__(self, hidden=3, ways=3):
        nn.Module.__init__(self)
        self.body = nn.Sequential(nn.Linear(4, hidden), nn.Tanh(), nn.Linear(hidden, hidden),
                                  nn.Tanh())
        self.fc = nn.Linear(hidden, ways)


class HeadFirst(FcFirst):
    """The output layer called ``head``, registered first: the default takes it."""

    def __init__(self, hidden=3, ways=3):
        nn.Module.__init__(self)
        self.head = nn.Linear(hidden, ways)
        self.body = nn.Sequential(nn.Linear(4, hidden), nn.Tanh())

    def forward(self, x):
        return self.head(self.body(x))


def _batch(ways=3):
    g = torch.Generator().manual_seed(0)
    return ml.TaskBatch(torch.randn(2, ways, 4, generator=g), torch.arange(ways).repeat(2, 1),
                        torch.randn(2, 2 * ways, 4, generator=g),
                        torch.arange(ways).repeat_interleave(2).repeat(2, 1))


LEARNERS = {
    "anil": lambda m, **kw: ml.meta.ANIL(m, inner_lr=0.3, inner_steps=2, loss="ce", **kw),
    "maml-zero": lambda m, **kw: ml.meta.MAML(m, inner_lr=0.3, loss="ce", head_init="zero",
                                              **kw),
    "reptile-zero": lambda m, **kw: ml.meta.Reptile(m, inner_lr=0.3, inner_steps=2, loss="ce",
                                                    head_init="zero", **kw),
}


@pytest.mark.parametrize("batching", ["loop", "vmap"])
@pytest.mark.parametrize("method", list(LEARNERS))
def test_a_default_head_that_is_a_hidden_layer_is_refused_naming_the_output_layer(method,
                                                                                   batching):
    learner = LEARNERS[method](FcFirst(), batching=batching)
    with pytest.raises(ValueError, match=r"took 'body\.2' as the head.*\['fc'\] take its "
                                         r"output in") as e:
        learner.meta_gradient(_batch())
    assert "head=['fc.weight', 'fc.bias']" in str(e.value)


@pytest.mark.parametrize("method", list(LEARNERS))
def test_the_output_layer_registered_last_or_called_head_is_the_default(method):
    for cls, want in ((FcLast, ["fc.weight", "fc.bias"]),
                      (HeadFirst, ["head.weight", "head.bias"])):
        learner = LEARNERS[method](cls())
        grads = learner.meta_gradient(_batch())
        assert list(learner.inner.head or learner.inner.names) == want
        assert all(torch.isfinite(g).all() for g in grads.values())


def test_a_named_head_is_the_users_choice_and_anil_on_it_is_maml_on_it():
    torch.manual_seed(0)
    model = FcFirst(hidden=8).double()
    fc = ["fc.weight", "fc.bias"]
    anil = ml.meta.ANIL(model, inner_lr=0.3, inner_steps=2, loss="ce", head=fc)
    maml = ml.meta.MAML(model, inner_lr=0.3, inner_steps=2, loss="ce", adapt=fc)
    b = _batch()
    b = ml.TaskBatch(b.support_x.double(), b.support_y, b.query_x.double(), b.query_y)
    got, want = anil.meta_gradient(b), maml.meta_gradient(b)
    for n in want:
        torch.testing.assert_close(got[n], want[n], rtol=1e-12, atol=1e-14)
    hidden = ["body.2.weight", "body.2.bias"]           # named, so taken as asked
    assert ml.meta.ANIL(model, inner_lr=0.3, loss="ce", head=hidden).meta_gradient(b)


class Skip(nn.Module):
    """A linear skip path beside the output layer, registered and called after it: it does
    not take the head's output in, so the default head stays ``out``."""

    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(nn.Linear(4, 8), nn.Tanh())
        self.out, self.skip = nn.Linear(8, 3), nn.Linear(4, 3)

    def forward(self, x):
        return self.out(self.body(x)) + self.skip(x)


class SkipLast(Skip):
    """The skip registered last: the default head is then ``skip``, which nothing follows."""

    def __init__(self):
        nn.Module.__init__(self)
        self.body = nn.Sequential(nn.Linear(4, 8), nn.Tanh())
        self.out, self.skip = nn.Linear(8, 3), nn.Linear(4, 3)


def test_a_linear_skip_path_after_the_head_is_not_taken_for_the_output_layer():
    for cls in (Skip, SkipLast):
        learner = ml.meta.ANIL(cls(), inner_lr=0.3, inner_steps=2, loss="ce")
        grads = learner.meta_gradient(_batch())
        assert all(torch.isfinite(g).all() for g in grads.values())


@pytest.mark.parametrize("name", ["Pretrain", "Scratch"])
def test_the_baselines_zero_head_at_test_time_is_checked_too(name):
    learner = getattr(ml.meta, name)(FcFirst(), inner_lr=0.3, loss="ce", head_init="zero")
    b = _batch()
    with pytest.raises(ValueError, match=rf"{name} took 'body\.2' as the head"):
        learner.adapt(b.support_x[0], b.support_y[0])
    with pytest.raises(ValueError, match=rf"{name} took 'body\.2' as the head"):
        learner.adapt_path_batched(b.support_x, b.support_y)
    fine = getattr(ml.meta, name)(FcLast(), inner_lr=0.3, loss="ce", head_init="zero")
    assert set(fine.adapt(b.support_x[0], b.support_y[0])) >= {"fc.weight", "fc.bias"}
