"""sgd_path / sgd_path_func argument checks: ValueErrors naming the argument, raised when
called (before any step), and unchanged results for valid arguments."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from metaloop.adapt.sgd import sgd_path, sgd_path_func
from metaloop.func.params import detach, forward, params_of
from metaloop.models import MLP

HEAD = ["head.weight", "head.bias"]


def _setup():
    torch.manual_seed(0)
    model = MLP(2, (4,), 3)
    params = detach(params_of(model), requires_grad=True)
    return (lambda p, x: forward(model, p, x)), params, torch.randn(5, 2), torch.randn(5, 3)


PATHS = [sgd_path, sgd_path_func]


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("kw,message", [
    ({"adapt_names": "head.bias"},
     r"adapt_names must be a list of parameter names, got the string 'head.bias'; "
     r"pass \['head.bias'\]"),
    ({"adapt_names": 3}, "adapt_names must be a list of parameter names, got int"),
    ({"adapt_names": []}, "adapt_names is empty"),
    ({"adapt_names": ["nope"]}, r"adapt_names has names that params does not have: \['nope'\]"),
    ({"adapt_names": ["head.bias", "head.bias"]}, r"adapt_names repeats \['head.bias'\]"),
    ({"steps": -1}, "steps must be a non-negative int, got -1"),
    ({"steps": 1.0}, "steps must be a non-negative int, got 1.0"),
    ({"steps": True}, "steps must be a non-negative int, got True"),
    ({"lr": -0.1}, r"lr must be a finite number > 0 \(or a \[rows, 2\] table"),
    ({"lr": 0.0}, "lr must be a finite number > 0"),
    ({"lr": float("nan")}, "lr must be a finite number > 0"),
    ({"lr": float("inf")}, "lr must be a finite number > 0"),
    ({"lr": "0.1"}, "lr must be a finite number > 0"),
    ({"lr": torch.tensor(0.1)}, r"an lr table must be \[rows >= 1, len\(adapt_names\)=2\]"),
    ({"lr": torch.full((1, 3), 0.1)}, r"an lr table must be .* got shape \[1, 3\]"),
    ({"lr": torch.full((1, 1), 0.1)}, r"an lr table must be .* got shape \[1, 1\]"),
    ({"lr": torch.full((0, 2), 0.1)}, r"an lr table must be .* got shape \[0, 2\]"),
    ({"lr": torch.ones(1, 2, dtype=torch.int64)}, "an lr table must be a float tensor"),
])
def test_bad_arguments_are_value_errors_naming_the_argument(path, kw, message):
    """QA repro: a str adapt_names gave KeyError 'h', an unknown name KeyError, steps=-1
    yielded the start alone, lr=-0.1 ascended, a [1, 3] table for 2 names was accepted
    and a [1, 1] one gave an IndexError deep in the step."""
    fwd, params, x, y = _setup()
    args = {"adapt_names": HEAD, "lr": 0.1, "steps": 2, **kw}
    with pytest.raises(ValueError, match=message):
        path(fwd, F.mse_loss, params, args["adapt_names"], x, y, args["lr"], args["steps"])


@pytest.mark.parametrize("path", PATHS)
def test_errors_come_from_the_call_not_the_first_step(path):
    fwd, params, x, y = _setup()
    with pytest.raises(ValueError, match="steps must be"):
        path(fwd, F.mse_loss, params, HEAD, x, y, 0.1, -1)      # no next() needed


def test_sgd_path_names_adapted_tensors_without_grad():
    fwd, params, x, y = _setup()
    frozen = detach(params)
    with pytest.raises(ValueError, match=r"the adapted tensors \['head.weight', 'head.bias'\] "
                                         r"do not require grad"):
        sgd_path(fwd, F.mse_loss, frozen, HEAD, x, y, 0.1, 1)
    assert len(list(sgd_path(fwd, F.mse_loss, frozen, HEAD, x, y, 0.1, 0))) == 1
    # the checkpointed step makes its own leaves, so it needs no requires_grad
    *_, last = sgd_path(fwd, F.mse_loss, frozen, HEAD, x, y, 0.1, 2, checkpoint=True)
    *_, ref = sgd_path(fwd, F.mse_loss, params, HEAD, x, y, 0.1, 2)
    assert torch.allclose(last["head.weight"], ref["head.weight"])


@pytest.mark.parametrize("path", PATHS)
def test_valid_arguments_keep_their_results(path):
    fwd, params, x, y = _setup()
    table = torch.tensor([[0.1, 0.2]])                            # [rows, len(names)]
    names = iter(HEAD)                                            # any non-string iterable
    steps = list(path(fwd, F.mse_loss, params, names, x, y, table, 3))
    assert len(steps) == 4
    loss = [float(F.mse_loss(fwd(p, x), y).detach()) for p in steps]
    assert loss[-1] < loss[0]
    for p in steps:
        assert torch.equal(p["body.fc0.weight"], params["body.fc0.weight"])
    # a plain float: step k moves each name by -lr * grad
    p1 = list(path(fwd, F.mse_loss, params, HEAD, x, y, 1, 1))[1]
    g = torch.autograd.grad(F.mse_loss(fwd(params, x), y), params["head.bias"])[0]
    assert torch.allclose(p1["head.bias"], params["head.bias"] - g)
    assert len(list(path(fwd, F.mse_loss, params, HEAD, x, y, 0.1, 0))) == 1


def test_sgd_path_func_checks_run_under_vmap():
    """The checks read names and shapes only: nothing breaks vmap tracing."""
    fwd, params, x, y = _setup()
    xb, yb = torch.randn(4, 5, 2), torch.randn(4, 5, 3)
    start = detach(params)

    def task(sx, sy):
        *_, last = sgd_path_func(fwd, F.mse_loss, start, HEAD, sx, sy, 0.1, 2)
        return last["head.weight"]
    out = torch.func.vmap(task)(xb, yb)
    assert out.shape == (4, 3, 4)
    *_, ref = sgd_path(fwd, F.mse_loss, params, HEAD, xb[1], yb[1], 0.1, 2)
    assert torch.allclose(out[1], ref["head.weight"], atol=1e-6)


def _tied(n_in=5, n_out=5):
    """An embedding-style model whose output layer shares its input layer's weight."""
    inp, out = torch.nn.Linear(n_in, n_out, bias=False), torch.nn.Linear(n_out, n_in)
    out.weight = inp.weight if n_in == n_out else out.weight
    return torch.nn.Sequential(inp, torch.nn.Tanh(), out)


def test_a_zero_head_that_another_layer_shares_is_refused_by_name():
    """A zero head on a tied weight zeroed the input layer too (and failed deep in torch at
    other ways); a learned head and an untied zero head are accepted."""
    from metaloop.adapt.sgd import SGDAdapter
    # the shared tensor goes by its first name, as named_parameters() gives it
    with pytest.raises(ValueError, match=r"would zero 0.weight, which the model also uses "
                                         r"as 2.weight \(tied weights\)"):
        SGDAdapter(_tied(), "ce", 0.1, 1, head_init="zero")
    assert SGDAdapter(_tied(), "ce", 0.1, 1).head == ["0.weight", "2.bias"]
    untied = torch.nn.Sequential(torch.nn.Linear(5, 4), torch.nn.Tanh(), torch.nn.Linear(4, 5))
    assert SGDAdapter(untied, "ce", 0.1, 1, head_init="zero").head == ["2.weight", "2.bias"]
