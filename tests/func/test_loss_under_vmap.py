"""A loss of the user's own that reads a value (``float(t)``, ``t.item()``, a Python ``if``
on a tensor) fails inside the user's function under vmap, before its result can be checked:
with ``batching="vmap"`` it is a ValueError naming the loss (torch's RuntimeError kept as
the cause); with the default ``"auto"`` the learner switches to the loop, which runs a loss
that branches on values and names a float or a detached result as the loop does."""

import warnings

import pytest
import torch

import metaloop as ml
from metaloop.func.losses import get_loss


def as_float(pred, y):
    return float(((pred - y) ** 2).mean())


def item_back(pred, y):
    return torch.as_tensor(((pred - y) ** 2).mean().item())


def branches(pred, y):
    loss = ((pred - y) ** 2).mean()
    return loss if loss > 0 else loss * 0


def batch():
    return ml.tasks.Sinusoid(shots=5, queries=5).sample(2, torch.Generator().manual_seed(0))


@pytest.mark.parametrize("learner", ["MAML", "Reptile"])
@pytest.mark.parametrize("method", ["meta_loss", "meta_gradient"])
@pytest.mark.parametrize("loss", [as_float, item_back, branches])
def test_a_loss_reading_a_value_under_vmap_is_named(learner, method, loss):
    torch.manual_seed(0)
    L = getattr(ml.meta, learner)(ml.models.MLP(), loss=loss, batching="vmap")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")                     # float() on a tensor needing grad
        with pytest.raises(ValueError, match=rf"loss {loss.__name__} must return the mean "
                                             r"loss as a 0-dim floating tensor.*read a "
                                             r"tensor's value.*batching='loop'") as info:
            getattr(L, method)(batch())
    cause = info.value.__cause__                             # the loss's error, then torch's
    assert isinstance(cause, ValueError) and isinstance(cause.__cause__, RuntimeError)


@pytest.mark.parametrize("learner", ["MAML", "Reptile"])
@pytest.mark.parametrize("method", ["meta_loss", "meta_gradient"])
@pytest.mark.parametrize("loss, words", [(as_float, "but returned a float"),
                                         (item_back, "cut off from the predictions' graph")])
def test_auto_falls_back_to_the_loop_which_names_a_float_or_a_detached_loss(learner, method,
                                                                            loss, words):
    L = getattr(ml.meta, learner)(ml.models.MLP(), loss=loss)
    assert L.batching == "vmap"                              # "auto" picks vmap for an MLP
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(ValueError, match=rf"loss {loss.__name__} .*{words}"):
            getattr(L, method)(batch())
    assert L.batching == "loop"


@pytest.mark.parametrize("learner", ["MAML", "Reptile"])
def test_auto_runs_a_branching_loss_on_the_loop_with_the_loops_numbers(learner):
    torch.manual_seed(0)
    auto = getattr(ml.meta, learner)(ml.models.MLP(), loss=branches)
    torch.manual_seed(0)
    loop = getattr(ml.meta, learner)(ml.models.MLP(), loss=branches, batching="loop")
    got, want = auto.meta_gradient(batch()), loop.meta_gradient(batch())
    assert auto.batching == "loop"
    for k in want:
        assert torch.equal(got[k], want[k]), k


def test_the_loop_path_still_names_a_float():
    L = ml.meta.MAML(ml.models.MLP(), loss=as_float, batching="loop")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(ValueError, match=r"loss as_float .* but returned a float"):
            L.meta_loss(batch())


def test_a_branching_loss_runs_on_the_loop():
    L = ml.meta.MAML(ml.models.MLP(), loss=branches, batching="loop")
    loss, _ = L.meta_loss(batch())
    assert loss.dim() == 0 and torch.isfinite(loss)


def test_other_runtime_errors_pass_through_unchanged():
    def broken(pred, y):
        raise RuntimeError("something else")

    f = get_loss(broken)
    with pytest.raises(RuntimeError, match="something else"):
        f(torch.zeros(3, 1), torch.zeros(3, 1))
    with pytest.raises(RuntimeError, match="something else"):
        torch.func.vmap(f)(torch.zeros(2, 3, 1), torch.zeros(2, 3, 1))


def test_the_vmap_error_outside_a_transform_is_not_rewritten():
    """torch's own message raised outside vmap (not ours to explain) passes through."""
    def says_vmap(pred, y):
        raise RuntimeError("vmap: It looks like you're either (1) calling .item() on a Tensor")

    with pytest.raises(RuntimeError, match="vmap: It looks like"):
        get_loss(says_vmap)(torch.zeros(3, 1), torch.zeros(3, 1))
