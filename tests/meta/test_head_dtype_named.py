"""A half-precision backbone is refused when R2D2, ProtoNet or MetaOptNet is built, naming
the learner, ``model.float()`` and ``precision="bf16"``, and MetaOptNet warns (once per
learner) when its Newton solves end unconverged."""

import warnings

import pytest
import torch

import metaloop as ml
from metaloop.models.mlp import MLP


@pytest.mark.parametrize("name", ["R2D2", "ProtoNet", "MetaOptNet"])
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_a_half_precision_backbone_is_refused_at_construction(name, dtype):
    model = MLP(8, (16,), 5).to(dtype)
    with pytest.raises(ValueError, match=rf"^{name}: the model's parameters are {dtype}.*"
                                         r"model\.float\(\).*precision=\"bf16\""):
        getattr(ml.meta, name)(model)


def _batch(B=2, ways=5, shots=2, queries=3):
    torch.manual_seed(0)
    sy = torch.arange(ways).repeat_interleave(shots).expand(B, -1).clone()
    qy = torch.arange(ways).repeat_interleave(queries).expand(B, -1).clone()
    return ml.TaskBatch(torch.randn(B, ways * shots, 8), sy,
                        torch.randn(B, ways * queries, 8), qy)


def test_metaoptnet_warns_once_per_learner_when_unconverged():
    batch = _batch()
    for steps, expected in ((1, 1), (10, 0)):
        torch.manual_seed(0)
        learner = ml.meta.MetaOptNet(MLP(8, (32, 32), 5), steps=steps)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            for _ in range(2):
                learner.meta_gradient(batch)
        msgs = [str(w.message) for w in caught if issubclass(w.category, RuntimeWarning)]
        assert len(msgs) == expected, msgs
        if expected:
            assert msgs[0].startswith("MetaOptNet: the svm head has not converged after 1 ")
            assert "method.inner_steps" in msgs[0]
