"""Bad input to the adaptation strategies from a notebook: a clear ValueError naming the
argument and value, never a deep torch traceback, a NaN head or a silently wrong result."""

import re

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import metaloop.adapt
from metaloop.adapt import (
    InnerLRs,
    finetune,
    fit_head,
    fit_probe,
    head_logits,
    linear_probe,
    refine_prototypes,
    ridge_head,
    zero_shot,
)
from metaloop.adapt.prompting import optimize_prompt
from metaloop.models import MLP

NAN = float("nan")
INF = float("inf")


@pytest.fixture
def model():
    torch.manual_seed(0)
    return MLP(in_dim=4, hidden=(8,), out_dim=3)


@pytest.fixture
def task():
    g = torch.Generator().manual_seed(0)
    return torch.randn(6, 4, generator=g), torch.arange(3).repeat(2)


def features_of(model):
    return lambda x: model(x, head=False)


@pytest.mark.parametrize("kw", [{"lr": INF}, {"head_lr": INF}])
def test_finetune_refuses_an_infinite_rate(model, task, kw):
    with pytest.raises(ValueError, match=f"{next(iter(kw))} must be a positive number .*inf"):
        finetune(model, *task, steps=2, **kw)


@pytest.mark.parametrize("fn", [
    lambda m, x, y: finetune(m, x, y, steps=2),
    lambda m, x, y: linear_probe(m, x, y, solver="ridge"),
    lambda m, x, y: linear_probe(m, x, y, solver="sgd", steps=2),
])
def test_nan_support_inputs_are_named_not_turned_into_a_nan_head(model, task, fn):
    x, y = task
    x = x.clone()
    x[0, 0] = NAN
    with pytest.raises(ValueError, match="support_x .* non-finite"):
        fn(model, x, y)


@pytest.mark.parametrize("fn", [finetune, linear_probe])
def test_support_in_another_dtype_than_the_model_is_named(model, task, fn):
    x, y = task
    with pytest.raises(ValueError, match="support_x is torch.float64 .* torch.float32"):
        fn(model, x.double(), y)


def test_adapted_predictor_names_inputs_in_another_dtype(model, task):
    adapted = linear_probe(model, *task, solver="ridge")
    with pytest.raises(ValueError, match="Adapted: x is torch.float64"):
        adapted(task[0].double())


@pytest.mark.parametrize("solver", ["ridge", "sgd", "logistic"])
def test_fit_probe_names_labels_outside_the_head(model, task, solver):
    with pytest.raises(ValueError, match=r"labels must lie in \[0, n_classes=2\), found 2"):
        fit_probe(features_of(model), task[0], task[1], 2, solver=solver)


@pytest.mark.parametrize("solver", ["ridge", "sgd"])
def test_fit_probe_names_float_labels(model, task, solver):
    with pytest.raises(ValueError, match="labels must be int64 .* torch.float32"):
        fit_probe(features_of(model), task[0], task[1].float(), 3, solver=solver)


@pytest.mark.parametrize("n_classes", [0, 1, True, 3.0])
def test_fit_head_names_a_bad_class_count(n_classes):
    with pytest.raises(ValueError, match="n_classes must be an int >= 2"):
        fit_head(torch.randn(6, 4), torch.zeros(6, dtype=torch.long), n_classes, solver="sgd")


@pytest.mark.parametrize("solver", ["ridge", "sgd"])
def test_fit_head_refuses_nan_features(solver):
    f = torch.randn(6, 4)
    f[2, 1] = NAN
    with pytest.raises(ValueError, match="features .* non-finite"):
        fit_head(f, torch.arange(3).repeat(2), 3, solver=solver)


def test_fit_head_refuses_an_infinite_rate():
    with pytest.raises(ValueError, match="lr must be a positive number .*inf"):
        fit_head(torch.randn(6, 4), torch.arange(3).repeat(2), 3, solver="sgd", lr=INF)


def test_ridge_head_names_nan_features_instead_of_a_linalg_error():
    f = torch.randn(2, 5, 3)
    f[1, 2, 0] = NAN
    with pytest.raises(ValueError, match="ridge_head: .*NaN or inf"):
        ridge_head(f, torch.randn(2, 5, 2))


def test_ridge_head_still_solves_valid_input():
    g = torch.Generator().manual_seed(0)
    f, y = torch.randn(2, 5, 3, generator=g), torch.randn(2, 5, 2, generator=g)
    W = ridge_head(f, y, lam=0.5)
    ref = torch.linalg.solve(f.mT @ f + 0.5 * torch.eye(3), f.mT @ y)
    torch.testing.assert_close(W, ref, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("what", ["W", "bias"])
def test_head_logits_names_a_dtype_mismatch(what):
    f, W, b = torch.randn(2, 4, 3), torch.randn(2, 3, 5), torch.randn(2, 5)
    if what == "W":
        W = W.double()
    else:
        b = b.double()
    with pytest.raises(ValueError, match=f"head_logits: {what} is torch.float64"):
        head_logits(f, W, b)


@pytest.mark.parametrize("scale", [INF, NAN, -1.0, "1"])
def test_refine_prototypes_refuses_a_bad_number_scale(scale):
    protos, queries = torch.randn(1, 3, 4), torch.randn(1, 5, 4)
    with pytest.raises(ValueError, match="scale must be > 0"):
        refine_prototypes(protos, queries, scale, 2)


def test_refine_prototypes_refuses_a_temperature_given_as_a_string():
    with pytest.raises(ValueError, match="temperature must be a finite number > 0"):
        refine_prototypes(torch.randn(1, 3, 4), torch.randn(1, 5, 4), 1.0, 2, temperature="0.5")


@pytest.mark.parametrize("init", [INF, NAN, 0.0, -0.1, "0.1", True])
def test_inner_lrs_refuses_a_bad_initial_rate(model, init):
    with pytest.raises(ValueError, match="InnerLRs: init .* finite number > 0"):
        InnerLRs(model, 2, 1, init)


class Bag(nn.Module):
    """A stand-in sentence encoder with normalised embeddings (what prompting needs)."""

    normalize = True

    def __init__(self):
        super().__init__()
        self.head = nn.Linear(4, 2)

    def forward(self, x, head=True):
        f = F.normalize(x.float(), dim=-1)
        return self.head(f) if head else f

    def embed(self, texts):
        return F.normalize(torch.tensor([[len(t), t.count("a"), t.count("o"), 1.0]
                                         for t in texts]), dim=-1)


def test_zero_shot_refuses_one_string_for_the_labels():
    with pytest.raises(ValueError, match="labels must be a sequence .* single string 'dog'"):
        zero_shot(Bag(), "dog")


@pytest.mark.parametrize("scale", [0.0, -20.0, INF])
def test_zero_shot_refuses_a_bad_scale(scale):
    with pytest.raises(ValueError, match="scale must be a finite number > 0"):
        zero_shot(Bag(), ["cat", "dog"], scale=scale)


@pytest.mark.parametrize("kw, message", [
    ({"mixes": ()}, "mixes must be one or more"),
    ({"mixes": (-1.0,)}, "mixes must be one or more"),
    ({"scale": 0}, "scale must be a finite number > 0"),
    ({"templates": "a {}"}, "templates must be a sequence"),
])
def test_optimize_prompt_names_bad_options(kw, message):
    x, y = torch.rand(4, 4), torch.tensor([0, 1, 0, 1])
    with pytest.raises(ValueError, match=message):
        optimize_prompt(Bag(), x, y, ["cat", "dog"], **kw)


@pytest.mark.parametrize("kw, message", [
    ({"alpha": 0.0}, "LoRA alpha must be a finite number > 0"),
    ({"alpha": INF}, "LoRA alpha must be a finite number > 0"),
    ({"alpha": "16"}, "LoRA alpha must be a finite number > 0"),
    ({"dropout": 1.0}, r"LoRA dropout must be a probability in \[0, 1\)"),
    ({"dropout": -0.1}, r"LoRA dropout must be a probability in \[0, 1\)"),
])
def test_add_lora_names_a_bad_scale_or_dropout(model, kw, message):
    pytest.importorskip("peft")
    from metaloop.adapt import add_lora
    with pytest.raises(ValueError, match=message):
        add_lora(model, r=2, **kw)


def test_newton_head_names_nan_features_instead_of_a_linalg_error():
    from metaloop.adapt import newton_head
    f = torch.randn(1, 6, 3)
    f[0, 0, 0] = NAN
    with pytest.raises(ValueError, match="newton_head: .*NaN or inf"):
        newton_head(f, torch.arange(3).repeat(2)[None], 3)


def test_support_on_another_device_than_the_model_is_named(model, task):
    x, y = task
    with pytest.raises(ValueError, match="support_x is on meta but the model's parameters are "
                                         "on cpu"):
        finetune(model, x.to("meta"), y, steps=2)


@pytest.mark.parametrize("template", ["{}{}", "a {kind} of {}", "a { of {}", "{} }", "{!r}"])
def test_a_template_with_another_field_or_a_lone_brace_is_named(template):
    """``template.format(wording)`` raised IndexError / KeyError / a format ValueError that
    named neither the template nor the prompt functions."""
    with pytest.raises(ValueError, match=r"template must contain '\{\}' once and no other "
                                         r"braces"):
        zero_shot(Bag(), ["cat", "dog"], template=template)
    x, y = torch.rand(4, 4), torch.tensor([0, 1, 0, 1])
    with pytest.raises(ValueError, match=r"templates must contain '\{\}' once .*"
                                         + re.escape(repr(template))):
        optimize_prompt(Bag(), x, y, ["cat", "dog"], templates=("{}", template))


def test_literal_braces_in_a_template_are_kept():
    a = zero_shot(Bag(), ["cat", "dog"], template="{{a}} {}", scale=1.0)
    torch.testing.assert_close(a.params["head.weight"], Bag().embed(["{a} cat", "{a} dog"]))


@pytest.mark.parametrize("fn", ["finetune", "lpft", "linear_probe", "lora_finetune"])
def test_adapters_name_a_model_that_is_not_a_module(fn):
    x, y = torch.randn(6, 8), torch.arange(6) % 3
    with pytest.raises(ValueError, match=r"model must be a torch.nn.Module, got str"):
        getattr(metaloop.adapt, fn)("mlp", x, y)


@pytest.mark.parametrize("fn", ["finetune", "lpft", "linear_probe"])
def test_adapters_name_uint8_inputs_not_a_torch_matmul_error(fn):
    model = MLP(in_dim=8, hidden=(16,), out_dim=3)
    x, y = torch.randint(0, 255, (6, 8), dtype=torch.uint8), torch.arange(6) % 3
    with pytest.raises(ValueError, match=r"support_x is torch.uint8 but inputs must be real "
                                         r"floating point"):
        getattr(metaloop.adapt, fn)(model, x, y)
