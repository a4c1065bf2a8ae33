"""torch layers whose vmap behaviour differs from the loop's, in a model of the user's own:
``nn.Embedding(padding_idx=...)`` (vmap's embedding backward sends the padding row a
gradient: MAML over an adapted one is refused under "vmap", and "auto" takes the loop),
``nn.MultiheadAttention`` / ``nn.TransformerEncoderLayer`` in eval mode (their fused fast
path has no derivative: vmap runs the composite path), ``nn.Embedding(max_norm=...)`` and
``spectral_norm`` in training mode (in-place and ``out=`` ops: named, "auto" falls back to
the loop), a ``torch.compile``'d module under second-order MAML on the loop (refused by
name), and integer inputs (named with the float convention). Meta-gradients are compared
in float64 with an inner loop written out with ``torch.autograd.grad`` (no metaloop code)."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import metaloop as ml
from metaloop.meta import maml as maml_module

LR = 0.5


def batch(tasks=3, ways=3, shots=2, queries=2, shape=(6,), ints=None):
    g = torch.Generator().manual_seed(0)
    sy = torch.arange(ways).repeat(shots).repeat(tasks, 1)                 # [B, S]
    qy = torch.arange(ways).repeat(queries).repeat(tasks, 1)               # [B, Q]

    def x(n):
        if ints:
            return torch.randint(0, ints, (tasks, n, *shape), generator=g).double()
        return torch.randn(tasks, n, *shape, generator=g, dtype=torch.float64)
    return ml.TaskBatch(x(sy.shape[1]), sy, x(qy.shape[1]), qy)


def maml_ref(model, b, steps, first_order=False):
    """MAML's meta-gradient over all of ``model``'s parameters, written out with autograd,
    the parameters swapped in with ``torch.func.functional_call`` (no metaloop code);
    attention on torch's math kernel, the one with a double backward."""
    from torch.nn.attention import SDPBackend, sdpa_kernel

    p0 = {n: p.detach().clone().requires_grad_() for n, p in model.named_parameters()}

    def loss(theta, x, y):
        return F.cross_entropy(torch.func.functional_call(model, theta, (x,)), y)

    grads = {n: torch.zeros_like(p) for n, p in p0.items()}
    with sdpa_kernel([SDPBackend.MATH]):
        for i in range(b.num_tasks):
            theta = dict(p0)
            for _ in range(steps):
                g = torch.autograd.grad(loss(theta, b.support_x[i], b.support_y[i]),
                                        list(theta.values()), create_graph=not first_order)
                theta = {n: t - LR * gn for (n, t), gn in zip(theta.items(), g)}
            if first_order:                     # the query gradient at the adapted weights
                theta = {n: t.detach().requires_grad_() for n, t in theta.items()}
            q = loss(theta, b.query_x[i], b.query_y[i]) / b.num_tasks
            wrt = list(theta.values()) if first_order else list(p0.values())
            for n, gn in zip(p0, torch.autograd.grad(q, wrt, allow_unused=True)):
                if gn is not None:
                    grads[n] += gn
    return grads


def assert_grads_equal(got, want):
    assert list(got) == list(want)
    for n in want:
        torch.testing.assert_close(got[n], want[n], rtol=1e-9, atol=1e-12, msg=n)


class Tokens(nn.Module):
    """Token ids (stored as floats, cast back in forward) -> embedding -> mean -> head."""

    def __init__(self, **emb):
        super().__init__()
        self.emb, self.head = nn.Embedding(11, 8, **emb), nn.Linear(8, 3)

    def forward(self, x):
        return self.head(torch.tanh(self.emb(x.long())).mean(1))


def tokens(**emb):
    torch.manual_seed(1)
    return Tokens(**emb).double()


def id_batch():
    b = batch(shape=(7,), ints=11)
    sx = b.support_x.clone()
    sx[..., 0] = 0                               # every sequence holds the padding id
    return ml.TaskBatch(sx, b.support_y, b.query_x, b.query_y)


# -- nn.Embedding(padding_idx=...) -------------------------------------------------------

def test_this_torchs_vmap_sends_the_padding_row_a_gradient():
    """What the refusal rests on, measured in pure torch (the probe's own question)."""
    w = torch.randn(11, 4, dtype=torch.float64, requires_grad=True)
    ids = torch.randint(0, 11, (3, 5))
    ids[:, 0] = 0

    def f(delta, i):
        return F.embedding(i, w + delta, padding_idx=0).sum()

    vm, = torch.autograd.grad(torch.vmap(f)(torch.zeros(3, 11, 4, dtype=w.dtype), ids).sum(), w)
    assert maml_module.vmap_ignores_padding_idx() is bool(vm[0].abs().sum() > 0)


@pytest.mark.parametrize("first_order", [False, True])
def test_maml_over_an_adapted_padding_embedding_is_exact_on_auto(first_order):
    if not maml_module.vmap_ignores_padding_idx():
        pytest.skip("this torch's vmap respects padding_idx: nothing is refused")
    model, b = tokens(padding_idx=0), id_batch()
    with pytest.raises(ValueError, match=r"ignores padding_idx.*emb \(Embedding\)"):
        ml.meta.MAML(model, inner_lr=LR, first_order=first_order, loss="ce", batching="vmap")
    learner = ml.meta.MAML(model, inner_lr=LR, first_order=first_order, loss="ce")
    assert learner.batching == "loop"                  # "auto" would have chosen vmap
    got = learner.meta_gradient(b)
    assert_grads_equal(got, maml_ref(model, b, 1, first_order))
    assert got["emb.weight"][0].abs().max() == 0       # the padding row, as torch promises


def test_an_embedding_that_does_not_adapt_keeps_vmap():
    """ANIL adapts the head alone: the embedding's weight is not batched, and vmap is exact;
    as is an embedding without padding_idx."""
    model, b = tokens(padding_idx=0), id_batch()
    anil = ml.meta.ANIL(model, inner_lr=LR, loss="ce", batching="vmap")
    loop = ml.meta.ANIL(model, inner_lr=LR, loss="ce", batching="loop")
    assert_grads_equal(anil.meta_gradient(b), loop.meta_gradient(b))
    plain = tokens()
    assert ml.meta.MAML(plain, inner_lr=LR, loss="ce").batching == "vmap"


# -- attention in eval mode --------------------------------------------------------------

class Attention(nn.Module):
    def __init__(self, layer):
        super().__init__()
        self.inp, self.head = nn.Linear(3, 8), nn.Linear(8, 3)
        self.layer = layer

    def forward(self, x):
        h = self.inp(x.view(x.shape[0], -1, 3))
        if isinstance(self.layer, nn.MultiheadAttention):
            h, _ = self.layer(h, h, h, need_weights=False)
        else:
            h = self.layer(h)
        return self.head(torch.tanh(h).mean(1))


def attention(kind):
    torch.manual_seed(2)
    layer = (nn.MultiheadAttention(8, 2, batch_first=True) if kind == "mha" else
             nn.TransformerEncoderLayer(8, 2, dim_feedforward=16, dropout=0.0,
                                        batch_first=True))
    return Attention(layer).double().eval()


@pytest.mark.parametrize("kind", ["mha", "encoder_layer"])
@pytest.mark.parametrize("first_order", [False, True])
def test_attention_in_eval_mode_is_exact_under_vmap(kind, first_order):
    """The fused fast path (no derivative) is off while vmap runs, and set back after."""
    model, b = attention(kind), batch(shape=(12,))
    if kind == "encoder_layer" and not first_order:   # its LayerNorms: refused, named
        with pytest.raises(ValueError, match=r"LayerNorm.*nn\.GroupNorm or nn\.RMSNorm"):
            ml.meta.MAML(model, inner_lr=LR, loss="ce", batching="vmap")
        return
    learner = ml.meta.MAML(model, inner_lr=LR, first_order=first_order, loss="ce",
                           batching="vmap")
    assert_grads_equal(learner.meta_gradient(b), maml_ref(model, b, 1, first_order))
    assert torch.backends.mha.get_fastpath_enabled()
    if kind == "mha":                                   # "auto" ends on vmap too
        assert ml.meta.MAML(model, inner_lr=LR, loss="ce").batching == "vmap"


# -- in-place and out= ops on shared tensors -----------------------------------------------

def test_embedding_max_norm_is_named_under_vmap_and_auto_takes_the_loop():
    model, b = tokens(max_norm=1.0), batch(shape=(7,), ints=11)
    vmapped = ml.meta.MAML(model, inner_lr=LR, first_order=True, loss="ce", batching="vmap")
    with pytest.raises(ValueError, match="renormalised by max_norm"):
        vmapped.meta_gradient(b)
    auto = ml.meta.MAML(model, inner_lr=LR, first_order=True, loss="ce")
    assert auto.batching == "vmap"
    got = auto.meta_gradient(b)
    assert auto.batching == "loop"
    loop = ml.meta.MAML(model, inner_lr=LR, first_order=True, loss="ce", batching="loop")
    assert_grads_equal(got, loop.meta_gradient(b))


def test_spectral_norm_in_training_mode_is_named_under_vmap():
    torch.manual_seed(3)
    model = nn.Sequential(nn.utils.parametrizations.spectral_norm(nn.Linear(6, 8)), nn.Tanh(),
                          nn.Linear(8, 3)).double()
    learner = ml.meta.MAML(model, inner_lr=LR, first_order=True, loss="ce", batching="vmap")
    with pytest.raises(ValueError, match="changes a tensor in place"):
        learner.meta_gradient(batch())


# -- torch.compile and integer inputs ------------------------------------------------------

@pytest.mark.filterwarnings("ignore:`torch.jit.script_method` is deprecated:DeprecationWarning")
def test_a_compiled_module_under_second_order_maml_on_the_loop_is_refused_by_name():
    torch.manual_seed(4)
    model = torch.compile(nn.Sequential(nn.Conv2d(1, 4, 3), nn.Flatten(), nn.Linear(16, 3)))
    with pytest.raises(ValueError, match=r"torch\.compile'd module.*no double backward"
                                         r".*first_order=True"):
        ml.meta.MAML(model, inner_lr=LR, loss="ce")          # "auto": the loop for a conv
    ml.meta.MAML(model, inner_lr=LR, loss="ce", first_order=True)
    ml.meta.MAML(model, inner_lr=LR, loss="ce", batching="vmap")


@pytest.mark.filterwarnings("ignore:`torch.jit.script_method` is deprecated:DeprecationWarning")
def test_a_compiled_body_before_an_adapted_head_keeps_second_order_on_the_loop():
    """Only the head adapts: the compiled body is differentiated once, and the meta-gradient
    is the uncompiled model's."""
    torch.manual_seed(5)
    plain = nn.Sequential(nn.Sequential(nn.Linear(6, 8), nn.Tanh()), nn.Linear(8, 3)).double()
    compiled = nn.Sequential(torch.compile(plain[0]), plain[1])
    b = batch()
    head = ["1.weight", "1.bias"]
    got = ml.meta.MAML(compiled, inner_lr=LR, loss="ce", adapt=head,
                       batching="loop").meta_gradient(b)
    want = ml.meta.MAML(plain, inner_lr=LR, loss="ce", adapt=head,
                        batching="loop").meta_gradient(b)
    assert [n.replace("_orig_mod.", "") for n in got] == list(want)
    for (_, g), w in zip(got.items(), want.values()):
        torch.testing.assert_close(g, w, rtol=1e-9, atol=1e-12)


def test_integer_inputs_are_named_with_the_float_convention():
    b = batch(shape=(7,), ints=11)
    with pytest.raises(ValueError, match=r"token ids go in as floats.*x\.long\(\)"):
        ml.TaskBatch(b.support_x.long(), b.support_y, b.query_x.long(), b.query_y)


def test_overlapping_vmapped_calls_set_the_mha_fast_path_back():
    """Two threads inside ``vmap_tasks`` at once: the setting the first found is back after
    the last leaves (each thread saving and restoring its own left it off)."""
    import threading
    import time

    from metaloop.meta._common import vmap_tasks

    def slow(delay):
        def fn(x):
            time.sleep(delay)
            return x * 2
        return fn

    assert torch.backends.mha.get_fastpath_enabled()
    a = threading.Thread(target=lambda: vmap_tasks(slow(0.2), torch.ones(2, 3)))
    b = threading.Thread(target=lambda: vmap_tasks(slow(0.4), torch.ones(2, 3)))
    a.start()
    time.sleep(0.05)
    b.start()
    a.join()
    b.join()
    assert torch.backends.mha.get_fastpath_enabled()
