"""A fixed output scale (``learn_scale=False``) for ProtoNet, R2D2 and MetaOptNet: the scale
is a buffer, not a parameter; the logits are Snell et al.'s plain ``-||q - c_k||^2`` at
``scale=1`` (an independent per-class computation); the meta-gradient matches a reference
that holds the scale constant; training leaves it where it was, a checkpoint keeps it, and
``method.learn_scale`` builds it from a config (named unread for a method without a
scale)."""

from __future__ import annotations

import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F

import metaloop as ml
from metaloop import build as _build
from metaloop import config as _config
from metaloop.models import Conv4

sys.path.insert(0, str(Path(__file__).parent))
import _reference as shared  # noqa: E402

WAYS, SHOTS, QUERIES = 3, 2, 3


def make_batch(B=3, seed=2, size=16):
    return shared.image_task_batch(B, seed, size, WAYS, SHOTS, QUERIES)


def fixed_reference_loss(p, batch, scale):
    """Mean query cross-entropy of ``-scale * ||q - c_k||^2`` with ``scale`` a constant."""
    losses = []
    for i in range(batch.num_tasks):
        sx, sy, qx, qy = batch.task(i)
        fs, fq = shared.task_features_ref(p, sx, qx, "backbone.", None)
        protos = torch.stack([fs[sy == k].mean(0) for k in range(WAYS)])     # [C, D]
        d2 = ((fq[:, None, :] - protos[None]) ** 2).sum(-1)                  # [Q, C]
        losses.append(F.cross_entropy(-scale * d2, qy))
    return torch.stack(losses).mean()


def protonet(scale=1.0, learn_scale=False, seed=1):
    torch.manual_seed(seed)
    return ml.meta.ProtoNet(Conv4(1, 8, WAYS, image_size=16).double(), scale=scale,
                            learn_scale=learn_scale)


def test_fixed_scale_is_a_buffer_not_a_parameter():
    learner = protonet(scale=2.5)
    names = [n for n, _ in learner.model.named_parameters()]
    assert "log_scale" not in names and all(n.startswith("backbone.") for n in names)
    assert "log_scale" in learner.model.state_dict()
    assert float(learner.model.scale) == pytest.approx(2.5)
    assert learner.model.log_scale.dtype == torch.float64        # the backbone's dtype
    assert "log_scale" in dict(protonet(learn_scale=True).model.named_parameters())


def test_scale_one_gives_snell_plain_distances():
    """The query logits equal ``-||q - c_k||^2`` up to a per-query constant (the dropped
    ``||q||^2``), written per class and query without metaloop's head."""
    learner = protonet(scale=1.0)
    batch = make_batch(B=1)
    sx, sy, qx, _ = batch.task(0)
    params = learner.adapt(sx, sy)
    got = learner.predict(params, qx)                                      # [Q, C]
    p = dict(learner.model.named_parameters())
    fs, fq = shared.task_features_ref(p, sx, qx, "backbone.", None)
    want = torch.stack([torch.stack([-((q - fs[sy == k].mean(0)) ** 2).sum()
                                     for k in range(WAYS)]) for q in fq])
    shift = (got - want)[:, :1]                                            # ||q||^2 per row
    torch.testing.assert_close(got - shift, want, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(shift[:, 0], (fq ** 2).sum(-1), rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("batching", ["loop", "vmap"])
def test_meta_gradient_holds_the_scale_constant(batching):
    torch.manual_seed(1)
    learner = ml.meta.ProtoNet(Conv4(1, 8, WAYS, image_size=16).double(), scale=0.3,
                               learn_scale=False, batching=batching)
    batch = make_batch()
    got = learner.meta_gradient(batch)
    assert "log_scale" not in got
    ref = shared.reference_grad(fixed_reference_loss, learner.model, batch, 0.3)
    shared.assert_close_rel(got, ref, rtol=1e-8)
    loss, _ = learner.meta_loss(batch)
    torch.testing.assert_close(
        loss, fixed_reference_loss(dict(learner.model.named_parameters()), batch, 0.3),
        rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("build", [
    lambda net: ml.meta.R2D2(net, scale=4.0, learn_scale=False),
    lambda net: ml.meta.MetaOptNet(net, scale=4.0, learn_scale=False),
    lambda net: ml.meta.ProtoNet(net, scale=4.0, learn_scale=False)])
def test_training_leaves_a_fixed_scale_and_a_checkpoint_keeps_it(build):
    torch.manual_seed(0)
    learner = build(Conv4(1, 8, WAYS, image_size=16).double())
    batch = make_batch()
    opt = torch.optim.AdamW(learner.model.parameters(), lr=0.1, weight_decay=0.5)
    for _ in range(3):
        opt.zero_grad()
        learner.meta_loss(batch)[0].backward()
        opt.step()
    assert float(learner.model.scale) == pytest.approx(4.0, rel=1e-12)
    state = learner.model.state_dict()
    torch.manual_seed(5)
    other = build(Conv4(1, 8, WAYS, image_size=16).double())
    other.model.load_state_dict(state)
    sx, sy, qx, _ = batch.task(0)
    torch.testing.assert_close(other.predict(other.adapt(sx, sy), qx),
                               learner.predict(learner.adapt(sx, sy), qx))


def test_learned_scale_still_moves():
    torch.manual_seed(0)
    learner = ml.meta.ProtoNet(Conv4(1, 8, WAYS, image_size=16).double(), scale=4.0)
    opt = torch.optim.Adam(learner.model.parameters(), lr=0.1)
    learner.meta_loss(make_batch())[0].backward()
    opt.step()
    assert float(learner.model.scale) != pytest.approx(4.0, rel=1e-6)


def test_config_learn_scale_false_builds_a_fixed_scale():
    cfg = _config.validate({"family": {"name": "omniglot", "ways": 5},
                            "model": {"name": "conv4", "channels": 8},
                            "method": {"name": "protonet", "scale": 1.0,
                                       "learn_scale": False}})
    _config.check_combinations(cfg)
    family = SimpleNamespace(kind="classification", ways=5, num_classes=5,
                             image_shape=(1, 28, 28))
    learner = _build.build_learner(cfg, family)
    assert "log_scale" not in dict(learner.model.named_parameters())
    assert float(learner.model.scale) == 1.0
    default = _build.build_learner(_config.validate({**cfg, "method": {"name": "protonet"}}),
                                   family)
    assert "log_scale" in dict(default.model.named_parameters())


def test_learn_scale_named_unread_where_there_is_no_scale_and_refused_when_not_a_bool():
    cfg = _config.validate({"family": {"name": "omniglot", "ways": 5},
                            "model": {"name": "conv4", "channels": 8},
                            "method": {"name": "maml", "learn_scale": False}})
    unread = _config.unread_keys(cfg, [("method", "learn_scale")])
    assert [(s, k) for s, k, _ in unread] == [("method", "learn_scale")]
    assert "output scale" in unread[0][2]
    head = _config.validate({**cfg, "method": {"name": "r2d2", "learn_scale": False}})
    assert _config.unread_keys(head, [("method", "learn_scale")]) == []
    with pytest.raises(ValueError, match="learn_scale"):
        _config.validate({"method": {"name": "protonet", "learn_scale": "no"}})
    with pytest.raises(ValueError, match="learn_scale"):
        ml.meta.ProtoNet(Conv4(1, 8, WAYS, image_size=16), learn_scale="False")
