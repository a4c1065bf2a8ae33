"""``predict`` refuses adapted parameters of another shape than the model's (torch would
broadcast a mis-shaped bias into wrong predictions), except a zero head's class dimension,
which is the task's ways."""

import pytest
import torch

import metaloop as ml
from metaloop.models import MLP

WAYS = 4


def task(ways=WAYS):
    g = torch.Generator().manual_seed(0)
    return torch.randn(2 * ways, 2, generator=g), torch.arange(ways).repeat(2)


def mlp():
    torch.manual_seed(0)
    return MLP(in_dim=2, hidden=(3,), out_dim=WAYS)


LEARNERS = {
    "maml": lambda **kw: ml.meta.MAML(mlp(), loss="ce", **kw),
    "maml-loop": lambda **kw: ml.meta.MAML(mlp(), loss="ce", batching="loop", **kw),
    "anil": lambda **kw: ml.meta.ANIL(mlp(), loss="ce", **kw),
    "reptile": lambda **kw: ml.meta.Reptile(mlp(), loss="ce", **kw),
    "pretrain": lambda **kw: ml.meta.Pretrain(mlp(), loss="ce", **kw),
}


@pytest.mark.parametrize("name", LEARNERS)
@pytest.mark.parametrize("key, cut", [("head.bias", lambda t: t[:1]),
                                      ("head.weight", lambda t: t[:, :1]),
                                      ("body.fc0.bias", lambda t: t[:1])])
def test_a_mis_shaped_parameter_is_refused(name, key, cut):
    learner = LEARNERS[name]()
    x, y = task()
    p = learner.adapt(x, y)
    assert learner.predict(p, x).shape == (2 * WAYS, WAYS)
    bad = {**p, key: cut(p[key])}
    with pytest.raises(ValueError, match=rf"params\['{key}'\] is \[.*\] but the model's tensor "
                                         rf"of that name is \[.*\], and must have its shape"):
        learner.predict(bad, x)


@pytest.mark.parametrize("name", LEARNERS)
def test_a_zero_head_may_have_the_tasks_ways(name):
    learner = LEARNERS[name](head_init="zero")
    x, y = task(ways=2)                                   # 2 of the model's 4 outputs
    p = learner.adapt(x, y)
    assert p["head.weight"].shape == (2, 3) and p["head.bias"].shape == (2,)
    out = learner.predict(p, x)
    assert out.shape == (4, 2)
    torch.testing.assert_close(out, torch.func.functional_call(learner.inner.model, p, (x,)),
                               rtol=0, atol=0)
    with pytest.raises(ValueError, match=r"the head's tensors disagree on the number of "
                                         r"classes: head.weight has 2 rows, head.bias has 1"):
        learner.predict({**p, "head.bias": p["head.bias"][:1]}, x)
    with pytest.raises(ValueError, match=r"params\['head.weight'\] is \[2, 1\] .* \(but its "
                                         r"first dimension, the task's classes\)"):
        learner.predict({**p, "head.weight": p["head.weight"][:, :1]}, x)


def test_a_zero_head_of_the_models_size_is_still_checked():
    learner = LEARNERS["maml"](head_init="zero")
    x, y = task()
    p = learner.adapt(x, y)
    with pytest.raises(ValueError, match=r"params\['body.fc0.weight'\] is \[3, 1\]"):
        learner.predict({**p, "body.fc0.weight": p["body.fc0.weight"][:, :1]}, x)


def test_batched_predictions_check_each_tasks_shapes():
    learner = LEARNERS["maml"]()
    assert learner.batching == "vmap"
    x, y = task()
    path = learner.adapt_path_batched(x[None].expand(2, -1, -1), y[None].expand(2, -1))
    p = path[-1]
    assert learner.predict_batched(p, x[None].expand(2, -1, -1)).shape == (2, 2 * WAYS, WAYS)
    with pytest.raises(ValueError, match=r"params\['head.bias'\] is \[1\]"):
        learner.predict_batched({**p, "head.bias": p["head.bias"][:, :1]},
                                x[None].expand(2, -1, -1))


@pytest.mark.parametrize("make", [ml.meta.R2D2, ml.meta.ProtoNet, ml.meta.MetaOptNet])
def test_a_solved_heads_backbone_is_checked(make):
    torch.manual_seed(0)
    learner = make(MLP(in_dim=2, hidden=(3,), out_dim=5))
    x, y = task()
    p = learner.adapt(x, y)
    assert learner.predict(p, x).shape == (2 * WAYS, WAYS)
    with pytest.raises(ValueError, match=r"params\['log_scale'\] is \[1\] but the model's "
                                         r"tensor of that name is \[\]"):
        learner.predict({**p, "log_scale": p["log_scale"][None]}, x)
    with pytest.raises(ValueError, match=r"params\['backbone.body.fc0.bias'\] is \[1\]"):
        learner.predict({**p, "backbone.body.fc0.bias": p["backbone.body.fc0.bias"][:1]}, x)
