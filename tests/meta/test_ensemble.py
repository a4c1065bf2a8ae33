"""Ensemble: its predictions against the members' written out by hand (log of the mean
softmax; the mean output for regression), paths of unequal length, loop against vmap,
``evaluate`` on an ensemble, every member's prototypes refined under ``refining``, and named
errors."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

import metaloop as ml
from metaloop.meta import MAML, Ensemble
from metaloop.meta.protonet import ProtoNet
from metaloop.models import MLP, Conv4

sys.path.insert(0, str(Path(__file__).parent))
import _reference as shared  # noqa: E402

WAYS, SHOTS, QUERIES = 3, 2, 3


def make_batch(B=3, seed=2, size=16):
    return shared.image_task_batch(B, seed, size, WAYS, SHOTS, QUERIES)


def proto(seed, batching="loop"):
    torch.manual_seed(seed)
    return ProtoNet(Conv4(1, 8, WAYS, image_size=16).double(), scale=0.3, batching=batching)


def maml(seed, batching="loop", loss="ce", out=WAYS, model=None):
    torch.manual_seed(seed)
    net = model if model is not None else Conv4(1, 8, out, image_size=16).double()
    return MAML(net, inner_lr=0.1, inner_steps=2, loss=loss, batching=batching)


def test_classification_averages_the_members_probabilities():
    members = [proto(1), proto(2), maml(3)]
    ens = Ensemble(members)
    assert ens.combine == "probabilities" and len(ens) == 3 and ens.batching == "loop"
    sx, sy, qx, qy = make_batch(B=1).task(0)
    got = ens.predict(ens.adapt(sx, sy, 2), qx)                       # [Q, C]
    probs = [F.softmax(m.predict(m.adapt(sx, sy, 2), qx), -1) for m in members]
    ref = torch.log((probs[0] + probs[1] + probs[2]) / 3)
    torch.testing.assert_close(got, ref, rtol=1e-10, atol=1e-12)
    # the query loss evaluate reports is the averaged model's negative log-likelihood
    nll = -ref[torch.arange(len(qy)), qy].mean()
    torch.testing.assert_close(F.cross_entropy(got, qy), nll)


def test_one_member_predicts_as_the_member():
    m = proto(1)
    sx, sy, qx, _ = make_batch(B=1).task(0)
    got = Ensemble([m]).predict(Ensemble([m]).adapt(sx, sy), qx)
    want = m.predict(m.adapt(sx, sy), qx)
    torch.testing.assert_close(got, F.log_softmax(want, -1))
    assert torch.equal(got.argmax(-1), want.argmax(-1))


def test_regression_averages_outputs():
    members = []
    for s in (0, 1):
        torch.manual_seed(s)
        members.append(MAML(MLP(1, (8, 8), 1).double(), inner_lr=0.01, inner_steps=1))
    ens = Ensemble(members)
    assert ens.combine == "mean"
    g = torch.Generator().manual_seed(0)
    sx, sy = torch.randn(5, 1, generator=g, dtype=torch.float64), \
        torch.randn(5, 1, generator=g, dtype=torch.float64)
    qx = torch.randn(7, 1, generator=g, dtype=torch.float64)
    got = ens.predict(ens.adapt(sx, sy, 3), qx)
    ref = sum(m.predict(m.adapt(sx, sy, 3), qx) for m in members) / 2
    torch.testing.assert_close(got, ref)


def test_paths_of_unequal_length_keep_the_shorter_members_last_params():
    p, m = proto(1), maml(2)
    sx, sy, qx, _ = make_batch(B=1).task(0)
    path = list(Ensemble([p, m]).adapt_path(sx, sy, 3))
    assert len(path) == 4                                 # MAML: 0..3 steps; ProtoNet: once
    mpath = list(m.adapt_path(sx, sy, 3))
    ph = p.adapt(sx, sy)
    for t, params in enumerate(path):
        got_p, got_m = params["members"]
        assert all(torch.equal(got_p[k], ph[k]) for k in ph)
        assert all(torch.equal(got_m[k], mpath[t][k]) for k in mpath[t])


def test_each_member_adapts_with_its_own_settings():
    """Members with other step sizes and inner steps: with ``steps`` None each takes its
    own number of steps at its own size; a ``steps`` given is every member's."""
    a = maml(1)
    b = MAML(maml(2).model, inner_lr=0.05, inner_steps=4, loss="ce")
    sx, sy, _, _ = make_batch(B=1).task(0)
    path = list(Ensemble([a, b]).adapt_path(sx, sy))
    assert len(path) == 5                                 # b's 4 steps; a stops after 2
    own = [list(a.adapt_path(sx, sy)), list(b.adapt_path(sx, sy))]
    for t, params in enumerate(path):
        for got, mine in zip(params["members"], own):
            want = mine[min(t, len(mine) - 1)]
            assert all(torch.equal(got[k], want[k]) for k in want)
    given = Ensemble([a, b]).adapt(sx, sy, steps=1)["members"]
    for got, m in zip(given, (a, b)):
        want = m.adapt(sx, sy, steps=1)
        assert all(torch.equal(got[k], want[k]) for k in want)


def test_vmap_scores_as_the_loop():
    loop = Ensemble([proto(1, "loop"), proto(2, "loop")])
    vm = Ensemble([proto(1, "vmap"), proto(2, "vmap")])
    assert vm.batching == "vmap" and loop.batching == "loop"
    assert Ensemble([proto(1, "vmap"), proto(2, "loop")]).batching == "loop"
    fam = shared.RandomImages(make_batch)
    a = ml.evaluate(loop, fam, tasks=4, steps=(0,), seed=5)
    b = ml.evaluate(vm, fam, tasks=4, steps=(0,), seed=5)
    for key in ("loss", "accuracy"):
        torch.testing.assert_close(torch.tensor(a["per_task"][key]),
                                   torch.tensor(b["per_task"][key]), rtol=1e-9, atol=1e-12)


def test_evaluate_an_ensemble_against_a_hand_average():
    members = [proto(1), maml(2)]
    fam = shared.RandomImages(make_batch)
    r = ml.evaluate(Ensemble(members), fam, tasks=3, steps=(0, 2), seed=7)
    batch = fam.sample(3, torch.Generator().manual_seed(7))
    for k, steps in enumerate((0, 2)):
        accs, losses = [], []
        for i in range(3):
            sx, sy, qx, qy = batch.task(i)
            probs = sum(F.softmax(m.predict(m.adapt(sx, sy, steps), qx), -1) for m in members)
            logp = torch.log(probs / 2)
            losses.append(float(F.nll_loss(logp, qy)))
            accs.append(float((logp.argmax(-1) == qy).double().mean()))
        assert r["per_task"]["loss"][k] == pytest.approx(losses, rel=1e-9)
        assert r["per_task"]["accuracy"][k] == pytest.approx(accs)


def test_identical_members_score_as_one():
    fam = shared.RandomImages(make_batch)
    one = ml.evaluate(proto(1), fam, tasks=3, steps=(0,), seed=3)
    two = ml.evaluate(Ensemble([proto(1), proto(1)]), fam, tasks=3, steps=(0,), seed=3)
    assert two["per_task"]["accuracy"] == one["per_task"]["accuracy"]
    assert two["loss"]["mean"][0] == pytest.approx(one["loss"]["mean"][0], rel=1e-9)


def test_named_errors():
    with pytest.raises(ValueError, match="at least one learner"):
        Ensemble([])
    with pytest.raises(ValueError, match="member 1 .* lacks"):
        Ensemble([proto(1), object()])
    with pytest.raises(ValueError, match="different query losses"):
        Ensemble([proto(1), maml(2, loss="mse")])
    with pytest.raises(ValueError, match="combine must be one of"):
        Ensemble([proto(1)], combine="vote")
    ens = Ensemble([proto(1), proto(2)])
    sx, sy, qx, _ = make_batch(B=1).task(0)
    with pytest.raises(ValueError, match="params must be"):
        ens.predict(proto(1).adapt(sx, sy), qx)
    wide = Ensemble([proto(1), maml(2, out=WAYS + 2)])
    with pytest.raises(ValueError, match="different shapes"):
        wide.predict(wide.adapt(sx, sy, 1), qx)


def test_refining_refines_every_member_and_restores_them():
    from metaloop.recipes.evaluation import refining
    members = [proto(0), proto(1)]
    ens = Ensemble(members)
    sx, sy, qx, _ = make_batch().task(0)
    plain = ens.predict(ens.adapt(sx, sy), qx)
    with refining(ens, 3, 0.7, 2.0):
        assert ens.evaluation == ("transductive, prototypes refined with the queries (3 soft "
                                  "k-means steps, temperature 0.7, query weight 2)")
        got = ens.predict(ens.adapt(sx, sy), qx)                             # [Q, C]
    assert all(m.refine == 0 and m.refine_temperature == 0.5 for m in members)   # restored
    assert not torch.allclose(got, plain)
    # by hand: each member refined on its own, then the log of the mean softmax
    for m in members:
        m.refine, m.refine_temperature = 3, 0.7
    probs = torch.stack([m.predict(m.adapt(sx, sy), qx).softmax(-1) for m in members])
    torch.testing.assert_close(got, probs.mean(0).log())
    with pytest.raises(ValueError, match="eval.refine = 2: MAML has no prototypes to refine"):
        with refining(Ensemble([proto(0), maml(1)]), 2):
            pass


def _by_hand_jointly(members, sx, sy, qx, steps, temperature, weight):
    """The joint refinement written out: each member's prototypes from its own backbone's
    features, refined with one shared assignment, scored by -scale ||q - c||^2."""
    from metaloop.adapt import refine_prototypes_jointly
    protos, queries, scales = [], [], []
    for m in members:
        fs, fq = m.model.backbone(sx, head=False), m.model.backbone(qx, head=False)
        onehot = F.one_hot(sy, WAYS).to(fs.dtype)                          # [S, C]
        protos.append((onehot.T @ fs / onehot.sum(0)[:, None])[None])      # [1, C, D]
        queries.append(fq[None])                                           # [1, Q, D]
        scales.append(m.model.log_scale.exp())
    refined = refine_prototypes_jointly(protos, queries, scales, steps, temperature, weight)
    probs = [torch.softmax(-s * ((q[0][:, None] - c[0][None]) ** 2).sum(-1), -1)
             for q, c, s in zip(queries, refined, scales)]
    return torch.stack(probs).mean(0).log()                                # [Q, C]


def test_refine_jointly_against_a_hand_computation():
    from metaloop.recipes.evaluation import refining
    members = [proto(0), proto(1)]
    ens = Ensemble(members)
    batch = make_batch()
    sx, sy, qx, _ = batch.task(0)
    separate = ens.predict(ens.adapt(sx, sy), qx)
    with torch.no_grad(), refining(ens, 3, 0.7, 2.0, jointly=True):
        assert ens.refine_jointly
        assert ens.evaluation == ("transductive, prototypes refined with the queries jointly "
                                  "by the members (3 soft k-means steps, temperature 0.7, "
                                  "query weight 2)")
        got = ens.predict(ens.adapt(sx, sy), qx)                             # [Q, C]
        want = _by_hand_jointly(members, sx, sy, qx, 3, 0.7, 2.0)
        # every task of a batch at once, as evaluate's vmap path calls it
        (params,) = ens.adapt_path_batched(batch.support_x, batch.support_y)
        batched = ens.predict_batched(params, batch.query_x)                 # [B, Q, C]
        first = ens.predict(ens.adapt(*batch.task(1)[:2]), batch.task(1)[2])
    torch.testing.assert_close(got, want)
    torch.testing.assert_close(batched[0], got)
    torch.testing.assert_close(batched[1], first)
    assert not ens.refine_jointly and all(m.refine == 0 for m in members)   # restored
    with refining(ens, 3, 0.7, 2.0):                                        # each on its own
        own = ens.predict(ens.adapt(sx, sy), qx)
    assert (own - got).abs().max() > 1e-6 and (own - separate).abs().max() > 1e-6


def test_refine_jointly_with_one_member_or_without_refine_changes_nothing():
    from metaloop.recipes.evaluation import refining
    member = proto(0)
    sx, sy, qx, _ = make_batch().task(0)
    ens = Ensemble([member], refine_jointly=True)
    plain = member.predict(member.adapt(sx, sy), qx)
    torch.testing.assert_close(ens.predict(ens.adapt(sx, sy), qx), plain.log_softmax(-1))
    assert ens.evaluation == "transductive"
    with refining(ens, 3):
        alone = member.predict(member.adapt(sx, sy), qx)
        torch.testing.assert_close(ens.predict(ens.adapt(sx, sy), qx), alone.log_softmax(-1))


def test_refine_jointly_named_errors():
    with pytest.raises(ValueError, match=r"refine_jointly: member 1 \(MAML\) has no prototypes"):
        Ensemble([proto(0), maml(1)], refine_jointly=True)
    with pytest.raises(ValueError, match="refine_jointly must be True or False"):
        Ensemble([proto(0)], refine_jointly=1)
    members = [proto(0), proto(1)]
    ens = Ensemble(members, refine_jointly=True)
    members[0].refine, members[1].refine = 2, 3
    sx, sy, qx, _ = make_batch(B=1).task(0)
    with pytest.raises(ValueError, match="the members refine with different"):
        ens.predict(ens.adapt(sx, sy), qx)
