"""Exact meta-gradients on a model of the user's own: torch's normalisation kernels called
inline in ``forward`` (whose double backward is wrong under vmap), a parameter the forward
never uses, non-finite inputs, and a zero head that is no output layer. Meta-gradients are
compared, in float64, with an inner loop written out here with ``torch.autograd.grad``
(no metaloop code)."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import metaloop as ml
from metaloop.meta import maml as maml_module

LR = 0.5


class FuncLN(nn.Module):
    """``F.layer_norm`` called in forward, no norm module."""

    def __init__(self):
        super().__init__()
        self.fc1 = nn.Linear(6, 16)
        self.g, self.bb = nn.Parameter(torch.ones(16)), nn.Parameter(torch.zeros(16))
        self.head = nn.Linear(16, 3)

    def forward(self, x):
        return self.head(torch.tanh(F.layer_norm(self.fc1(x), (16,), self.g, self.bb)))


class FuncBN(FuncLN):
    """``F.batch_norm`` with batch statistics called in forward."""

    def forward(self, x):
        h = F.batch_norm(self.fc1(x), None, None, self.g, self.bb, training=True)
        return self.head(torch.relu(h))


class LayerNorm(nn.Module):
    """nanoGPT's LayerNorm: a module of its own around ``F.layer_norm``."""

    def __init__(self, n):
        super().__init__()
        self.weight, self.bias = nn.Parameter(torch.ones(n)), nn.Parameter(torch.zeros(n))

    def forward(self, x):
        return F.layer_norm(x, self.weight.shape, self.weight, self.bias, 1e-5)


class NanoLN(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1, self.ln, self.head = nn.Linear(6, 16), LayerNorm(16), nn.Linear(16, 3)

    def forward(self, x):
        return self.head(torch.tanh(self.ln(self.fc1(x))))


def inline_ln_ref(p, x):
    h = F.layer_norm(F.linear(x, p["fc1.weight"], p["fc1.bias"]), (16,), p["g"], p["bb"])
    return F.linear(torch.tanh(h), p["head.weight"], p["head.bias"])


def inline_bn_ref(p, x):
    h = F.linear(x, p["fc1.weight"], p["fc1.bias"])
    mu, var = h.mean(0), h.var(0, unbiased=False)            # plain arithmetic: exact
    h = (h - mu) / torch.sqrt(var + 1e-5) * p["g"] + p["bb"]
    return F.linear(torch.relu(h), p["head.weight"], p["head.bias"])


def nano_ref(p, x):
    h = F.layer_norm(F.linear(x, p["fc1.weight"], p["fc1.bias"]), (16,), p["ln.weight"],
                     p["ln.bias"], 1e-5)
    return F.linear(torch.tanh(h), p["head.weight"], p["head.bias"])


INLINE = [(FuncLN, inline_ln_ref, "layer_norm"),
          (FuncBN, inline_bn_ref, "batch_norm"),
          (NanoLN, nano_ref, "layer_norm")]


def batch(tasks=4, ways=3, shots=3, queries=3, d=6):
    g = torch.Generator().manual_seed(0)
    sy = torch.arange(ways).repeat(shots).repeat(tasks, 1)                 # [B, S]
    qy = torch.arange(ways).repeat(queries).repeat(tasks, 1)               # [B, Q]
    return ml.TaskBatch(torch.randn(tasks, sy.shape[1], d, generator=g, dtype=torch.float64),
                        sy,
                        torch.randn(tasks, qy.shape[1], d, generator=g, dtype=torch.float64),
                        qy)


def maml_ref(ref, model, b, steps, adapted=None):
    """Second-order MAML's meta-gradient, the inner loop written out with autograd."""
    p0 = {n: p.detach().clone().requires_grad_() for n, p in model.named_parameters()}
    names = adapted or list(p0)
    total = 0.0
    for i in range(b.num_tasks):
        sx, sy, qx, qy = b.support_x[i], b.support_y[i], b.query_x[i], b.query_y[i]
        theta = dict(p0)
        for _ in range(steps):
            g = torch.autograd.grad(F.cross_entropy(ref(theta, sx), sy),
                                    [theta[n] for n in names], create_graph=True)
            theta = {**theta, **{n: theta[n] - LR * gn for n, gn in zip(names, g)}}
        total = total + F.cross_entropy(ref(theta, qx), qy) / b.num_tasks
    g = torch.autograd.grad(total, list(p0.values()), allow_unused=True)
    return {n: torch.zeros_like(p0[n]) if gn is None else gn for n, gn in zip(p0, g)}


def assert_grads_equal(got, want):
    assert list(got) == list(want)
    for n in want:
        torch.testing.assert_close(got[n], want[n], rtol=1e-9, atol=1e-12, msg=n)


def model64(make, seed=1):
    torch.manual_seed(seed)
    return make().double()


# -- 1. torch's normalisation kernels called inline: never vmapped at second order --------

@pytest.mark.parametrize("steps", [1, 3])
@pytest.mark.parametrize("make,ref,op", INLINE)
def test_auto_batching_falls_back_to_the_exact_loop_for_inline_norms(make, ref, op, steps):
    """QA repro: a model calling F.layer_norm / F.batch_norm in forward (or nanoGPT's
    LayerNorm module around it) got vmap from "auto" and a meta-gradient off by 1e-3
    relative in float64 (up to 1e4 for batch_norm); the first second-order call now finds
    the kernel in the inner gradient and runs the loop, which is exact."""
    m = model64(make)
    b = batch()
    L = ml.meta.MAML(m, inner_lr=LR, inner_steps=steps, loss="ce")
    got = L.meta_gradient(b)
    assert L.batching == "loop"
    assert_grads_equal(got, maml_ref(ref, m, b, steps))
    assert_grads_equal(L.meta_gradient(b), maml_ref(ref, m, b, steps))      # and after


@pytest.mark.parametrize("make,ref,op", INLINE)
def test_auto_meta_loss_backward_is_exact_for_inline_norms(make, ref, op):
    m = model64(make)
    b = batch()
    L = ml.meta.MAML(m, inner_lr=LR, inner_steps=2, loss="ce")
    loss, _ = L.meta_loss(b)
    params = dict(m.named_parameters())
    got = dict(zip(params, torch.autograd.grad(loss, list(params.values()))))
    assert L.batching == "loop"
    assert_grads_equal(got, maml_ref(ref, m, b, 2))


@pytest.mark.parametrize("entry", ["meta_gradient", "meta_loss"])
@pytest.mark.parametrize("make,ref,op", INLINE)
def test_explicit_vmap_is_refused_naming_the_inline_norm(make, ref, op, entry):
    m = model64(make)
    L = ml.meta.MAML(m, inner_lr=LR, loss="ce", batching="vmap")
    with pytest.raises(ValueError, match=rf"wrong meta-gradient: .*torch's {op}.*"
                                         rf"batching='loop'"):
        getattr(L, entry)(batch())
    assert L.batching == "vmap"


@pytest.mark.parametrize("make,ref,op", INLINE)
def test_first_order_vmap_through_inline_norms_is_still_vmapped_and_exact(make, ref, op):
    m = model64(make)
    b = batch()
    L = ml.meta.MAML(m, inner_lr=LR, loss="ce", batching="vmap", first_order=True)
    got = L.meta_gradient(b)
    assert L.batching == "vmap"
    loop = ml.meta.MAML(m, inner_lr=LR, loss="ce", batching="loop", first_order=True)
    assert_grads_equal(got, loop.meta_gradient(b))


@pytest.mark.parametrize("make,ref,op", INLINE)
def test_anil_head_after_inline_norms_keeps_vmap_and_is_exact(make, ref, op):
    """The head alone adapts after the norm: its inner gradient runs no norm backward, so
    second-order vmap is exact and stays."""
    m = model64(make)
    b = batch()
    L = ml.meta.ANIL(m, inner_lr=LR, inner_steps=2, loss="ce", batching="vmap")
    got = L.meta_gradient(b)
    assert L.batching == "vmap"
    assert_grads_equal(got, maml_ref(ref, m, b, 2, adapted=["head.weight", "head.bias"]))


def test_the_probe_runs_once_per_learner(monkeypatch):
    calls = []
    probe = maml_module.probe_inner_graph

    def counted(*args):
        calls.append(1)
        return probe(*args)

    monkeypatch.setattr(maml_module, "probe_inner_graph", counted)
    m = model64(FuncLN)
    L = ml.meta.ANIL(m, inner_lr=LR, loss="ce", batching="vmap")
    for _ in range(3):
        L.meta_gradient(batch())
        L.meta_loss(batch())
    assert len(calls) == 1
    plain = ml.meta.MAML(model64(FuncLN), loss="ce", batching="loop")
    plain.meta_gradient(batch())
    assert len(calls) == 1                  # nothing to probe: MAML on the loop


def test_the_probe_leaves_the_random_state_and_running_statistics_alone():
    torch.manual_seed(0)
    m = nn.Sequential(nn.Linear(6, 8), nn.BatchNorm1d(8), nn.Dropout(0.5),
                      nn.Linear(8, 3)).double()
    L = ml.meta.MAML(m, loss="ce", batching="loop")
    stats = [b.clone() for b in m.buffers()]
    rng = torch.get_rng_state()
    b = batch()
    graph = maml_module.probe_inner_graph(L.inner, dict(m.named_parameters()),
                                          b.support_x[0], b.support_y[0])
    assert torch.equal(torch.get_rng_state(), rng)
    assert all(torch.equal(a, b) for a, b in zip(stats, m.buffers()))
    assert list(graph.norms) == ["batch_norm"] and graph.unused == []


# -- 2. a parameter the forward never uses ----------------------------------------------

class Unused(nn.Module):
    def __init__(self):
        super().__init__()
        self.body, self.out = nn.Linear(6, 8), nn.Linear(8, 3)
        self.proj = nn.Linear(8, 4)                                       # never used

    def forward(self, x):
        return self.out(torch.tanh(self.body(x)))


def unused_ref(p, x):
    return F.linear(torch.tanh(F.linear(x, p["body.weight"], p["body.bias"])),
                    p["out.weight"], p["out.bias"])


@pytest.mark.parametrize("kw", [{"batching": "loop"}, {"batching": "vmap"},
                                {"batching": "loop", "recompute_inner_loop": True},
                                {"batching": "threads"}])
def test_maml_treats_an_unused_parameter_as_having_zero_gradient(kw):
    """QA repro: the loop raised torch's "The differentiated Tensor at index 4 appears to
    not have been used in the graph" (meta_gradient and adapt), naming nothing."""
    m = model64(Unused)
    b = batch()
    L = ml.meta.MAML(m, inner_lr=LR, inner_steps=2, loss="ce", **kw)
    got = L.meta_gradient(b)
    want = maml_ref(unused_ref, m, b, 2, adapted=["body.weight", "body.bias", "out.weight",
                                                  "out.bias"])
    assert torch.count_nonzero(got["proj.weight"]) == 0
    assert_grads_equal(got, want)
    p = L.adapt(b.support_x[0], b.support_y[0])
    assert torch.equal(p["proj.weight"], m.proj.weight)
    path = L.adapt_path_batched(b.support_x, b.support_y)
    torch.testing.assert_close(path[-1]["out.weight"][0], p["out.weight"], rtol=1e-12,
                               atol=1e-14)
    assert torch.equal(path[-1]["proj.weight"][0], m.proj.weight)


@pytest.mark.parametrize("kw", [{}, {"inner_optimizer": "adam"}, {"batching": "vmap"}])
def test_reptile_adapts_a_model_with_an_unused_parameter(kw):
    m = model64(Unused)
    b = batch()
    L = ml.meta.Reptile(m, loss="ce", **kw)
    g = L.meta_gradient(b)
    assert torch.count_nonzero(g["proj.weight"]) == 0
    p = L.adapt(b.support_x[0], b.support_y[0])
    assert torch.equal(p["proj.weight"], m.proj.weight)


@pytest.mark.parametrize("batching", ["loop", "vmap"])
@pytest.mark.parametrize("entry", ["meta_gradient", "meta_loss", "adapt",
                                   "adapt_path_batched"])
def test_anil_refuses_a_default_head_the_forward_never_uses(entry, batching):
    """QA repro: ANIL took the unused Linear (registered last) as its head; the loop failed
    in autograd and vmap trained with no inner adaptation, silently."""
    L = ml.meta.ANIL(model64(Unused), inner_lr=LR, loss="ce", batching=batching)
    b = batch()
    call = {"meta_gradient": lambda: L.meta_gradient(b), "meta_loss": lambda: L.meta_loss(b),
            "adapt": lambda: L.adapt(b.support_x[0], b.support_y[0]),
            "adapt_path_batched": lambda: L.adapt_path_batched(b.support_x, b.support_y)}
    with pytest.raises(ValueError, match=r"never uses \['proj.weight', 'proj.bias'\].*"
                                         r"head=\[\.\.\.\] \(e.g. head=\['out.weight', "
                                         r"'out.bias'\]\)"):
        call[entry]()


@pytest.mark.parametrize("batching", ["loop", "vmap"])
def test_anil_with_the_used_head_named_matches_the_written_out_loop(batching):
    m = model64(Unused)
    b = batch()
    L = ml.meta.ANIL(m, inner_lr=LR, inner_steps=2, loss="ce", batching=batching,
                     head=["out.weight", "out.bias"])
    got = L.meta_gradient(b)
    assert_grads_equal(got, maml_ref(unused_ref, m, b, 2, adapted=["out.weight", "out.bias"]))


# -- 3. non-finite inputs ---------------------------------------------------------------

def nan_batch(name):
    b = batch()
    t = getattr(b, name).clone()
    t[1, 0, 0] = float("nan")
    fields = {k: getattr(b, k) for k in ("support_x", "support_y", "query_x", "query_y")}
    return ml.TaskBatch(**{**fields, name: t})


LEARNERS = {
    "MAML-loop": lambda: ml.meta.MAML(model64(Unused), loss="ce", batching="loop"),
    "MAML-vmap": lambda: ml.meta.MAML(model64(Unused), loss="ce", batching="vmap"),
    "ANIL": lambda: ml.meta.ANIL(model64(Unused), loss="ce", head=["out.weight", "out.bias"]),
    "ProtoNet": lambda: ml.meta.ProtoNet(model64(Unused)),
}


@pytest.mark.parametrize("name", ["support_x", "query_x"])
@pytest.mark.parametrize("entry", ["meta_gradient", "meta_loss"])
@pytest.mark.parametrize("learner", list(LEARNERS))
def test_a_nan_input_is_refused_by_name_not_returned_as_nan_gradients(learner, entry, name):
    """QA repro: one NaN in one task's support_x made every meta-gradient entry NaN, with
    no error, where adapt refuses it by name."""
    L = LEARNERS[learner]()
    with pytest.raises(ValueError, match=rf"{name} \[4, 9, 6\] has non-finite values "
                                         rf"\(NaN or inf\) in task 1\b"):
        getattr(L, entry)(nan_batch(name))


# -- 4. a zero head that is no output layer ----------------------------------------------

class OutNotLast(nn.Module):
    def __init__(self):
        super().__init__()
        self.body, self.classifier = nn.Linear(6, 8), nn.Linear(8, 3)
        self.aux = nn.Linear(8, 8)                        # a hidden layer, registered last

    def forward(self, x):
        return self.classifier(torch.tanh(self.aux(torch.tanh(self.body(x)))))


@pytest.mark.parametrize("batching", ["loop", "vmap"])
@pytest.mark.parametrize("build", [ml.meta.ANIL, ml.meta.MAML])
def test_a_zero_head_that_is_a_hidden_layer_is_named(build, batching):
    """QA repro: a shape error from deep in the forward pass ("params['aux.weight'] is
    [3, 8] ..."), not saying that aux was taken as the head nor how to name one."""
    L = build(model64(OutNotLast), loss="ce", head_init="zero", batching=batching)
    with pytest.raises(ValueError, match=r"took \['aux.weight', 'aux.bias'\] \(the model's "
                                         r"last nn.Linear, taken by default\) as the head.*"
                                         r"head=\[\.\.\.\]"):
        L.meta_gradient(batch())
    ok = build(model64(OutNotLast), loss="ce", head_init="zero", batching=batching,
               head=["classifier.weight", "classifier.bias"])
    ok.meta_gradient(batch())


def test_learned_step_sizes_fall_back_too_and_match_the_loop():
    m = model64(FuncLN)
    b = batch()
    auto = ml.meta.MAML(m, inner_lr=LR, inner_steps=2, loss="ce", learn_lr=True)
    assert auto.batching == "vmap"
    got = auto.meta_gradient(b)
    assert auto.batching == "loop"
    loop = ml.meta.MAML(m, inner_lr=LR, inner_steps=2, loss="ce", learn_lr=True,
                        batching="loop")
    loop.model.load_state_dict(auto.model.state_dict())
    assert_grads_equal(got, loop.meta_gradient(b))


def test_a_pickled_learner_keeps_its_fallback():
    import pickle

    L = ml.meta.MAML(model64(FuncLN), inner_lr=LR, loss="ce")
    L.meta_gradient(batch())
    copy = pickle.loads(pickle.dumps(L))
    assert copy.batching == "loop"
    copy.meta_gradient(batch())
