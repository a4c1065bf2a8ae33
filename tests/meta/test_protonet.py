"""ProtoNet: meta-gradient against an independent per-task reference (class means and squared
distances written out, the network with torch.nn.functional) and finite differences; batching,
determinism, adapt/predict, errors, evaluate and the config; prototypes refined with the queries
(soft k-means) against a reference written per class and query."""

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
from metaloop.meta.protonet import ProtoNet
from metaloop.models import Conv4, ResNet12

sys.path.insert(0, str(Path(__file__).parent))
import _reference as shared  # noqa: E402

DT = torch.float64
WAYS, SHOTS, QUERIES = 3, 2, 3


def refined_ref(protos, fq, scale, steps, temperature, weight):
    """Soft k-means from ``protos [C, D]`` over the queries ``fq [M, D]``, per class and
    query: each query's class probabilities at ``temperature * scale``, the query set
    weighing ``weight`` times the support set (weight * C / M per query)."""
    C, M = protos.shape[0], fq.shape[0]
    cur = list(protos)
    for _ in range(steps):
        w = [torch.softmax(torch.stack([-temperature * scale * ((q - c) ** 2).sum()
                                        for c in cur]), 0) for q in fq]
        a = weight * C / M
        cur = [(protos[k] + sum(a * w[m][k] * fq[m] for m in range(M)))
               / (1 + sum(a * w[m][k] for m in range(M))) for k in range(C)]
    return torch.stack(cur)


def reference_loss(p, batch, detach=None, prefix="backbone.", transductive=True, refine=0,
                   temperature=0.5, weight=1.0):
    """Mean over tasks of the query cross-entropy of ``-scale * ||q - c_k||^2``; not
    transductive: the queries normalised with the support set's BatchNorm statistics; with
    ``refine``, the prototypes refined with the queries first."""
    losses = []
    for i in range(batch.num_tasks):
        sx, sy, qx, qy = batch.task(i)
        if transductive:
            fs, fq = shared.task_features_ref(p, sx, qx, prefix, detach)
        else:
            fs, fq = shared.support_normalised_features_ref(p, sx, qx, prefix)
        protos = torch.stack([fs[sy == k].mean(0) for k in range(WAYS)])     # [C, D]
        if refine:
            protos = refined_ref(protos, fq, p["log_scale"].exp(), refine, temperature, weight)
        d2 = ((fq[:, None, :] - protos[None]) ** 2).sum(-1)                  # [Q, C]
        losses.append(F.cross_entropy(-p["log_scale"].exp() * d2, qy))
    return torch.stack(losses).mean()


def make_batch(B=3, seed=2, size=16):
    return shared.image_task_batch(B, seed, size, WAYS, SHOTS, QUERIES)


def make_learner(seed=1, resnet=False, **kw):
    torch.manual_seed(seed)
    net = ResNet12(1, 2, WAYS, image_size=16) if resnet else Conv4(1, 8, WAYS, image_size=16)
    return ProtoNet(net.double(), scale=0.3, **kw)


@pytest.mark.parametrize("batching", ["loop", "vmap"])
def test_meta_gradient_matches_per_task_distances(batching):
    learner = make_learner(batching=batching)
    batch = make_batch()
    ref = shared.reference_grad(reference_loss, learner.model, batch)
    got = learner.meta_gradient(batch)
    assert list(got) == [n for n, _ in learner.model.named_parameters()]
    assert "log_lam" not in got
    shared.assert_close_rel(got, ref, rtol=1e-8)
    loss, metrics = learner.meta_loss(batch)
    ref_loss = reference_loss(dict(learner.model.named_parameters()), batch)
    torch.testing.assert_close(loss, ref_loss, rtol=1e-10, atol=1e-12)
    assert metrics["loss"] == pytest.approx(float(ref_loss.detach()))
    for n in ("log_scale", "backbone.body.0.conv.weight", "backbone.body.3.bn.bias"):
        assert got[n].abs().max() > 0, n
    assert torch.equal(got["backbone.head.weight"], torch.zeros_like(got["backbone.head.weight"]))


@pytest.mark.parametrize("path", ["support", "query"])
def test_gradient_reaches_backbone_through_each_path(path):
    batch = make_batch()
    cut = {"support": WAYS * QUERIES, "query": WAYS * SHOTS}[path]   # detach the OTHER set
    torch.manual_seed(1)
    gated = ProtoNet(shared.Gate(Conv4(1, 8, WAYS, image_size=16).double(), cut), scale=0.3)
    got = gated.meta_gradient(batch)
    other = "query" if path == "support" else "support"
    ref = shared.reference_grad(reference_loss, gated.model, batch, detach=other,
                                prefix="backbone.net.")
    shared.assert_close_rel(got, ref, rtol=1e-8)
    assert got["backbone.net.body.0.conv.weight"].abs().max() > 1e-6


@pytest.mark.parametrize("resnet", [False, True], ids=["conv4", "resnet12"])
def test_meta_gradient_matches_finite_differences(resnet):
    learner = make_learner(resnet=resnet)
    fd, analytic = shared.directional_derivatives(learner, make_batch(), 1e-7 if resnet else 1e-6)
    assert fd == pytest.approx(analytic, rel=1e-6)


def test_adapt_predict_and_determinism():
    learner = make_learner()
    batch = make_batch(B=4)
    loss, _ = learner.meta_loss(batch)
    before = {n: p.detach().clone() for n, p in learner.model.named_parameters()}
    for i in range(4):
        sx, sy, qx, qy = batch.task(i)
        params = learner.adapt(sx, sy)
        assert params["W"].shape == (8, WAYS) and params["b"].shape == (WAYS,)
        assert not params["W"].requires_grad and len(list(learner.adapt_path(sx, sy, 5))) == 1
        out = learner.predict(params, qx)                                  # [Q, C]
        p = dict(learner.model.named_parameters())
        fs, fq = shared.task_features_ref(p, sx, qx, "backbone.")
        protos = torch.stack([fs[sy == k].mean(0) for k in range(WAYS)])
        d2 = torch.cdist(fq, protos) ** 2
        torch.testing.assert_close(out.softmax(-1), (-0.3 * d2).softmax(-1))
    assert all(torch.equal(before[n], p) for n, p in learner.model.named_parameters())
    a, b = make_learner().meta_gradient(batch), make_learner().meta_gradient(batch)
    assert all(torch.equal(a[n], b[n]) for n in a)
    v = make_learner(batching="vmap").meta_gradient(batch)
    shared.assert_close_rel(v, a, rtol=1e-8)
    assert float(learner.model.scale) == pytest.approx(0.3)
    assert float(loss.detach()) > 0


@pytest.mark.parametrize("batching", ["loop", "vmap"])
def test_evaluate_roundtrip(batching):
    learner = make_learner(batching=batching)
    fam = shared.RandomImages(make_batch)
    r = ml.evaluate(learner, fam, tasks=5, steps=(0, 3), seed=11)
    manual = shared.mean_query_loss(learner, fam, 5, 11)
    assert r["loss"]["mean"][0] == pytest.approx(manual) == r["loss"]["mean"][1]


@pytest.mark.parametrize("kw,message", [
    ({"scale": 0.0}, "ProtoNet: scale must be a finite number > 0"),
    ({"scale": float("inf")}, "scale must be a finite number > 0"),
    ({"batching": "threads"}, "batching must be"),
    ({"ways": 1}, "ways must be None or an int >= 2"),
])
def test_bad_arguments(kw, message):
    with pytest.raises(ValueError, match=message):
        ProtoNet(Conv4(1, 4, WAYS, image_size=16), **kw)


def test_missing_class_is_named():
    learner = make_learner(ways=4)
    sx, sy, *_ = make_batch().task(0)
    with pytest.raises(ValueError, match="every class needs at least one support example"):
        learner.adapt(sx, sy)


def test_regression_input_error_names_protonet():
    # the solved-head learners share these checks; the message names the learner used
    learner = ProtoNet(ml.models.MLP(1, (8,), 2))
    regression = ml.tasks.Sinusoid(5, 5).sample(2, torch.Generator().manual_seed(0))
    with pytest.raises(ValueError, match=r"^ProtoNet needs a classification TaskBatch"):
        learner.meta_loss(regression)
    sx, sy = regression.support_x[0], regression.support_y[0]
    with pytest.raises(ValueError, match=r"int64 class labels, got .*\(ProtoNet is a "
                                         r"classifier\)"):
        learner.adapt_path_batched(sx[None], sy[None, :, 0])


def test_config_builds_protonet():
    cfg = _config.validate({"family": {"name": "omniglot", "ways": 5},
                            "model": {"name": "conv4", "channels": 8},
                            "method": {"name": "protonet", "scale": 2.0}})
    _config.check_combinations(cfg)
    family = SimpleNamespace(kind="classification", ways=5, num_classes=5,
                             image_shape=(1, 28, 28))
    learner = _build.build_learner(cfg, family)
    assert type(learner.inner).__name__ == "PrototypeSolver"
    assert float(learner.model.scale) == pytest.approx(2.0)
    assert "log_lam" not in dict(learner.model.named_parameters())
    with pytest.raises(ValueError, match="first_order applies to maml and anil, not 'protonet'"):
        _config.check_combinations(_config.validate(
            {**cfg, "method": {**cfg["method"], "first_order": True}}))


@pytest.mark.parametrize("batching", ["loop", "vmap"])
def test_non_transductive_meta_gradient_matches_support_normalised_reference(batching):
    learner = make_learner(batching=batching, transductive=False)
    assert learner.batching == "loop" and learner.evaluation == "non-transductive"
    batch = make_batch()
    ref = shared.reference_grad(reference_loss, learner.model, batch, transductive=False)
    got = learner.meta_gradient(batch)
    shared.assert_close_rel(got, ref, rtol=1e-8)
    loss, _ = learner.meta_loss(batch)
    torch.testing.assert_close(loss, reference_loss(dict(learner.model.named_parameters()),
                                                    batch, transductive=False))
    transductive = reference_loss(dict(learner.model.named_parameters()), batch)
    assert abs(float(loss.detach()) - float(transductive.detach())) > 1e-4
    fd, analytic = shared.directional_derivatives(learner, batch, 1e-6)
    assert fd == pytest.approx(analytic, rel=1e-6)


def test_non_transductive_scoring_scores_each_query_on_its_own():
    learner = make_learner(transductive=False)
    sx, sy, qx, _ = make_batch(B=1).task(0)
    params = learner.adapt(sx, sy)
    stats = [k for k in params if k.startswith("bn_stats:")]
    assert len(stats) == 8 and params[stats[0]].shape == (8,)           # 4 layers x mean, var
    together = learner.predict(params, qx)                               # [Q, C]
    alone = torch.cat([learner.predict(params, qx[j:j + 1]) for j in range(len(qx))])
    torch.testing.assert_close(alone, together, rtol=1e-10, atol=1e-12)
    p = dict(learner.model.named_parameters())
    fs, fq = shared.support_normalised_features_ref(p, sx, qx, "backbone.")
    protos = torch.stack([fs[sy == k].mean(0) for k in range(WAYS)])
    d2 = ((fq[:, None, :] - protos[None]) ** 2).sum(-1)
    want = -p["log_scale"].exp() * d2                                   # up to a per-row shift
    torch.testing.assert_close(together - together[:, :1], (want - want[:, :1]).detach())
    # switching the mode after construction: transductive scores depend on the other queries
    learner.transductive = True
    assert learner.evaluation == "transductive"
    t_params = learner.adapt(sx, sy)
    assert not any(k.startswith("bn_stats:") for k in t_params)
    first = learner.predict(t_params, qx)[:1]
    assert not torch.allclose(first, learner.predict(t_params, qx[:1]))
    with pytest.raises(ValueError, match="transductive must be True or False"):
        make_learner(transductive="no")


@pytest.mark.parametrize("batching", ["loop", "vmap"])
def test_refined_prototypes_meta_gradient_and_prediction_match_reference(batching):
    learner = make_learner(batching=batching, refine=3, refine_temperature=0.7,
                           refine_weight=2.0)
    assert learner.evaluation == ("transductive, prototypes refined with the queries (3 soft "
                                  "k-means steps, temperature 0.7, query weight 2)")
    batch = make_batch()
    ref = shared.reference_grad(reference_loss, learner.model, batch, refine=3, temperature=0.7,
                                weight=2.0)
    shared.assert_close_rel(learner.meta_gradient(batch), ref, rtol=1e-8)
    p = dict(learner.model.named_parameters())
    plain = reference_loss(p, batch)
    assert abs(float(learner.meta_loss(batch)[0].detach()) - float(plain.detach())) > 1e-4
    sx, sy, qx, _ = batch.task(0)
    out = learner.predict(learner.adapt(sx, sy), qx)                       # [Q, C]
    fs, fq = shared.task_features_ref(p, sx, qx, "backbone.")
    protos = torch.stack([fs[sy == k].mean(0) for k in range(WAYS)])
    c = refined_ref(protos, fq, 0.3, 3, 0.7, 2.0)
    want = -0.3 * ((fq[:, None, :] - c[None]) ** 2).sum(-1)
    torch.testing.assert_close(out.softmax(-1), want.softmax(-1).detach())


def test_refine_defaults_are_one_pair_of_constants():
    from metaloop.adapt.proto_head import REFINE_TEMPERATURE, REFINE_WEIGHT
    learner = make_learner()
    assert (learner.refine, learner.refine_temperature, learner.refine_weight) == \
        (0, REFINE_TEMPERATURE, REFINE_WEIGHT)
    ev = _config.validate({"family": {"name": "omniglot"}})["eval"]
    assert (ev["refine"], ev["refine_temperature"], ev["refine_weight"]) == \
        (0, REFINE_TEMPERATURE, REFINE_WEIGHT)


def test_refine_errors_name_the_problem():
    with pytest.raises(ValueError, match="refine must be an int >= 0"):
        make_learner(refine=-1)
    with pytest.raises(ValueError, match="refine_temperature must be a finite number > 0"):
        make_learner(refine=2, refine_temperature=0.0)
    with pytest.raises(ValueError, match="refine_weight must be a finite number > 0"):
        make_learner(refine=2, refine_weight=-1.0)
    with pytest.raises(ValueError, match=r"refine = 2 scores a task's queries together, but "
                                         r"this learner scores each on its own"):
        make_learner(refine=2, transductive=False)
    learner = make_learner(refine=2)
    with pytest.raises(ValueError, match="set refine = 0 first"):
        learner.transductive = False
    learner.refine = 0
    learner.transductive = False                    # now allowed
    assert learner.evaluation == "non-transductive"
    r2d2 = ml.meta.R2D2(Conv4(1, 4, WAYS, image_size=16))
    with pytest.raises(ValueError, match="RidgeSolver has no prototypes to refine"):
        r2d2.refine = 3


def test_config_method_refine_trains_with_refined_prototypes():
    """method.refine builds a ProtoNet whose meta-loss refines the prototypes (train as you
    test): its meta-gradient is the reference's with the same rounds, temperature and weight;
    evaluation refines as eval.refine says (0: the plain prototypes), then restores it."""
    from metaloop.recipes.evaluation import refining, scoring
    cfg = _config.validate({"family": {"name": "omniglot", "ways": WAYS},
                            "model": {"name": "conv4", "channels": 4},
                            "method": {"name": "protonet", "refine": 3,
                                       "refine_temperature": 0.7, "refine_weight": 2.5}})
    _config.check_combinations(cfg)
    family = SimpleNamespace(kind="classification", ways=WAYS, num_classes=WAYS,
                             image_shape=(1, 16, 16))
    learner = _build.build_learner(cfg, family)
    assert (learner.refine, learner.refine_temperature, learner.refine_weight) == (3, 0.7, 2.5)
    learner.model.double()
    batch = make_batch()
    ref = shared.reference_grad(reference_loss, learner.model, batch, refine=3, temperature=0.7,
                                weight=2.5)
    shared.assert_close_rel(learner.meta_gradient(batch), ref, rtol=1e-8)
    with refining(learner, 0), scoring(learner, "as-trained"):
        assert (learner.refine, learner.evaluation) == (0, "transductive")
    with refining(learner, 5):
        assert learner.refine == 5
    with refining(learner, 0), scoring(learner, "non-transductive"):
        assert (learner.refine, learner.transductive) == (0, False)
        assert learner.evaluation == "non-transductive"
    assert (learner.refine, learner.transductive) == (3, True)
    r2d2 = ml.meta.R2D2(Conv4(1, 4, WAYS, image_size=16))
    with refining(r2d2, 0):                       # no prototypes: 0 rounds is not refused
        assert r2d2.refine == 0


@pytest.mark.parametrize("method,message", [
    ({"name": "r2d2", "refine": 2}, "method.refine = 2 trains with prototypes refined by the "
                                    "queries, which only method.name = 'protonet' has, not "
                                    "'r2d2'"),
    ({"name": "protonet", "refine": 2, "transductive": False},
     "method.refine = 2 refines the prototypes with all of a task's queries, but "
     "method.transductive = false scores each query on its own"),
    ({"name": "protonet", "refine": -1}, "config method.refine must be >= 0, got -1"),
    ({"name": "protonet", "refine": 2, "refine_weight": 0},
     "config method.refine_weight must be a finite number > 0, got 0"),
    ({"name": "protonet", "refine": 2, "refine_temperature": float("inf")},
     "config method.refine_temperature must be a finite number > 0, got inf"),
])
def test_config_method_refine_bad_input_is_named(method, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        _config.check_combinations(_config.validate({"family": {"name": "omniglot"},
                                                     "model": {"name": "conv4"},
                                                     "method": method}))
