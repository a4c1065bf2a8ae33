"""The learners' public methods say what they raise, and raise it when called: Reptile's
meta-gradient took a NaN support set on the loop path without a word (a NaN gradient);
Reptile's ``adapt_path`` (a generator) and MAML's ``steps`` check raised only when the
first value was drawn; Reptile with inner Adam or test mini-batches gave torch's
"torch.cat(): expected a non-empty list" for ``steps=-1``; R2D2's ``adapt`` gave a
TypeError for a list."""

import warnings

import pytest
import torch

import metaloop as ml


def sinusoid():
    return ml.tasks.Sinusoid(shots=5, queries=5).sample(2, torch.Generator().manual_seed(0))


def episodes():
    g = torch.Generator().manual_seed(0)
    fam = ml.tasks.Episodes(torch.randn(40, 4, generator=g), torch.arange(40) % 4, ways=3,
                            shots=2, queries=2)
    return fam.sample(2, torch.Generator().manual_seed(0))


@pytest.mark.parametrize("cls", [ml.meta.MAML, ml.meta.Reptile])
@pytest.mark.parametrize("method", ["meta_loss", "meta_gradient", "adapt", "adapt_path"])
def test_the_public_methods_have_raises_and_returns(cls, method):
    doc = getattr(cls, method).__doc__ or ""
    assert "Raises:" in doc and "ValueError" in doc and "Returns:" in doc, (cls, method)


@pytest.mark.parametrize("batching", ["loop", "vmap"])
@pytest.mark.parametrize("field", ["support_x", "query_y"])
@pytest.mark.parametrize("method", ["meta_loss", "meta_gradient"])
def test_reptile_refuses_a_non_finite_batch(batching, field, method):
    batch = sinusoid()
    getattr(batch, field)[1, 0] = float("nan")
    L = ml.meta.Reptile(ml.models.MLP(), batching=batching)
    with pytest.raises(ValueError, match=rf"Reptile: the TaskBatch's {field} .* in task 1"):
        getattr(L, method)(batch)


@pytest.mark.parametrize("kw", [{}, {"inner_optimizer": "adam", "test_batch": 2}])
def test_reptile_adapt_path_checks_when_called(kw):
    L = ml.meta.Reptile(ml.models.MLP(), **kw)
    sx, sy = sinusoid().task(0)[:2]
    with pytest.raises(ValueError, match="non-finite"):
        L.adapt_path(torch.full_like(sx, float("nan")), sy)         # not iterated
    with pytest.raises(ValueError, match="Reptile adapts to ONE task"):
        L.adapt_path(sinusoid().support_x, sinusoid().support_y)
    for steps in (-1, 1.5):
        with pytest.raises(ValueError, match="steps must be a non-negative int"):
            L.adapt_path(sx, sy, steps=steps)
        with pytest.raises(ValueError, match="steps must be a non-negative int"):
            L.adapt(sx, sy, steps=steps)
    assert len(list(L.adapt_path(sx, sy, steps=2))) == 3


@pytest.mark.parametrize("build", [ml.meta.MAML, ml.meta.ANIL])
def test_maml_adapt_path_checks_steps_when_called(build):
    L = build(ml.models.MLP())
    sx, sy = sinusoid().task(0)[:2]
    with pytest.raises(ValueError, match="steps must be a non-negative int, got -1"):
        L.adapt_path(sx, sy, steps=-1)                                 # not iterated


def test_head_learner_adapt_names_a_support_set_that_is_not_a_tensor():
    L = ml.meta.R2D2(ml.models.MLP(4, out_dim=8))
    sx, sy = episodes().task(0)[:2]
    with pytest.raises(ValueError, match="R2D2: support_x must be a torch.Tensor, got list"):
        L.adapt(sx.tolist(), sy)


@pytest.mark.parametrize("cls", [ml.meta.MAML, ml.meta.Reptile])
def test_the_documented_errors_are_raised(cls):
    """A sample of each ``Raises:`` list, as a user meets it."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        L = cls(ml.models.MLP())
        sx, sy = sinusoid().task(0)[:2]
        cases = [
            (lambda: L.adapt(sinusoid().support_x, sinusoid().support_y), "adapts to ONE task"),
            (lambda: L.adapt(sx[:0], sy[:0]), r"empty \(S = 0\)"),
            (lambda: L.adapt(sx.double(), sy.double()), "float64 but the model's"),
            (lambda: L.meta_loss((sx, sy)), "expected a metaloop.TaskBatch"),
            (lambda: L.meta_gradient(episodes()), "loss='mse' needs float regression"),
            (lambda: cls(ml.models.MLP(), inner_lr=0), "inner_lr must be a positive"),
            (lambda: cls(ml.models.MLP(), inner_steps=0), "inner_steps must be a positive"),
            (lambda: cls(ml.models.MLP(), loss="hinge"), "unknown loss 'hinge'"),
            (lambda: cls(ml.models.MLP(), batching="gpu"), "batching must be one of"),
        ]
        for call, message in cases:
            with pytest.raises(ValueError, match=message):
                call()
