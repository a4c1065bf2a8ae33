"""Prompts are made of strings only: a label or wording of another type is refused, naming
its class and value, instead of being formatted into a prompt ("None", "1"); and the errors
of the head-fitting strategies name the public function that was called."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from metaloop.adapt import finetune, fit_head, linear_probe, lpft, optimize_prompt, zero_shot
from metaloop.models import MLP


class Bag(nn.Module):
    """A stand-in sentence encoder with normalised embeddings that records what it embeds."""

    normalize = True

    def __init__(self):
        super().__init__()
        self.head = nn.Linear(4, 2)
        self.embedded: list[str] = []

    def forward(self, x, head=True):
        f = F.normalize(x.float(), dim=-1)
        return self.head(f) if head else f

    def embed(self, texts):
        self.embedded += list(texts)
        return F.normalize(torch.tensor([[len(t), t.count("a"), t.count("o"), 1.0]
                                         for t in texts]), dim=-1)


def _support():
    return torch.rand(6, 4, generator=torch.Generator().manual_seed(0)), \
        torch.tensor([0, 1, 2, 0, 1, 2])


@pytest.mark.parametrize("labels, shown", [
    ([1, 2, 3], r"class 0's is int 1"),
    (["cat", None, "dog"], r"class 1's is NoneType None"),
    (["cat", "dog", b"cow"], r"class 2's is bytes b'cow'"),
])
def test_zero_shot_refuses_a_label_that_is_not_a_string(labels, shown):
    bag = Bag()
    with pytest.raises(ValueError, match=rf"^zero_shot: labels must be strings, one wording "
                                         rf"per class, but {shown}$"):
        zero_shot(bag, labels)
    assert bag.embedded == []                              # refused before any embedding
    out = zero_shot(bag, ["cat", "dog", "cow"])            # strings still work
    assert out.params["head.weight"].shape == (3, 4) and bag.embedded == ["cat", "dog", "cow"]


@pytest.mark.parametrize("call, shown", [
    (lambda bag: zero_shot(bag, ["cat", "", "cow"]),
     r"^zero_shot: class 1's label is empty \(''\): its prompt would name no label$"),
    (lambda bag: optimize_prompt(bag, *_support(), ["cat", "dog", "  "]),
     r"^optimize_prompt: class 2's wording is empty \('  '\): its prompts would name no "
     r"label$"),
    (lambda bag: optimize_prompt(bag, *_support(), [{"name": "cat", "gloss": ""},
                                                    {"name": "dog", "gloss": "a dog"},
                                                    {"name": "cow", "gloss": "a cow"}]),
     r"^optimize_prompt: class 0's 'gloss' wording is empty \(''\)"),
])
def test_an_empty_wording_is_refused_before_anything_is_embedded(call, shown):
    """An empty wording made prompts such as "This is about ." that name no label, and the
    prompt optimizer could pick them."""
    bag = Bag()
    with pytest.raises(ValueError, match=shown):
        call(bag)
    assert bag.embedded == []


@pytest.mark.parametrize("wordings, shown", [
    ([{"name": None}] * 3, r"wordings must be strings, but class 0's 'name' is NoneType None"),
    ([{"name": "cat"}, {"name": "dog"}, {"name": 7}],
     r"wordings must be strings, but class 2's 'name' is int 7"),
    (["cat", 5, "cow"], r"class 1's wordings must be a string or a dict of strings, "
                        r"got int 5"),
    ([{"name": "cat"}, {1: "dog"}, {"name": "cow"}],
     r"wording keys must be strings, but class 1 has the key int 1"),
])
def test_optimize_prompt_refuses_a_wording_that_is_not_a_string(wordings, shown):
    bag = Bag()
    with pytest.raises(ValueError, match=rf"^optimize_prompt: {shown}$"):
        optimize_prompt(bag, *_support(), wordings)
    assert bag.embedded == []
    out = optimize_prompt(bag, *_support(), [{"name": "cat"}, {"name": "dog"},
                                             {"name": "cow"}], templates=("{}",))
    assert out.info["wording"] == "name" and sorted(bag.embedded) == ["cat", "cow", "dog"]


@pytest.fixture
def mlp():
    torch.manual_seed(0)
    return MLP(in_dim=4, hidden=(8,), out_dim=3)


def test_an_unknown_solver_option_is_named_with_the_function_called(mlp):
    x, y = _support()
    with pytest.raises(ValueError, match=r"^linear_probe: unknown head solver option\(s\) "
                                         r"\['foo'\]; the options are lam, steps, lr"):
        linear_probe(mlp, x, y, foo=1)
    with pytest.raises(ValueError, match=r"^finetune: unknown head solver option\(s\) "
                                         r"\['foo'\]"):
        finetune(mlp, x, y, steps=1, warmup="ridge", warmup_kw={"foo": 1})
    assert linear_probe(mlp, x, y, lam=0.5).params["head.weight"].shape == (3, 8)


@pytest.mark.parametrize("call, who", [
    (lambda m, x, y: linear_probe(m, x, y), "linear_probe"),
    (lambda m, x, y: lpft(m, x, y, steps=1), "lpft"),
    (lambda m, x, y: finetune(m, x, y, steps=1, warmup="ridge"), "finetune"),
    (lambda m, x, y: finetune(m, x, y, steps=1), "finetune"),
])
def test_a_support_set_of_one_class_is_named_with_the_function_called(mlp, call, who):
    """The message speaks of the support set the caller gave, not of an ``n_classes``
    parameter that they never passed."""
    x = _support()[0]
    with pytest.raises(ValueError, match=rf"^{who}: the support set has one class \(every "
                                         rf"label is 0\); a classifier needs at least 2"):
        call(mlp, x, torch.zeros(6, dtype=torch.long))


@pytest.mark.parametrize("call, message", [
    (lambda m, x, y: lpft(m, x, y, steps=-1), r"^lpft: steps must be a non-negative int"),
    (lambda m, x, y: lpft(m, x, y, lr=0.0), r"^lpft: lr must be a positive number"),
    (lambda m, x, y: lpft(m, x, y, head_init="random"),
     r"^lpft: head_init='random' is given with warmup='logistic'"),
    (lambda m, x, y: lpft(m, x, y, warmup="svm"), r"^lpft: head solver must be one of"),
    (lambda m, x, y: lpft(m, x, y, warmup_kw={"lam": -1.0}),
     r"^lpft: lam must be finite and > 0"),
])
def test_lpft_errors_name_lpft_not_finetune(mlp, call, message):
    with pytest.raises(ValueError, match=message):
        call(mlp, *_support())


@pytest.mark.parametrize("call, message", [
    (lambda m, x, y: finetune(m, x, y, steps=1, warmup="svm"),
     r"^finetune: head solver must be one of \('logistic', 'ridge', 'sgd'\), got 'svm'$"),
    (lambda m, x, y: linear_probe(m, x, y, solver="svm"),
     r"^linear_probe: head solver must be one of"),
    (lambda m, x, y: linear_probe(m, x, y, lam=-1.0),
     r"^linear_probe: lam must be finite and > 0, got lam=-1.0$"),
    (lambda m, x, y: linear_probe(m, x, y, solver="ridge", lam=0.0),
     r"^linear_probe: lam must be finite and > 0"),
    (lambda m, x, y: linear_probe(m, x, y, solver="sgd", lr=0),
     r"^linear_probe: lr must be a positive number"),
    (lambda m, x, y: linear_probe(m, x, y, steps=0), r"^linear_probe: steps must be None"),
    (lambda m, x, y: finetune(m, x, y, steps=1, warmup="ridge", warmup_kw={"steps": 3}),
     r"^finetune: solver='ridge' \(closed-form\) does not use steps=3"),
])
def test_a_bad_solver_option_is_named_with_the_function_called(mlp, call, message):
    with pytest.raises(ValueError, match=message):
        call(mlp, *_support())


def test_fit_head_called_itself_still_names_fit_head():
    x, y = _support()
    with pytest.raises(ValueError, match=r"^fit_head: head solver must be one of"):
        fit_head(x, y, 3, "svm")
    with pytest.raises(ValueError, match=r"^fit_head: lam must be finite and > 0"):
        fit_head(x, y, 3, "logistic", lam=-1.0)
    with pytest.raises(ValueError, match=r"^fit_head: n_classes must be an int >= 2, got 1$"):
        fit_head(x, torch.zeros(6, dtype=torch.long), 1)


def test_fit_probe_names_itself_for_an_unknown_option_and_bad_input():
    """``fit_probe(..., foo=1)`` raised Python's TypeError naming ``fit_head()``, and its
    other errors said "fit_head:"."""
    from metaloop.adapt.probe import fit_probe

    x, y = torch.randn(6, 3), torch.arange(3).repeat(2)
    with pytest.raises(ValueError, match=r"^fit_probe: unknown head solver option\(s\) \['foo'\]"):
        fit_probe(lambda t: t, x, y, 3, foo=1)
    with pytest.raises(ValueError, match=r"^fit_probe: "):
        fit_probe(lambda t: t, x, y, 3, lam=-1.0)
