"""Prototype head: class means, the linear form against squared distances (torch.cdist), the
gradient against a per-task reference written with loops, errors; the soft k-means refinement
against a loop reference, its invariance to copies, and its gradient."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from metaloop.adapt import (
    head_logits,
    proto_head,
    proto_logits,
    prototypes,
    refine_prototypes,
    refine_prototypes_jointly,
)

DT = torch.float64


def _data(B=3, N=7, D=5, C=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    feats = torch.randn(B, N, D, generator=g, dtype=DT)
    labels = torch.stack([torch.randperm(N, generator=g) % C for _ in range(B)])   # [B, N]
    queries = torch.randn(B, 4, D, generator=g, dtype=DT)
    return feats, labels, queries


def test_prototypes_are_class_means():
    feats, labels, _ = _data()
    got = prototypes(feats, labels, 3)
    assert got.shape == (3, 3, 5)
    for b in range(3):
        for k in range(3):
            torch.testing.assert_close(got[b, k], feats[b][labels[b] == k].mean(0))


def test_linear_head_is_negative_squared_distance_up_to_a_per_query_constant():
    feats, labels, queries = _data()
    protos = prototypes(feats, labels, 3)
    dist = -torch.cdist(queries, protos) ** 2                              # [B, M, C]
    torch.testing.assert_close(proto_logits(queries, protos), dist)
    W, b = proto_head(feats, labels, 3)
    assert W.shape == (3, 5, 3) and b.shape == (3, 3)
    lin = head_logits(queries, W, b)
    torch.testing.assert_close(lin - dist, (queries ** 2).sum(-1, keepdim=True).expand_as(lin))
    torch.testing.assert_close(lin.softmax(-1), dist.softmax(-1))


def test_gradient_matches_loop_reference():
    feats, labels, queries = _data()
    qy = torch.tensor([[0, 1, 2, 0]] * 3)
    f1, q1 = feats.clone().requires_grad_(), queries.clone().requires_grad_()
    W, b = proto_head(f1, labels, 3)
    loss = F.cross_entropy(head_logits(q1, W, b).flatten(0, 1), qy.flatten())
    got = torch.autograd.grad(loss, [f1, q1])
    f2, q2 = feats.clone().requires_grad_(), queries.clone().requires_grad_()
    ref_losses = []
    for t in range(3):                         # per task, per class, per query: no batching
        cs = [f2[t][labels[t] == k].mean(0) for k in range(3)]
        for m in range(4):
            logits = torch.stack([-((q2[t, m] - c) ** 2).sum() for c in cs])
            ref_losses.append(F.cross_entropy(logits[None], qy[t, m][None]))
    ref = torch.autograd.grad(torch.stack(ref_losses).mean(), [f2, q2])
    for g, r in zip(got, ref):
        torch.testing.assert_close(g, r, rtol=1e-12, atol=1e-12)
        assert r.abs().max() > 0


def test_errors_name_the_problem():
    feats, labels, queries = _data()
    with pytest.raises(ValueError, match="every class needs at least one support example"):
        prototypes(feats, labels, 4)
    with pytest.raises(ValueError, match="labels must be int64"):
        proto_head(feats, labels.float(), 3)
    with pytest.raises(ValueError, match=r"features must be \[B, N, D\], got shape \[7, 5\]"):
        prototypes(feats[0], labels[0], 3)
    with pytest.raises(ValueError, match=r"prototypes \[B, C, D\], got queries \[3, 4, 5\] and "
                                         r"prototypes \[3, 3, 4\]"):
        proto_logits(queries, prototypes(feats, labels, 3)[..., :4])


def _refine_loop(protos, queries, scale, steps, temperature, weight=1.0):
    """refine_prototypes written per task, class and query with plain sums (no batching)."""
    out = []
    for t in range(protos.shape[0]):
        C, M = protos.shape[1], queries.shape[1]
        cur = [protos[t, k] for k in range(C)]
        for _ in range(steps):
            w = []
            for m in range(M):
                d = torch.stack([((queries[t, m] - c) ** 2).sum() for c in cur])
                w.append(torch.softmax(-temperature * scale * d, 0))
            new = []
            for k in range(C):
                a = weight * C / M
                num = protos[t, k] + sum(a * w[m][k] * queries[t, m] for m in range(M))
                den = 1 + sum(a * w[m][k] for m in range(M))
                new.append(num / den)
            cur = new
        out.append(torch.stack(cur))
    return torch.stack(out)


@pytest.mark.parametrize("steps,temperature,weight", [(1, 1.0, 1.0), (3, 0.5, 2.0),
                                                     (10, 0.25, 0.5)])
def test_refine_matches_loop_reference(steps, temperature, weight):
    feats, labels, queries = _data()
    protos = prototypes(feats, labels, 3)
    got = refine_prototypes(protos, queries, 0.7, steps, temperature, weight)
    torch.testing.assert_close(got, _refine_loop(protos, queries, 0.7, steps, temperature,
                                                 weight), rtol=1e-12, atol=1e-12)
    assert (got - protos).abs().max() > 1e-3            # it moved them


def test_refine_zero_steps_is_identity_and_copies_change_nothing():
    feats, labels, queries = _data()
    protos = prototypes(feats, labels, 3)
    assert refine_prototypes(protos, queries, 1.0, 0) is protos
    once = refine_prototypes(protos, queries, 1.0, 4)                     # weight 2, the default
    thrice = refine_prototypes(protos, queries.repeat(1, 3, 1), 1.0, 4)   # each query 3 times
    torch.testing.assert_close(once, thrice, rtol=1e-12, atol=1e-12)
    # support copies give the same prototypes, so the same refinement
    more = prototypes(feats.repeat(1, 2, 1), labels.repeat(1, 2), 3)
    torch.testing.assert_close(refine_prototypes(more, queries, 1.0, 4), once)


def test_refine_pulls_a_prototype_to_a_query_it_owns():
    protos = torch.tensor([[[0.0, 0.0], [10.0, 0.0]]], dtype=DT)      # [1, 2, 2]
    queries = torch.tensor([[[0.0, 2.0], [10.0, 0.0]]], dtype=DT)     # one per class
    got = refine_prototypes(protos, queries, 1.0, 1, weight=1.0)
    # query 0 belongs to class 0 (prob ~1): weight a = C / M = 1, so the midpoint
    torch.testing.assert_close(got[0, 0], torch.tensor([0.0, 1.0], dtype=DT), atol=1e-9,
                               rtol=0)
    torch.testing.assert_close(got[0, 1], protos[0, 1], atol=1e-9, rtol=0)


def test_refine_gradient_matches_loop_reference():
    feats, labels, queries = _data()
    qy = torch.tensor([[0, 1, 2, 0]] * 3)

    def loss(refine, f, q):
        W, _ = proto_head(f, labels, 3)
        c = refine(W.mT / 2, q, 0.7, 3, 0.5, 2.0)
        return F.cross_entropy(proto_logits(q, c).flatten(0, 1), qy.flatten())

    f1, q1 = feats.clone().requires_grad_(), queries.clone().requires_grad_()
    got = torch.autograd.grad(loss(refine_prototypes, f1, q1), [f1, q1])
    f2, q2 = feats.clone().requires_grad_(), queries.clone().requires_grad_()
    ref = torch.autograd.grad(loss(_refine_loop, f2, q2), [f2, q2])
    for g, r in zip(got, ref):
        torch.testing.assert_close(g, r, rtol=1e-10, atol=1e-12)
        assert r.abs().max() > 0


@pytest.mark.parametrize("kw,message", [
    ({"steps": -1}, "steps must be an int >= 0"),
    ({"steps": 1.5}, "steps must be an int >= 0"),
    ({"temperature": 0.0}, "temperature must be a finite number > 0"),
    ({"temperature": float("inf")}, "temperature must be a finite number > 0"),
    ({"weight": 0}, "weight must be a finite number > 0"),
    ({"scale": -1.0}, "scale must be > 0"),
])
def test_refine_errors_name_the_problem(kw, message):
    feats, labels, queries = _data()
    protos = prototypes(feats, labels, 3)
    args = {"scale": 1.0, "steps": 2, "temperature": 0.5, "weight": 1.0, **kw}
    with pytest.raises(ValueError, match=message):
        refine_prototypes(protos, queries, **args)
    with pytest.raises(ValueError, match=r"refine_prototypes: need queries \[B, M, D\] and "
                                         r"prototypes \[B, C, D\], got queries \[3, 4, 5\] and "
                                         r"prototypes \[3, 3, 4\]"):
        refine_prototypes(protos[..., :4], queries, 1.0, 1)


def _joint_loop(protos, queries, scales, steps, temperature, weight):
    """refine_prototypes_jointly per task, class and query with plain sums: each member's
    class probabilities of each query, averaged over the members, move every member."""
    out = [[] for _ in protos]
    for t in range(protos[0].shape[0]):
        C, M = protos[0].shape[1], queries[0].shape[1]
        cur = [[P[t, k] for k in range(C)] for P in protos]
        for _ in range(steps):
            w = []
            for m in range(M):
                per = [torch.softmax(-temperature * s * torch.stack(
                    [((Q[t, m] - c) ** 2).sum() for c in cs]), 0)
                    for cs, Q, s in zip(cur, queries, scales)]
                w.append(sum(per) / len(per))
            a = weight * C / M
            cur = [[(P[t, k] + sum(a * w[m][k] * Q[t, m] for m in range(M)))
                    / (1 + sum(a * w[m][k] for m in range(M))) for k in range(C)]
                   for P, Q in zip(protos, queries)]
        for i, cs in enumerate(cur):
            out[i].append(torch.stack(cs))
    return [torch.stack(o) for o in out]


def _two_members():
    feats, labels, queries = _data()
    f2, _, q2 = _data(D=4, seed=1)                  # another feature space, same tasks
    return [prototypes(feats, labels, 3), prototypes(f2, labels, 3)], [queries, q2]


@pytest.mark.parametrize("steps,temperature,weight", [(1, 1.0, 1.0), (4, 0.5, 2.0)])
def test_joint_refine_matches_loop_reference(steps, temperature, weight):
    protos, queries = _two_members()
    got = refine_prototypes_jointly(protos, queries, [0.7, 1.3], steps, temperature, weight)
    ref = _joint_loop(protos, queries, [0.7, 1.3], steps, temperature, weight)
    for g, r, p in zip(got, ref, protos):
        torch.testing.assert_close(g, r, rtol=1e-12, atol=1e-12)
        assert (g - p).abs().max() > 1e-3
    # the shared assignment differs from each member refining on its own
    alone = refine_prototypes(protos[0], queries[0], 0.7, steps, temperature, weight)
    assert (got[0] - alone).abs().max() > 1e-6


def test_joint_refine_of_one_member_or_of_copies_is_refine_prototypes():
    feats, labels, queries = _data()
    protos = prototypes(feats, labels, 3)
    alone = refine_prototypes(protos, queries, 0.7, 4)
    (one,) = refine_prototypes_jointly([protos], [queries], [0.7], 4)
    assert torch.equal(one, alone)
    for got in refine_prototypes_jointly([protos] * 3, [queries] * 3, [0.7] * 3, 4):
        torch.testing.assert_close(got, alone, rtol=1e-12, atol=1e-12)


def test_joint_refine_gradient_matches_loop_reference():
    protos, queries = _two_members()
    qy = torch.tensor([[0, 1, 2, 0]] * 3)

    def loss(refine, ps, qs):
        refined = refine(ps, qs, [0.7, 1.3], 3, 0.5, 2.0)
        return sum(F.cross_entropy(proto_logits(q, c).flatten(0, 1), qy.flatten())
                   for q, c in zip(qs, refined))

    inputs = [t.clone().requires_grad_() for t in (*protos, *queries)]
    got = torch.autograd.grad(loss(refine_prototypes_jointly, inputs[:2], inputs[2:]), inputs)
    inputs = [t.clone().requires_grad_() for t in (*protos, *queries)]
    ref = torch.autograd.grad(loss(_joint_loop, inputs[:2], inputs[2:]), inputs)
    for g, r in zip(got, ref):
        torch.testing.assert_close(g, r, rtol=1e-10, atol=1e-12)
        assert r.abs().max() > 0


def test_joint_refine_errors_name_the_problem():
    protos, queries = _two_members()
    with pytest.raises(ValueError, match="one prototype tensor, query tensor and scale per "
                                         "member"):
        refine_prototypes_jointly(protos, queries, [1.0], 2)
    with pytest.raises(ValueError, match="at least one"):
        refine_prototypes_jointly([], [], [], 2)
    with pytest.raises(ValueError, match="must share tasks, classes and queries"):
        refine_prototypes_jointly(protos, [queries[0], queries[1][:, :3]], [1.0, 1.0], 2)
    with pytest.raises(ValueError, match="scale must be > 0"):
        refine_prototypes_jointly(protos, queries, [1.0, 0.0], 2)
    with pytest.raises(ValueError, match=r"need queries \[B, M, D\] and prototypes"):
        refine_prototypes_jointly(protos, queries[::-1], [1.0, 1.0], 2)


def test_prototypes_on_another_device_than_the_queries_are_named():
    queries, protos = torch.randn(2, 4, 3), torch.randn(2, 5, 3, device="meta")
    with pytest.raises(ValueError, match="proto_logits: prototypes on meta but queries on cpu"):
        proto_logits(queries, protos)
    with pytest.raises(ValueError, match="refine_prototypes: prototypes on meta but queries "
                                         "on cpu"):
        refine_prototypes(protos, queries, 10.0, 1)
