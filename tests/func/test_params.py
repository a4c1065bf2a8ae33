import pytest
import torch
from torch import nn

from metaloop.func import combine, forward, last_linear_names, params_of, partition
from metaloop.models import MLP, Conv4


def test_partition_combine_roundtrip():
    p = params_of(MLP())
    head, body = partition(p, lambda n: n.startswith("head"))
    assert sorted(head) == ["head.bias", "head.weight"]
    assert combine(body, head).keys() == p.keys()
    with pytest.raises(ValueError, match="unknown parameter names"):
        partition(p, ["nope"])
    with pytest.raises(ValueError, match="matches no parameter"):
        partition(p, lambda n: False)


def test_last_linear_and_functional_forward_do_not_mutate():
    m = Conv4(1, 8, 3, image_size=16)
    assert last_linear_names(m) == ["head.weight", "head.bias"]
    x = torch.randn(4, 1, 16, 16)
    p = {k: v.detach() * 0 for k, v in params_of(m).items() if k.startswith("head")}
    assert torch.equal(forward(m, p, x), torch.zeros(4, 3))
    assert m.head.weight.abs().sum() > 0
    with pytest.raises(ValueError, match="no nn.Linear"):
        last_linear_names(torch.nn.ReLU())


def test_last_linear_tied_to_an_earlier_layer_goes_by_the_first_name():
    """QA repro: the default head of a model whose output layer shares its input layer's
    weight was ['out.weight', 'out.bias'], and 'out.weight' is not a key of params_of (it
    keeps one name per tensor): every SGD learner refused the model."""
    m = torch.nn.Sequential()
    m.inp, m.body, m.out = (torch.nn.Linear(3, 3) for _ in range(3))
    m.out.weight = m.inp.weight
    names = last_linear_names(m)
    assert names == ["inp.weight", "out.bias"]
    head, _ = partition(params_of(m), names)
    assert head["inp.weight"] is m.out.weight


def test_forward_refuses_names_the_model_lacks():
    """QA repro: a misspelt leaf (head.wieght) was ignored and the model's own weight used;
    an unknown prefix failed deep in torch with an AttributeError."""
    m = MLP(2, (4,), 3)
    x = torch.randn(5, 2)
    with pytest.raises(ValueError, match=r"forward: params has names that MLP does not have: "
                                         r"'head.wieght' \(did you mean 'head.weight'\?\)"):
        forward(m, {"head.wieght": torch.zeros(3, 4)}, x)
    with pytest.raises(ValueError, match="'backbone.head.weight'"):
        forward(m, {"backbone.head.weight": torch.zeros(3, 4)}, x)
    many = {f"x{i}": torch.zeros(1) for i in range(7)}
    with pytest.raises(ValueError, match="and 2 more"):
        forward(m, many, x)
    with pytest.raises(TypeError, match="params must be a dict name -> tensor, got list"):
        forward(m, [("head.weight", torch.zeros(3, 4))], x)


def test_forward_accepts_buffers_tied_aliases_and_modules_added_later():
    bn = torch.nn.Sequential(torch.nn.Linear(2, 3), torch.nn.BatchNorm1d(3)).eval()
    x = torch.randn(4, 2)
    mean = torch.ones(3)
    out = forward(bn, {"1.running_mean": mean}, x)               # a buffer
    assert torch.allclose(out, bn(x) - 1 / (1 + 1e-5) ** 0.5, atol=1e-5)

    tied = torch.nn.Sequential(torch.nn.Linear(3, 3), torch.nn.Linear(3, 3))
    tied[1].weight = tied[0].weight                              # one tensor, two names
    z = torch.zeros(3, 3)
    assert torch.equal(forward(tied, {"1.weight": z}, torch.randn(2, 3))[:, 0],
                       tied[1].bias[0].expand(2).detach())

    m = MLP(2, (4,), 3)
    forward(m, {}, torch.randn(1, 2))                            # caches m's names
    m.extra = torch.nn.Linear(1, 1)                              # a module added since
    forward(m, {"extra.weight": torch.zeros(1, 1)}, torch.randn(1, 2))


def test_forward_reads_the_model_names_once(monkeypatch):
    """The check is on the inner loop's hot path: one set comparison per call, not a walk."""
    import metaloop.func.params as P
    m = MLP(2, (4,), 3)
    p = params_of(m)
    calls = []
    real = P.tensor_names
    monkeypatch.setattr(P, "tensor_names", lambda model: calls.append(1) or real(model))
    for _ in range(5):
        forward(m, p, torch.randn(1, 2))
    assert len(calls) == 1


def test_forward_check_keeps_vmap_and_grad_working():
    m = MLP(2, (4,), 3)
    p = {k: v.detach() for k, v in params_of(m).items()}
    batched = {k: v.expand(4, *v.shape) for k, v in p.items()}
    out = torch.func.vmap(lambda q, x: forward(m, q, x))(batched, torch.randn(4, 5, 2))
    assert out.shape == (4, 5, 3)
    g = torch.func.grad(lambda q: forward(m, q, torch.randn(5, 2)).sum())(p)
    assert g.keys() == p.keys()


class _HeadFirst(nn.Module):
    """A model of your own that registers its output layer ``head`` before its body."""

    def __init__(self):
        super().__init__()
        self.head = nn.Linear(6, 3)
        self.f, self.g = nn.Linear(4, 5), nn.Linear(5, 6)

    def forward(self, x, head=True):
        h = torch.tanh(self.g(torch.tanh(self.f(x))))
        return self.head(h) if head else h


def test_the_default_head_is_the_head_module_wherever_it_is_registered():
    """The last registered nn.Linear was taken: here ``g``, a body layer, so ANIL adapted
    the body's last layer and LoRA left it out, while the output layer was treated as body."""
    assert last_linear_names(_HeadFirst()) == ["head.weight", "head.bias"]
    seq = nn.Sequential(nn.Linear(2, 3), nn.Linear(3, 4))               # no head: the last
    assert last_linear_names(seq) == ["1.weight", "1.bias"]
    import metaloop as ml
    assert ml.meta.ANIL(_HeadFirst(), 0.1, loss="ce").inner.names == ["head.weight",
                                                                       "head.bias"]


def test_eval_mode_gives_each_module_its_own_mode_back():
    from metaloop.func.params import eval_mode
    model = nn.Sequential(nn.Linear(2, 2), nn.Dropout(0.5), nn.Sequential(nn.Dropout(0.5)))
    model[2].eval()                                     # a submodule kept in eval mode
    with eval_mode(model):
        assert not any(m.training for m in model.modules())
    assert model.training and model[1].training and not model[2].training
    assert not model[2][0].training
    with eval_mode(len):                                # a plain callable: nothing to do
        pass


@pytest.mark.parametrize("change", ["shape", "dtype", "device"])
def test_forward_names_a_param_unlike_the_models_when_the_call_fails(change):
    model = MLP(in_dim=3, hidden=(4,), out_dim=2)
    params = params_of(model)
    if change == "device":                      # "meta": a cheap stand-in for another device
        bad = {k: v.to("meta") for k, v in params.items()}
    else:
        bad = {**params, "head.weight": torch.zeros(5, 4) if change == "shape"
               else params["head.weight"].double()}
    with pytest.raises(ValueError, match=r"forward: params\['[a-z0-9.]+weight'\] is .* but "
                                         r"the model's tensor of that name is \[\d, \d\] "
                                         r"torch.float32 on cpu"):
        forward(model, bad, torch.randn(6, 3))


def test_forward_reraises_a_failure_that_is_not_the_params():
    model = nn.Sequential(nn.Linear(3, 2))
    with pytest.raises(RuntimeError, match="cannot be multiplied"):
        forward(model, params_of(model), torch.randn(6, 5))


def test_forward_under_torch_compile_guards_no_global_name_cache(monkeypatch):
    """Traced by torch.compile, the name check read the module-level weak cache of models'
    names, and dynamo guarded on an index into its keys: a model collected between the trace
    and the guard (the cache shrinking) failed compilation with an IndexError. Traced, the
    names are read off the model itself, and a misspelt one is still named."""
    import weakref

    from metaloop.func import params as params_mod

    class Untouchable(weakref.WeakKeyDictionary):
        def get(self, *args):
            raise AssertionError("the cache was read while compiling")

        def __getitem__(self, key):
            raise AssertionError("the cache was read while compiling")

        def __setitem__(self, key, value):
            raise AssertionError("the cache was written while compiling")

    monkeypatch.setattr(params_mod, "_TENSOR_NAMES", Untouchable())
    model = torch.nn.Linear(3, 2)
    x = torch.randn(4, 3)
    params = dict(model.named_parameters())
    compiled = torch.compile(lambda p, x: params_mod.forward(model, p, x), backend="eager",
                             fullgraph=True)
    assert torch.equal(compiled(params, x), model(x))
    torch._dynamo.reset()
