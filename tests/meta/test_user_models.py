"""A network of the user's own through the learners: tied weights, buffers, frozen and lazy
parameters, recurrent layers, dropout, outputs that are not one tensor. Meta-gradients are
compared, in float64, with autograd through an inner loop written out here on plain
tensors."""

import warnings

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import metaloop as ml


class Tied(nn.Module):
    """An output layer that shares the input layer's weight (as a language model's output
    shares its embedding): one Parameter, two names; ``named_parameters`` keeps the first."""

    def __init__(self):
        super().__init__()
        self.inp, self.body, self.out = nn.Linear(4, 4), nn.Linear(4, 4), nn.Linear(4, 4)
        self.out.weight = self.inp.weight

    def forward(self, x):
        return self.out(torch.tanh(self.body(torch.tanh(self.inp(x)))))


def tied_ref(p, x):
    h = torch.tanh(F.linear(torch.tanh(F.linear(x, p["inp.weight"], p["inp.bias"])),
                            p["body.weight"], p["body.bias"]))
    return F.linear(h, p["inp.weight"], p["out.bias"])                      # [N, 4]


class WithBuffers(nn.Module):
    """torch's BatchNorm1d (running statistics, an int64 counter), a float buffer and an
    integer buffer read by forward."""

    def __init__(self):
        super().__init__()
        self.l1, self.bn, self.l2 = nn.Linear(4, 6), nn.BatchNorm1d(6), nn.Linear(6, 3)
        self.register_buffer("shift", torch.full((6,), 0.5))
        self.register_buffer("count", torch.tensor(3))

    def forward(self, x):
        return self.l2(torch.tanh(self.bn(self.l1(x)) + self.shift * self.count))


def with_buffers_ref(p, x):
    h = F.batch_norm(F.linear(x, p["l1.weight"], p["l1.bias"]), None, None, p["bn.weight"],
                     p["bn.bias"], training=True, eps=1e-5)          # batch statistics
    return F.linear(torch.tanh(h + 0.5 * 3), p["l2.weight"], p["l2.bias"])   # [N, 3]


def batch(ways, tasks=3, shots=2, queries=3):
    g = torch.Generator().manual_seed(0)
    sy = torch.arange(ways).repeat_interleave(shots).repeat(tasks, 1)         # [B, S]
    qy = torch.arange(ways).repeat_interleave(queries).repeat(tasks, 1)       # [B, Q]
    return ml.TaskBatch(torch.randn(tasks, sy.shape[1], 4, generator=g, dtype=torch.float64),
                        sy,
                        torch.randn(tasks, qy.shape[1], 4, generator=g, dtype=torch.float64),
                        qy)


def maml_ref(ref, model, b, lr, steps, first_order, adapted=None):
    """MAML's meta-gradient over ``model``'s parameters, the inner loop written out."""
    p0 = {n: p.detach().clone().requires_grad_() for n, p in model.named_parameters()}
    names = adapted or list(p0)
    total = 0.0
    for i in range(b.num_tasks):
        sx, sy, qx, qy = b.task(i)
        theta = dict(p0)
        for _ in range(steps):
            g = torch.autograd.grad(F.cross_entropy(ref(theta, sx), sy),
                                    [theta[n] for n in names], create_graph=not first_order)
            theta = {**theta, **{n: theta[n] - lr * gn for n, gn in zip(names, g)}}
        total = total + F.cross_entropy(ref(theta, qx), qy) / b.num_tasks
    return dict(zip(p0, torch.autograd.grad(total, list(p0.values()))))


def assert_grads_equal(got, want):
    assert got.keys() == want.keys()
    for n in want:
        torch.testing.assert_close(got[n], want[n], rtol=1e-10, atol=1e-12, msg=n)


@pytest.mark.parametrize("batching", ["loop", "vmap"])
@pytest.mark.parametrize("first_order", [False, True])
def test_maml_adapts_a_tied_weight_once_with_both_uses_in_its_gradient(first_order, batching):
    """QA repro: every SGD learner refused a model whose last Linear's weight is tied to an
    earlier layer's ("unknown parameter names ['out.weight']"): the default head named the
    alias that named_parameters() leaves out."""
    torch.manual_seed(0)
    model, b = Tied().double(), batch(ways=4)
    learner = ml.meta.MAML(model, inner_lr=0.3, inner_steps=2, loss="ce",
                           first_order=first_order, batching=batching)
    assert "out.weight" not in learner.inner.names          # one tensor, adapted once
    assert_grads_equal(learner.meta_gradient(b),
                       maml_ref(tied_ref, model, b, 0.3, 2, first_order))
    adapted = learner.adapt(*b.task(0)[:2])
    assert "out.weight" not in adapted
    torch.testing.assert_close(learner.predict(adapted, b.query_x[0]),
                               tied_ref(adapted, b.query_x[0]))


def test_anil_on_a_tied_head_adapts_the_shared_weight_everywhere_it_is_used():
    torch.manual_seed(0)
    model, b = Tied().double(), batch(ways=4)
    learner = ml.meta.ANIL(model, inner_lr=0.3, inner_steps=2, loss="ce")
    assert_grads_equal(learner.meta_gradient(b),
                       maml_ref(tied_ref, model, b, 0.3, 2, False,
                                adapted=["inp.weight", "out.bias"]))


@pytest.mark.parametrize("first_order", [False, True])
def test_maml_with_buffers_matches_the_written_out_loop(first_order):
    """torch BatchNorm in training mode normalises with each call's batch statistics (the
    running statistics it updates are not read); buffers read by forward are constants."""
    torch.manual_seed(0)
    model, b = WithBuffers().double(), batch(ways=3)
    learner = ml.meta.MAML(model, inner_lr=0.3, inner_steps=3, loss="ce",
                           first_order=first_order)
    assert learner.batching == "loop"
    assert_grads_equal(learner.meta_gradient(b),
                       maml_ref(with_buffers_ref, model, b, 0.3, 3, first_order))


def frozen_first_layer():
    model = nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 3))
    model[0].weight.requires_grad_(False)
    return model


LEARNERS = {
    "MAML": lambda m: ml.meta.MAML(m, loss="ce"),
    "ANIL": lambda m: ml.meta.ANIL(m, loss="ce"),
    "Reptile": lambda m: ml.meta.Reptile(m, loss="ce"),
    "Pretrain": lambda m: ml.meta.Pretrain(m, loss="ce"),
    "R2D2": ml.meta.R2D2,
    "MetaOptNet": ml.meta.MetaOptNet,
    "ProtoNet": ml.meta.ProtoNet,
}


@pytest.mark.parametrize("name", LEARNERS)
def test_a_frozen_parameter_is_refused_by_name(name):
    """QA repro: MAML and ANIL failed deep in autograd ("One of the differentiated Tensors
    does not require grad"), and Reptile adapted and meta-trained the frozen weight."""
    with pytest.raises(ValueError, match=r"requires_grad=False: 0\.weight; .*trainable_only"):
        LEARNERS[name](frozen_first_layer())


@pytest.mark.parametrize("name", LEARNERS)
def test_a_lazy_module_is_refused_before_it_is_initialised(name):
    """QA repro: vmap (batching="auto" for an MLP) failed inside torch ("in_features inferred
    from input: 4 is not equal to in_features from self.weight: 0"), Reptile with torch's
    UninitializedParameter error."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)       # torch: lazy modules are new
        model = nn.Sequential(nn.LazyLinear(8), nn.Tanh(), nn.Linear(8, 3))
    with pytest.raises(ValueError, match=r"uninitialised parameters 0\.weight, 0\.bias .*"
                                         r"model\(x\)"):
        LEARNERS[name](model)
    model(torch.randn(2, 4))                                # initialised: accepted
    LEARNERS[name](model)


class Recurrent(nn.Module):
    def __init__(self, cell=nn.GRU):
        super().__init__()
        self.rnn, self.head = cell(2, 8, batch_first=True), nn.Linear(8, 3)

    def forward(self, x):                                   # x [N, T, 2]
        return self.head(self.rnn(x)[0][:, -1])             # [N, 3]


@pytest.mark.parametrize("cell", [nn.RNN, nn.LSTM, nn.GRU])
@pytest.mark.parametrize("name", [n for n in LEARNERS if n != "Pretrain"])
def test_auto_batching_runs_a_recurrent_model_on_the_loop(name, cell):
    """QA repro: batching="auto" chose vmap for a GRU model (no convolution or normalisation
    layer), which torch cannot run: "output with shape [6, 8] doesn't match the broadcast
    shape [2, 6, 8]" (MAML), "Batching rule not implemented for aten::gru.input" (ProtoNet)."""
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(0)
    y = torch.arange(3).repeat(2, 2)                                          # [B=2, 6]
    b = ml.TaskBatch(torch.randn(2, 6, 5, 2, generator=g), y,
                     torch.randn(2, 6, 5, 2, generator=g), y)
    learner = LEARNERS[name](Recurrent(cell))
    assert learner.batching == "loop"
    grads = learner.meta_gradient(b)
    assert all(torch.isfinite(v).all() for v in grads.values())


@pytest.mark.parametrize("make", [ml.meta.MAML, ml.meta.Reptile, ml.meta.ProtoNet])
def test_vmap_batching_of_a_recurrent_model_is_refused_by_layer(make):
    with pytest.raises(ValueError, match=r"batching='vmap' cannot run rnn \(LSTM\): "
                                         r"torch.func.vmap has no batching rule"):
        make(Recurrent(nn.LSTM), batching="vmap")


def three_way_batch():
    """Two float32 3-way tasks of 3-feature vectors, 2 support and 2 query examples a class."""
    g = torch.Generator().manual_seed(0)
    y = torch.arange(3).repeat(2, 2)                                          # [B=2, 6]
    return ml.TaskBatch(torch.randn(2, 6, 3, generator=g), y,
                        torch.randn(2, 6, 3, generator=g), y)


@pytest.mark.parametrize("make", [ml.meta.ProtoNet, ml.meta.R2D2, ml.meta.MetaOptNet])
def test_solved_heads_name_dropout_switched_on_after_vmap_was_chosen(make):
    """QA repro: built in eval mode with batching="vmap", then model.train(): the solved heads
    failed inside torch ("vmap: called random operation while in randomness error mode");
    now they name the layer, as MAML and Reptile do. With "auto" (which chose vmap in eval
    mode) the learner goes on with the loop instead."""
    model = nn.Sequential(nn.Linear(3, 8), nn.Dropout(0.3), nn.Linear(8, 3)).eval()
    learner = make(model, batching="vmap")
    model.train()
    b = three_way_batch()
    with pytest.raises(ValueError, match=r"batching='vmap' cannot run backbone\.1 \(Dropout\): "
                                         r"in training mode dropout"):
        learner.meta_gradient(b)
    model.eval()
    auto = make(model)
    assert auto.batching == "vmap"
    model.train()
    grads = auto.meta_gradient(b)
    assert auto.batching == "loop" and all(torch.isfinite(g).all() for g in grads.values())


class TwoOutputs(nn.Module):
    def __init__(self):
        super().__init__()
        self.body, self.head = nn.Linear(3, 8), nn.Linear(8, 3)

    def forward(self, x):
        h = torch.tanh(self.body(x))
        return self.head(h), h                              # (logits [N, 3], features [N, 8])


@pytest.mark.parametrize("batching", ["loop", "vmap"])
@pytest.mark.parametrize("name", [n for n in LEARNERS if n != "Pretrain"])
def test_a_model_returning_a_tuple_is_named(name, batching):
    """QA repro: "AttributeError: 'tuple' object has no attribute 'shape'" (MAML, Reptile),
    "... no attribute 'dim'" (the solved heads)."""
    learner = LEARNERS[name](TwoOutputs())
    learner.batching = batching
    b = three_way_batch()
    with pytest.raises(ValueError, match=r"(output must be|must return) one tensor of "
                                         r"(predictions|features) \[N, .*got tuple"):
        learner.meta_gradient(b)


class Attention(nn.Module):
    """Self-attention over the input read as 2 tokens of width 2 (torch's
    ``nn.MultiheadAttention``, which runs ``scaled_dot_product_attention``)."""

    def __init__(self):
        super().__init__()
        self.att = nn.MultiheadAttention(2, 1, batch_first=True)
        self.out = nn.Linear(4, 3)

    def forward(self, x):
        t = x.view(x.shape[0], 2, 2)                                            # [N, 2, 2]
        return self.out(self.att(t, t, t, need_weights=False)[0].flatten(1))     # [N, 3]


def attention_ref(p, x):
    t = x.view(x.shape[0], 2, 2)
    q, k, v = F.linear(t, p["att.in_proj_weight"], p["att.in_proj_bias"]).chunk(3, dim=-1)
    a = torch.softmax(q @ k.transpose(1, 2) / 2 ** 0.5, dim=-1) @ v             # [N, 2, 2]
    h = F.linear(a, p["att.out_proj.weight"], p["att.out_proj.bias"]).flatten(1)
    return F.linear(h, p["out.weight"], p["out.bias"])                          # [N, 3]


@pytest.mark.parametrize("first_order", [False, True])
def test_maml_second_order_through_torch_attention_matches_the_written_out_loop(first_order):
    """QA repro: second-order MAML on a model with torch attention failed on the CPU with
    "derivative for aten::_scaled_dot_product_flash_attention_for_cpu_backward is not
    implemented": the fused kernel has no double backward."""
    torch.manual_seed(0)
    model, b = Attention().double(), batch(ways=3)
    learner = ml.meta.MAML(model, inner_lr=0.3, inner_steps=2, loss="ce",
                           first_order=first_order, batching="loop")
    assert_grads_equal(learner.meta_gradient(b),
                       maml_ref(attention_ref, model, b, 0.3, 2, first_order))
    loss, _ = learner.meta_loss(b)
    assert torch.isfinite(loss)


@pytest.mark.parametrize("build", [
    lambda m, names: ml.meta.MAML(m, adapt=names),
    lambda m, names: ml.meta.ANIL(m, head=names),
    lambda m, names: ml.meta.Reptile(m, adapt=names),
])
def test_a_tied_weight_given_by_its_second_name_is_named_with_its_first(build):
    """A list that names the tied output weight as ``out.weight`` (the name the user wrote)
    was called unknown, though the tensor is there under ``inp.weight``."""
    with pytest.raises(ValueError, match=r"out\.weight is the same tensor as inp\.weight "
                                         r"\(tied weights\).*name it 'inp\.weight'"):
        build(Tied(), ["out.weight", "out.bias"])
    build(Tied(), ["inp.weight", "out.bias"])                # its first name: accepted


@pytest.mark.parametrize("build", [
    lambda m, pick: ml.meta.MAML(m, adapt=pick),
    lambda m, pick: ml.meta.ANIL(m, head=pick),
    lambda m, pick: ml.meta.Reptile(m, adapt=pick),
])
def test_a_predicate_that_tells_a_tied_weights_names_apart_is_refused(build):
    """``adapt=lambda n: n.startswith("out")`` selected only out.bias: the tied output
    weight goes by inp.weight, so the predicate's answer for out.weight was never asked and
    the weight silently stayed fixed."""
    with pytest.raises(ValueError, match=r"the selector chooses out\.weight but not "
                                         r"inp\.weight, which is the same tensor \(tied "
                                         r"weights, known as inp\.weight\): select both"):
        build(Tied(), lambda n: n.startswith("out"))
    both = build(Tied(), lambda n: n.startswith("out") or n == "inp.weight")
    assert both.inner.names == ["inp.weight", "out.bias"]    # the tied tensor, once


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_first_order_maml_under_vmap_batches_torch_attention(dtype):
    """QA repro: first-order MAML under vmap ran torch attention on its fused kernel, which
    has no batching rule: torch looped over the tasks and warned of "a performance drop"
    (batching="auto" picks vmap for such a model). vmap now runs the math kernel."""
    torch.manual_seed(0)
    model, b = Attention().to(dtype), batch(ways=3)
    b = ml.TaskBatch(b.support_x.to(dtype), b.support_y, b.query_x.to(dtype), b.query_y)
    learner = ml.meta.MAML(model, inner_lr=0.3, inner_steps=2, loss="ce", first_order=True,
                           batching="vmap")
    with warnings.catch_warnings():
        warnings.filterwarnings("error", message=".*performance drop")
        got = learner.meta_gradient(b)
    want = maml_ref(attention_ref, model, b, 0.3, 2, True)
    for k in want:
        torch.testing.assert_close(got[k], want[k], rtol=1e-4 if dtype == torch.float32
                                   else 1e-10, atol=1e-6 if dtype == torch.float32 else 1e-12)


@pytest.mark.parametrize("build", [
    lambda m: ml.meta.Reptile(m, inner_lr=0.3, loss="ce", batching="vmap"),
    lambda m: ml.meta.ProtoNet(m, batching="vmap"),
    lambda m: ml.meta.MAML(m, inner_lr=0.3, loss="ce", batching="vmap"),
])
def test_the_other_vmap_paths_batch_torch_attention_too(build):
    """Reptile's and the solved heads' vmap paths (meta-gradient, adapt_path_batched,
    predict_batched) ran the fused kernel as well, looping and warning."""
    torch.manual_seed(0)
    learner, b = build(Attention()), batch(ways=3)
    b = ml.TaskBatch(b.support_x.float(), b.support_y, b.query_x.float(), b.query_y)
    with warnings.catch_warnings():
        warnings.filterwarnings("error", message=".*performance drop")
        learner.meta_gradient(b)
        params = learner.adapt_path_batched(b.support_x, b.support_y)[-1]
        assert learner.predict_batched(params, b.query_x).shape == (3, 9, 3)


def test_vmap_tasks_runs_on_a_torch_without_the_attention_module(monkeypatch):
    """pyproject allows torch >= 2.1; torch.nn.attention came in 2.3. Every vmap path goes
    through vmap_tasks, so its import must not fail there."""
    import builtins

    from metaloop.meta._common import vmap_tasks

    real = builtins.__import__

    def no_attention(name, *args, **kwargs):
        if name == "torch.nn.attention":
            raise ImportError(name)
        return real(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_attention)
    x = torch.arange(6.0).view(2, 3)
    torch.testing.assert_close(vmap_tasks(lambda r: r * 2, x), x * 2)
