"""The adaptation functions leave the caller's model as it was, in any mode: features and
fitting in eval mode (no dropout, torch BatchNorm on its running statistics, never updated),
the model's own training flags restored; LoRA dropout acts while fitting, seeded by the
function's generator; and adapting works under ``no_grad`` and ``inference_mode``."""

from __future__ import annotations

import copy
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from metaloop.adapt import finetune, fit_head, fit_probe, linear_probe, lpft
from metaloop.func.params import forward

sys.path.insert(0, str(Path(__file__).parent))
from _text_models import tiny_text  # noqa: E402


class Net(nn.Module):
    """Linear, torch BatchNorm1d (running statistics), Dropout, and a head."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 8)
        self.bn = nn.BatchNorm1d(8)
        self.drop = nn.Dropout(0.5)
        self.head = nn.Linear(8, 3)

    def forward(self, x, head=True):
        f = self.drop(torch.relu(self.bn(self.fc(x))))
        return self.head(f) if head else f


def _task(seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(9, 4, generator=g), torch.arange(3).repeat(3)


def _net():
    torch.manual_seed(0)
    net = Net()
    with torch.no_grad():                        # statistics of their own, not 0 and 1
        net.bn.running_mean.uniform_(-1, 1)
        net.bn.running_var.uniform_(0.5, 2)
    net.train()
    net.drop.eval()                              # mixed flags: each must come back as it was
    return net


def _flags(model):
    return [(n, m.training) for n, m in model.named_modules()]


def _same(a, b):
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


ADAPT = {
    "linear_probe": lambda m, x, y: linear_probe(m, x, y),
    "linear_probe_sgd": lambda m, x, y: linear_probe(m, x, y, solver="sgd", steps=5),
    "finetune": lambda m, x, y: finetune(m, x, y, steps=3),
    "finetune_random_head": lambda m, x, y: finetune(
        m, x, y, steps=3, head_init="random", generator=torch.Generator().manual_seed(1)),
    "lpft": lambda m, x, y: lpft(m, x, y, steps=3),
}


@pytest.mark.parametrize("fn", ADAPT)
def test_a_model_in_train_mode_keeps_its_buffers_and_flags(fn):
    model = _net()
    x, y = _task()
    state, flags = copy.deepcopy(model.state_dict()), _flags(model)
    a = ADAPT[fn](model, x, y)
    assert _same(model.state_dict(), state)                 # running stats, batches counted
    assert _flags(model) == flags
    b = ADAPT[fn](model, x, y)
    assert _same(a.params, b.params)                        # no dropout noise in the fit
    q = torch.randn(5, 4, generator=torch.Generator().manual_seed(2))
    assert torch.equal(a(q), a(q))                          # nor in prediction
    # running stats, not the batch's (which would move the outputs by far more); close, not
    # equal: a batch of 10 may take another matmul kernel than one of 5 on some CPUs
    torch.testing.assert_close(a(q), a(torch.cat([q, x]))[:5], rtol=1e-5, atol=1e-6)
    assert _same(model.state_dict(), state) and _flags(model) == flags


def test_the_features_are_those_of_the_model_in_eval_mode():
    model = _net()
    x, y = _task()
    a = linear_probe(model, x, y, solver="ridge")
    ref = copy.deepcopy(model).eval()
    with torch.no_grad():
        feats = ref(x, head=False)
    w, b = fit_head(feats, y, 3, "ridge")
    assert torch.equal(a.params["head.weight"], w) and torch.equal(a.params["head.bias"], b)
    q = torch.randn(4, 4, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        assert torch.equal(a(q), forward(ref, a.params, q))


def test_fit_probe_calls_a_module_in_eval_mode_and_restores_it():
    model = _net()
    x, y = _task()
    state, flags = copy.deepcopy(model.state_dict()), _flags(model)
    fit_probe(lambda v: model(v, head=False), x, y, 3)          # a plain callable: as it is
    assert not _same(model.state_dict(), state)
    model = _net()
    p = fit_probe(model, x, y, 3)
    q = torch.randn(4, 4, generator=torch.Generator().manual_seed(3))
    assert torch.equal(p(q), p(q))
    assert _same(model.state_dict(), state) and _flags(model) == flags


def test_a_text_encoder_in_train_mode_gives_the_same_probe_twice():
    pytest.importorskip("transformers", reason="pip install -e '.[text]'")
    enc = tiny_text().train()                                   # BERT's dropout 0.1 on
    x = torch.randint(1, 60, (6, 7), generator=torch.Generator().manual_seed(0)).float()
    y = torch.arange(3).repeat(2)
    state = copy.deepcopy(enc.state_dict())
    a, b = linear_probe(enc, x, y), linear_probe(enc, x, y)
    assert _same(a.params, b.params)
    assert torch.equal(a(x), a(x))
    assert enc.training and all(m.training for m in enc.modules())
    assert _same(enc.state_dict(), state)


# LoRA dropout acts while fitting, and a seed reproduces it


def _lora_task():
    g = torch.Generator().manual_seed(0)
    return torch.randint(1, 60, (6, 7), generator=g).float(), torch.arange(3).repeat(2)


@pytest.fixture(scope="module")
def lora_models():
    pytest.importorskip("peft", reason="LoRA needs the text extra: pip install -e '.[text]'")
    from metaloop.adapt.lora import add_lora
    enc = tiny_text()
    out = {}
    for p in (0.0, 0.9):
        torch.manual_seed(0)                                   # the same adapters
        out[p] = add_lora(enc, r=2, target_modules=["query", "value"], dropout=p)
    return out


def test_lora_dropout_changes_the_fit_and_a_seed_reproduces_it(lora_models):
    from metaloop.adapt.lora import lora_finetune
    x, y = _lora_task()
    model = lora_models[0.9]
    flags, state = _flags(model), copy.deepcopy(model.state_dict())
    rng = torch.get_rng_state()
    runs = [lora_finetune(model, x, y, steps=3, generator=torch.Generator().manual_seed(s))
            for s in (5, 5, 6)]
    assert torch.equal(rng, torch.get_rng_state())             # the global state untouched
    assert _same(runs[0].params, runs[1].params)
    assert not _same(runs[0].params, runs[2].params)
    plain = lora_finetune(lora_models[0.0], x, y, steps=3)
    assert not _same(runs[0].params, plain.params)
    assert torch.equal(runs[0](x), runs[0](x))                 # predicting never drops
    assert _flags(model) == flags and _same(model.state_dict(), state)


def test_lora_dropout_without_a_generator_draws_from_the_global_state(lora_models):
    from metaloop.adapt.lora import lora_finetune
    x, y = _lora_task()
    torch.manual_seed(7)
    a = lora_finetune(lora_models[0.9], x, y, steps=3)
    torch.manual_seed(7)
    b = lora_finetune(lora_models[0.9], x, y, steps=3)
    c = lora_finetune(lora_models[0.9], x, y, steps=3)
    assert _same(a.params, b.params) and not _same(a.params, c.params)


# gradients whatever the caller's grad mode


GRAD_CASES = {
    "fit_head_sgd": lambda m, x, y: dict(zip("wb", fit_head(x, y, 3, "sgd", steps=4))),
    "linear_probe_sgd": lambda m, x, y: linear_probe(m, x, y, solver="sgd", steps=4).params,
    "finetune": lambda m, x, y: finetune(m, x, y, steps=3).params,
    "lpft_sgd": lambda m, x, y: lpft(m, x, y, steps=3, warmup="sgd").params,
}


@pytest.mark.parametrize("mode", ["no_grad", "inference_mode"])
@pytest.mark.parametrize("case", GRAD_CASES)
def test_adapting_under_no_grad_and_inference_mode_matches_gradients_on(case, mode):
    model = _net().eval()
    x, y = _task()
    ref = GRAD_CASES[case](model, x, y)
    ctx = torch.no_grad() if mode == "no_grad" else torch.inference_mode()
    with ctx:
        xs = x.clone()                        # an inference tensor under inference_mode
        out = GRAD_CASES[case](model, xs, y.clone())
    assert _same(ref, out)
    assert not any(t.is_inference() for t in out.values())


def test_lora_finetune_under_inference_mode_matches_gradients_on(lora_models):
    from metaloop.adapt.lora import lora_finetune
    x, y = _lora_task()
    ref = lora_finetune(lora_models[0.9], x, y, steps=2,
                        generator=torch.Generator().manual_seed(1))
    with torch.inference_mode():
        out = lora_finetune(lora_models[0.9], x.clone(), y.clone(), steps=2,
                            generator=torch.Generator().manual_seed(1))
    assert _same(ref.params, out.params)
