"""``predict(params, x)`` takes ONE task's ``x [N, ...]``, as ``adapt`` takes one task's
support set: a batch ``[B, Q, ...]`` given to an MLP came back ``[B, Q, out]`` without a
word, scored later against ``[B, Q, out]`` targets as if it were one task."""

import pytest
import torch

import metaloop as ml
from metaloop.meta import ANIL, MAML, Pretrain, Reptile, Scratch


def sinusoid():
    return ml.tasks.Sinusoid(shots=5, queries=4).sample(2, torch.Generator().manual_seed(0))


def classification():
    g = torch.Generator().manual_seed(0)
    fam = ml.tasks.Episodes(torch.randn(40, 4, generator=g), torch.arange(40) % 4, ways=3,
                            shots=2, queries=2)
    return fam.sample(2, torch.Generator().manual_seed(0))


LEARNERS = {
    "MAML": lambda m, loss: MAML(m, loss=loss),
    "ANIL": lambda m, loss: ANIL(m, loss=loss),
    "Reptile": lambda m, loss: Reptile(m, loss=loss),
    "Reptile-non-transductive": lambda m, loss: Reptile(m, loss=loss, transductive=False),
    "Pretrain": lambda m, loss: Pretrain(m, loss=loss),
    "Scratch": lambda m, loss: Scratch(m, loss=loss),
}


@pytest.mark.parametrize("name", list(LEARNERS))
@pytest.mark.parametrize("loss", ["mse", "ce"])
def test_predict_refuses_a_batch_of_tasks(name, loss):
    torch.manual_seed(0)
    b = sinusoid() if loss == "mse" else classification()
    out = 1 if loss == "mse" else 3
    learner = LEARNERS[name](ml.models.MLP(in_dim=b.support_x.shape[-1], hidden=(8,),
                                           out_dim=out), loss)
    owner = name.split("-")[0]
    p = learner.adapt(*b.task(0)[:2])
    q = b.query_x.shape[1]
    with pytest.raises(ValueError, match=rf"^{owner}.predict takes ONE task's inputs x "
                                         rf"\[N, \.\.\.\] and gives predictions \[N, out\], but "
                                         rf"x \[2, {q}, {b.query_x.shape[-1]}\] gave "
                                         rf"\[2, {q}, {out}\]; for a batch of tasks use "
                                         rf"predict_batched"):
        learner.predict(p, b.query_x)
    assert learner.predict(p, b.query_x[0]).shape == (q, out)       # one task: as before
    batched = learner.adapt_path_batched(b.support_x, b.support_y)[-1] \
        if learner.batching == "vmap" else None
    if batched is not None:                          # vmap over predict: per-task shapes
        assert learner.predict_batched(batched, b.query_x).shape == (2, q, out)


def test_a_loss_of_your_own_leaves_the_shape_to_you():
    """With a callable loss the predictions' shape is the user's to define: not checked."""
    torch.manual_seed(0)
    b = sinusoid()
    learner = MAML(ml.models.MLP(in_dim=1, hidden=(8,), out_dim=1),
                   loss=lambda p, y: ((p - y) ** 2).mean())
    p = learner.adapt(*b.task(0)[:2])
    assert learner.predict(p, b.query_x).shape == (2, 4, 1)


@pytest.mark.parametrize("loss", [ml.func.losses.mse])
def test_the_builtin_loss_given_as_a_function_is_checked_as_by_name(loss):
    torch.manual_seed(0)
    b = sinusoid()
    learner = MAML(ml.models.MLP(in_dim=1, hidden=(8,), out_dim=1), loss=loss)
    p = learner.adapt(*b.task(0)[:2])
    with pytest.raises(ValueError, match=r"^MAML.predict takes ONE task's inputs"):
        learner.predict(p, b.query_x)
