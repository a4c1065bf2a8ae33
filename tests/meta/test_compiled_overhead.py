"""The per-step work around MAML's vmapped (and compiled) meta-gradient, made cheaper, still
checks what it checked: dropout or BatchNorm switched on (or added) after compiled steps,
NaN in a later batch, a batch of another dtype, a compiler gone missing, and the metrics
that now come out of the compiled function (``_strategies.vmapped_meta_loss``)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import metaloop as ml
from metaloop.meta import MAML
from metaloop.meta._common import _submodules, check_batch, check_finite_batch, vmap_refusal
from metaloop.meta._strategies import grads_on, math_attention
from metaloop.tasks.batch import TaskBatch


def _regression(seed: int = 0, tasks: int = 4) -> TaskBatch:
    g = torch.Generator().manual_seed(seed)
    return TaskBatch(*(torch.randn(tasks, 5, 1, generator=g) for _ in range(4)))


def _classification(seed: int = 0, tasks: int = 3) -> TaskBatch:
    g = torch.Generator().manual_seed(seed)
    return TaskBatch(torch.randn(tasks, 6, 4, generator=g), torch.arange(6).repeat(tasks, 1) % 3,
                     torch.randn(tasks, 9, 4, generator=g), torch.arange(9).repeat(tasks, 1) % 3)


def _mlp(*extra: nn.Module) -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(1, 8), nn.ReLU(), *extra, nn.Linear(8, 1))


@pytest.fixture(params=[True, False], ids=["compiled", "eager"])
def compiled(request):
    return request.param


def test_dropout_switched_on_after_three_steps_is_refused_by_name(compiled):
    model = _mlp(nn.Dropout(0.5).eval())
    learner = MAML(model, 0.01, 1, loss="mse", batching="vmap", compile=compiled)
    for seed in range(3):
        learner.meta_gradient(_regression(seed))
    model[2].train()
    with pytest.raises(ValueError, match=r"batching='vmap' cannot run 2 \(Dropout\)"):
        learner.meta_gradient(_regression(3))
    with pytest.raises(ValueError, match=r"cannot run 2 \(Dropout\)"):
        learner.meta_loss(_regression(3))
    model[2].eval()                                     # and off again: runs
    learner.meta_gradient(_regression(4))


def test_a_layer_added_after_compiled_steps_is_refused_by_name(compiled):
    """Nothing of the model's structure is cached: a dropout layer (in training mode)
    added after the first steps, deep in a submodule, is found at the next step."""
    inner = nn.Sequential(nn.Linear(8, 8))
    model = nn.Sequential(nn.Linear(1, 8), inner, nn.ReLU(), nn.Linear(8, 1))
    learner = MAML(model, 0.01, 1, loss="mse", batching="vmap", compile=compiled)
    for seed in range(3):
        learner.meta_gradient(_regression(seed))
    inner.add_module("drop", nn.Dropout(0.1))
    with pytest.raises(ValueError, match=r"cannot run 1\.drop \(Dropout\)"):
        learner.meta_gradient(_regression(3))
    inner.drop = nn.BatchNorm1d(8)           # replaced in place: the same registry entry
    with pytest.raises(ValueError, match=r"cannot run 1\.drop \(BatchNorm1d\).*running "
                                         r"statistics"):
        learner.meta_gradient(_regression(3))


# torch's vmap of an eval-mode BatchNorm warns of its slow fallback (batch_norm_no_training)
@pytest.mark.filterwarnings("ignore:There is a performance drop:UserWarning")
def test_batchnorm_with_running_stats_switched_on_is_refused(compiled):
    model = _mlp(nn.BatchNorm1d(8).eval())
    learner = MAML(model, 0.01, 1, first_order=True, loss="mse", batching="vmap",
                   compile=compiled)
    learner.meta_gradient(_regression(0))
    model.train()
    with pytest.raises(ValueError, match=r"cannot run 2 \(BatchNorm1d\)"):
        learner.meta_gradient(_regression(1))


@pytest.mark.parametrize("field", ["support_x", "support_y", "query_x", "query_y"])
def test_nan_in_the_fifth_batch_is_named(compiled, field):
    learner = MAML(_mlp(), 0.01, 1, loss="mse", batching="vmap", compile=compiled)
    for seed in range(4):
        learner.meta_gradient(_regression(seed))
    bad = _regression(4)
    getattr(bad, field)[2, 1, 0] = float("nan")
    getattr(bad, field)[3, 0, 0] = float("inf")
    with pytest.raises(ValueError, match=rf"MAML: the TaskBatch's {field} \[4, 5, 1\] has "
                                         rf"non-finite values \(NaN or inf\) in tasks 2, 3;"):
        learner.meta_gradient(bad)
    with pytest.raises(ValueError, match=rf"{field} .* tasks 2, 3;"):
        learner.meta_loss(bad)


def test_a_sum_that_overflows_is_no_false_alarm():
    """The one-read check sums each tensor; a sum that overflows (float32, finite values)
    has every value checked, and they are finite: no error."""
    batch = _regression()
    batch.support_x.fill_(3e38)
    check_finite_batch("MAML", batch)                   # finite: passes
    batch.support_x[1, 2, 0] = -float("inf")
    with pytest.raises(ValueError, match=r"support_x \[4, 5, 1\] has non-finite values .* "
                                         r"in task 1;"):
        check_finite_batch("MAML", batch)


def test_a_batch_in_another_dtype_after_compiled_steps_is_named(compiled):
    model = _mlp()
    learner = MAML(model, 0.01, 1, loss="mse", batching="vmap", compile=compiled)
    learner.meta_gradient(_regression(0))
    with pytest.raises(ValueError, match=r"TaskBatch: support_x is torch.float64 but the "
                                         r"model's parameters are torch.float32"):
        learner.meta_gradient(_regression(1).to(dtype=torch.float64))
    model.double()                      # the model cast after construction: read each step
    with pytest.raises(ValueError, match=r"support_x is torch.float32 but the model's "
                                         r"parameters are torch.float64"):
        learner.meta_gradient(_regression(1))
    learner.meta_gradient(_regression(1).to(dtype=torch.float64))


def test_check_batch_with_the_params_gives_the_same_messages():
    """``check_batch(..., params)`` skips ``check_inputs`` only for a batch that plainly
    suits the model; every other batch gets its message."""
    model = _mlp()
    params = dict(model.named_parameters())
    good = _regression()
    assert check_batch(good, model, "mse", params) is good
    bad = [good.to(dtype=torch.float64), _classification()]
    for batch in bad:
        with pytest.raises(ValueError) as want:
            check_batch(batch, model, "mse")
        with pytest.raises(ValueError) as got:
            check_batch(batch, model, "mse", params)
        assert str(got.value) == str(want.value)
    mixed = _mlp()
    mixed[0].double()                    # two float dtypes: not checked for dtype, as before
    assert check_batch(good, mixed, "mse", dict(mixed.named_parameters())) is good


def test_a_compiler_gone_after_compiled_steps_is_still_named(tmp_path):
    """The compiler check runs at every compiled step (only a working compiler's search
    is remembered, per ``cpp.cxx`` setting): a setting changed to a broken one after
    steps gets the advice, not inductor's traceback."""
    inductor_config = pytest.importorskip("torch._inductor.config")
    learner = MAML(_mlp(), 0.01, 1, loss="mse", batching="vmap", compile=True)
    learner.meta_gradient(_regression(0))
    fake = tmp_path / "g++"
    fake.symlink_to("/bin/false")
    with inductor_config.patch({"cpp.cxx": (None, str(fake))}):
        with pytest.raises(RuntimeError, match=r"MAML\(compile=True\) needs a C\+\+ "
                                               r"compiler .* install g\+\+ or set "
                                               r"compile=False"):
            learner.meta_gradient(_regression(1))
    learner.meta_gradient(_regression(1))


@pytest.mark.parametrize("first_order", [False, True])
def test_compiled_metrics_and_gradients_match_eager(first_order):
    """The compiled function hands back the meta-loss and (class labels) the accuracy
    itself: the same numbers as the eager path's ``batch_metrics``."""
    torch.manual_seed(0)
    model = ml.models.MLP(4, (8,), 3)
    eager = MAML(model, 0.3, 1, first_order, loss="ce", batching="vmap")
    fused = MAML(model, 0.3, 1, first_order, loss="ce", batching="vmap", compile=True)
    for seed in range(2):
        batch = _classification(seed)
        g1, m1 = eager.meta_gradient(batch, with_metrics=True)
        g2, m2 = fused.meta_gradient(batch, with_metrics=True)
        assert m1.keys() == m2.keys() == {"loss", "accuracy"}
        for k in m1:
            assert not m2[k].requires_grad and m2[k].dim() == 0
            assert torch.allclose(m1[k], m2[k], atol=1e-6)
        assert all(torch.allclose(g1[k], g2[k], rtol=1e-4, atol=1e-6) for k in g1)
        loss, metrics = fused.meta_loss(batch)
        assert loss.requires_grad and torch.allclose(loss.detach(), metrics["loss"])
    reg = MAML(_mlp(), 0.01, 1, first_order, loss="mse", batching="vmap", compile=True)
    _, m = reg.meta_gradient(_regression(), with_metrics=True)
    assert set(m) == {"loss"}


def test_compiled_meta_gradient_under_no_grad_and_inference_mode():
    learner = MAML(_mlp(), 0.01, 1, loss="mse", batching="vmap", compile=True)
    batch = _regression()
    want = learner.meta_gradient(batch)
    with torch.no_grad():
        got = learner.meta_gradient(batch)
    with torch.inference_mode():
        inf = learner.meta_gradient(_regression())
    for k in want:
        assert torch.allclose(got[k], want[k]) and torch.allclose(inf[k], want[k])
    assert torch.is_grad_enabled()


def _sdp_flags() -> tuple[bool, ...]:
    b = torch.backends.cuda
    return (b.flash_sdp_enabled(), b.mem_efficient_sdp_enabled(), b.math_sdp_enabled(),
            b.cudnn_sdp_enabled())


def test_math_attention_is_sdpa_kernel_math_for_second_order_only():
    from torch.nn.attention import SDPBackend, sdpa_kernel
    before = _sdp_flags()
    with sdpa_kernel([SDPBackend.MATH]):
        want = _sdp_flags()
    with math_attention(False):
        assert _sdp_flags() == want
    assert _sdp_flags() == before
    torch.backends.cuda.enable_flash_sdp(False)         # a switch the caller set: kept
    try:
        with pytest.raises(KeyError), math_attention(False):
            raise KeyError("restored on an error too")
        assert _sdp_flags() == (False, *before[1:])
    finally:
        torch.backends.cuda.enable_flash_sdp(before[0])
    with math_attention(True):                          # first order: nothing set
        assert _sdp_flags() == before


def test_grads_on_records_gradients_in_every_mode():
    x = torch.ones(2, requires_grad=True)
    for mode in (torch.no_grad, torch.inference_mode, torch.enable_grad):
        with mode(), grads_on():
            assert (x * 2).sum().requires_grad


def test_submodules_are_the_modules_once():
    shared = nn.Linear(2, 2)
    model = nn.Sequential(shared, nn.Sequential(shared, nn.ReLU()), nn.ModuleList([nn.Tanh()]))
    model.add_module("gone", None)
    assert {id(m) for m in _submodules(model)} == {id(m) for m in model.modules()}
    assert len(_submodules(model)) == len(list(model.modules()))
    assert vmap_refusal(model) is None
