"""Prototype head: class means, the linear form against squared distances (torch.cdist), the
gradient against a per-task reference written with loops, errors."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from metaloop.adapt import head_logits, proto_head, proto_logits, prototypes

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
