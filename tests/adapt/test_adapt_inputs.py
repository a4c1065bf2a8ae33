"""Inputs of the adaptation functions: options that would change nothing are refused, wrong
types are named, 16-bit models get a head of their dtype, and peft models and soft-prompt
lengths are checked up front."""

from __future__ import annotations

import sys
import warnings
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from metaloop.adapt import finetune, fit_head, init_head, linear_probe, lpft
from metaloop.adapt.heads import head_names
from metaloop.adapt.prompting import optimize_prompt
from metaloop.func.params import params_of
from metaloop.models import MLP

sys.path.insert(0, str(Path(__file__).parent))
from _text_models import tiny_text  # noqa: E402


@pytest.fixture
def mlp():
    torch.manual_seed(0)
    return MLP(in_dim=4, hidden=(8,), out_dim=3)


@pytest.fixture
def task():
    g = torch.Generator().manual_seed(0)
    return torch.randn(9, 4, generator=g), torch.arange(3).repeat(3)


# options that change nothing


@pytest.mark.parametrize("kw, match", [
    ({"warmup_kw": {"lam": 5.0}}, r"warmup_kw=\{'lam': 5.0\} is given without warmup"),
    ({"warmup": "ridge", "head_init": "random"}, "head_init='random' is given with warmup"),
])
def test_finetune_refuses_options_that_change_nothing(mlp, task, kw, match):
    with pytest.raises(ValueError, match=match):
        finetune(mlp, *task, steps=1, **kw)


def test_the_options_that_act_are_accepted(mlp, task):
    a = finetune(mlp, *task, steps=1, head_init="random",
                 generator=torch.Generator().manual_seed(0))
    b = finetune(mlp, *task, steps=1, head_init="random",
                 generator=torch.Generator().manual_seed(0))
    assert torch.equal(a.params["head.weight"], b.params["head.weight"])
    c = lpft(mlp, *task, steps=0, warmup_kw={"lam": 5.0})
    d = lpft(mlp, *task, steps=0)
    assert not torch.equal(c.params["head.weight"], d.params["head.weight"])
    # one generator given to every approach: where nothing random is drawn it is unused
    e = finetune(mlp, *task, steps=1, generator=torch.Generator().manual_seed(0))
    assert torch.equal(e.params["head.weight"], finetune(mlp, *task, steps=1).params[
        "head.weight"])


@pytest.mark.parametrize("call", [
    lambda m, x, y: finetune(m, x, y, steps=1, head_init="random", generator=5),
    lambda m, x, y: init_head(params_of(m), ("head.weight", "head.bias"), 3, "random", 5),
])
def test_a_generator_that_is_not_one_is_a_type_error_naming_it(mlp, task, call):
    with pytest.raises(TypeError, match=r"generator must be a torch.Generator or None, got "
                                        r"int 5.*manual_seed\(5\)"):
        call(mlp, *task)


@pytest.mark.parametrize("fn", [linear_probe, finetune])
def test_a_head_given_as_one_string_is_refused(mlp, task, fn):
    with pytest.raises(ValueError, match=r"the single string 'head' \(write "
                                         r"\['head.weight', 'head.bias'\]\)"):
        fn(mlp, *task, head="head")
    assert head_names(mlp, ["head.weight", "head.bias"]) == ("head.weight", "head.bias")


# 16-bit models


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("solver", ["logistic", "ridge", "sgd"])
def test_a_16_bit_model_gets_a_head_solved_in_float32_in_its_dtype(mlp, task, dtype, solver):
    model = mlp.to(dtype)
    x, y = task[0].to(dtype), task[1]
    a = linear_probe(model, x, y, solver=solver)
    with torch.no_grad():
        feats = model(x, head=False)
    w, b = fit_head(feats.float(), y, 3, solver)
    assert a.params["head.weight"].dtype == dtype
    assert torch.equal(a.params["head.weight"], w.to(dtype))
    assert torch.equal(a.params["head.bias"], b.to(dtype))
    assert a(x).dtype == dtype
    warm = lpft(model, x, y, steps=0, warmup=solver)
    assert torch.equal(warm.params["head.weight"], a.params["head.weight"])
    assert lpft(model, x, y, steps=2).params["head.weight"].dtype == dtype


# prompting


class Words(nn.Module):
    """A stand-in sentence encoder: normalised counts of a few words; inputs are text ids."""

    normalize = True
    VOCAB = ("cat", "dog", "purr", "bark", "pet")
    TEXTS = ("a pet that can purr", "a pet that can bark")

    def __init__(self):
        super().__init__()
        self.head = nn.Linear(len(self.VOCAB), 2)

    def _counts(self, texts):
        return F.normalize(torch.tensor([[t.split().count(w) for w in self.VOCAB]
                                         for t in texts], dtype=torch.float32), dim=-1)

    def forward(self, x, head=True):
        f = self._counts([self.TEXTS[int(i)] for i in x[:, 0]])
        return self.head(f) if head else f

    def embed(self, texts):
        return self._counts(texts)


def _support():
    return torch.tensor([[0.0], [1.0]]), torch.tensor([0, 1])


def test_optimize_prompt_refuses_one_string_for_the_wordings():
    """Of as many letters as classes: its letters would be taken for the classes' names."""
    with pytest.raises(ValueError, match=r"wordings must be a sequence of wordings, one per "
                                         r"class, got the single string 'ab'"):
        optimize_prompt(Words(), *_support(), "ab")


def test_wording_keys_in_another_order_are_the_same_keys():
    same = [{"name": "cat", "sound": "purr"}, {"name": "dog", "sound": "bark"}]
    swapped = [same[0], {"sound": "bark", "name": "dog"}]
    a = optimize_prompt(Words(), *_support(), same)
    b = optimize_prompt(Words(), *_support(), swapped)
    assert a.info == b.info
    assert torch.equal(a.params["head.weight"], b.params["head.weight"])


def test_different_wording_keys_are_named():
    bad = [{"name": "cat", "sound": "purr"}, {"name": "dog", "gloss": "bark"}]
    with pytest.raises(ValueError, match=r"class 0 has \['name', 'sound'\], but class 1 has "
                                         r"\['gloss', 'name'\] \(it lacks \['sound'\]\) "
                                         r"\(it adds \['gloss'\]\)"):
        optimize_prompt(Words(), *_support(), bad)


# soft prompts: peft models, and the encoder's positions


@pytest.fixture
def enc():
    pytest.importorskip("peft", reason="soft prompts need the text extra")
    return tiny_text()


def test_add_soft_prompt_refuses_a_model_with_lora_adapters_without_a_warning(enc):
    from metaloop.adapt.lora import add_lora
    from metaloop.adapt.soft_prompt import add_soft_prompt, is_prompt
    lora = add_lora(enc, r=2, target_modules=["query"])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(ValueError, match=r"already has peft layers \(encoder.encoder.layer"
                                             r".0.attention.self.query and 1 more"):
            add_soft_prompt(lora, 2)
        both = add_lora(add_soft_prompt(enc, 2), r=2, target_modules=["query"])  # the order
    assert any(is_prompt(n) for n, _ in both.named_parameters())


def test_add_soft_prompt_refuses_a_prompt_that_leaves_no_room_for_text(enc):
    from metaloop.adapt.soft_prompt import add_soft_prompt, soft_prompt_finetune
    assert enc.max_positions() == 64
    with pytest.raises(ValueError, match=r"num_virtual_tokens=64 leaves no room for text: the "
                                         r"encoder reads at most 64 token positions.*"
                                         r"num_virtual_tokens <= 63"):
        add_soft_prompt(enc, 64)
    x, y = torch.tensor([[5.0], [6.0]]), torch.tensor([0, 1])   # one token each: it fits
    a = soft_prompt_finetune(add_soft_prompt(enc, 63), x, y, steps=1)
    assert a(x).shape == (2, 2)
