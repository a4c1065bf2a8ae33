"""Prototype head (Prototypical Networks, Snell et al. 2017), batched over tasks.

Each class is represented by the mean of its support features, its prototype ``c_k``, and a
query ``q`` is scored by the negative squared Euclidean distance ``-||q - c_k||^2``. Expanding
the square, ``-||q - c_k||^2 = 2 q.c_k - ||c_k||^2 - ||q||^2``, and the last term is the same
for every class, so it cancels in the softmax and the argmax: the classifier is the linear
head ``W = 2 C^T``, ``b_k = -||c_k||^2``, a closed-form head like ``ridge_head``'s. Its logits
differ from the negative squared distances by ``||q||^2`` per query (same probabilities, same
cross-entropy, same predictions); ``proto_logits`` gives the distances themselves.

``refine_prototypes`` is the transductive step that uses a task's unlabelled queries: soft
k-means from the support prototypes, after Ren et al. (2018, "Meta-Learning for
Semi-Supervised Few-Shot Classification"); ``refine_prototypes_jointly`` does it for an
ensemble, whose members share one assignment of the queries.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence
from typing import cast

import torch
import torch.nn.functional as F

from metaloop.adapt._checks import check_features, check_labels, shape_str

__all__ = ["REFINE_TEMPERATURE", "REFINE_WEIGHT", "proto_head", "proto_logits", "prototypes",
           "refine_prototypes", "refine_prototypes_jointly"]

# refine_prototypes' defaults, chosen on Omniglot's held-out background alphabets (with 10
# steps, within-alphabet 20-way 1-shot; docs/omniglot.md); config.py's eval defaults match
REFINE_TEMPERATURE = 0.5
REFINE_WEIGHT = 2.0


def prototypes(features: torch.Tensor, labels: torch.Tensor, n_classes: int) -> torch.Tensor:
    """The mean support feature of each class, per task.

    Args:
        features: ``[B, N, D]`` float32/float64 support features.
        labels: int64 ``[B, N]`` in ``[0, n_classes)``; every class present in every task.
        n_classes: C >= 2.

    Returns:
        ``[B, C, D]`` prototypes, differentiable in ``features``.

    Raises:
        ValueError: bad shapes or dtypes, labels out of range, or a class with no example.
    """
    check_features("prototypes", features)
    check_labels("prototypes", labels, features, n_classes)
    onehot = F.one_hot(labels, n_classes).to(features.dtype)        # [B, N, C]
    counts = onehot.sum(dim=1).unsqueeze(-1)                         # [B, C, 1]
    return onehot.mT @ features / counts                             # [B, C, D]


def proto_head(features: torch.Tensor, labels: torch.Tensor, n_classes: int
               ) -> tuple[torch.Tensor, torch.Tensor]:
    """The prototype classifier as a linear head: ``W = 2 C^T``, ``b = -||c_k||^2``.

    ``head_logits(q, W, b) = -||q - c_k||^2 + ||q||^2``: the same softmax, cross-entropy and
    argmax as the negative squared distances (see the module docstring).

    Args:
        features: ``[B, N, D]`` support features.
        labels: int64 ``[B, N]`` in ``[0, n_classes)``, every class present in every task.
        n_classes: C >= 2.

    Returns:
        ``(W [B, D, C], b [B, C])``, for :func:`metaloop.adapt.head_logits`.
    """
    protos = prototypes(features, labels, n_classes)                 # [B, C, D]
    return 2 * protos.mT, -(protos * protos).sum(-1)                 # [B, D, C], [B, C]


def proto_logits(queries: torch.Tensor, protos: torch.Tensor) -> torch.Tensor:
    """Negative squared Euclidean distances ``-||q - c_k||^2``.

    Args:
        queries: ``[B, M, D]`` query features.
        protos: ``[B, C, D]`` prototypes from :func:`prototypes`.

    Returns:
        ``[B, M, C]`` logits.

    Raises:
        ValueError: the shapes do not line up, or the tensors are on different devices.
    """
    _check_pair("proto_logits", queries, protos)
    diff = queries.unsqueeze(2) - protos.unsqueeze(1)               # [B, M, C, D]
    return -(diff * diff).sum(-1)                                    # [B, M, C]


def refine_prototypes(protos: torch.Tensor, queries: torch.Tensor, scale: float | torch.Tensor,
                      steps: int, temperature: float = REFINE_TEMPERATURE,
                      weight: float = REFINE_WEIGHT) -> torch.Tensor:
    """Pull each prototype toward the unlabelled queries it probably owns (soft k-means).

    Starting from the support prototypes ``c_k``, each of ``steps`` rounds computes every
    query's class probabilities ``w_mk = softmax_k(temperature * scale * -||q_m - c'_k||^2)``
    with the current prototypes ``c'`` and sets::

        c'_k = (c_k + a * sum_m w_mk q_m) / (1 + a * sum_m w_mk),    a = weight * C / M

    so the M queries together weigh ``weight`` times as much as the support set (one unit per
    class): with ``weight = 1``, a query set of one image per class gives each query the
    weight of one support prototype, and copies of the queries (test-time shifts) or of the
    support images change nothing. The prototypes are transductive: every query's score
    depends on the other queries.

    Args:
        protos: ``[B, C, D]`` support prototypes (:func:`prototypes`).
        queries: ``[B, M, D]`` query features of the same tasks.
        scale: the classifier's output scale (> 0): logits ``scale * -||q - c||^2``.
        steps: rounds (>= 0; 0 returns ``protos``).
        temperature: multiplies the logits of the assignment (> 0; below 1 softens it).
        weight: the query set's weight against the support set's (> 0).

    The defaults (temperature 0.5, weight 2, with 10 steps) were chosen on Omniglot's held-out
    background alphabets, within-alphabet 20-way 1-shot (``docs/omniglot.md``).

    Returns:
        ``[B, C, D]`` refined prototypes, differentiable in both inputs.

    Raises:
        ValueError: shapes that do not line up, a bad ``steps`` / ``temperature`` /
            ``weight``, or a number ``scale`` <= 0 (a tensor scale is not read, so that a GPU
            never waits for the check).
    """
    return refine_prototypes_jointly([protos], [queries], [scale], steps, temperature,
                                     weight)[0]


def refine_prototypes_jointly(protos: Sequence[torch.Tensor], queries: Sequence[torch.Tensor],
                              scales: Sequence[float | torch.Tensor], steps: int,
                              temperature: float = REFINE_TEMPERATURE,
                              weight: float = REFINE_WEIGHT) -> list[torch.Tensor]:
    """:func:`refine_prototypes` for an ensemble: one assignment shared by all its members.

    Member ``i`` has its own feature space (``protos[i] [B, C, D_i]``, ``queries[i] [B, M,
    D_i]``, ``scales[i]``); the same M queries and C classes in every member. Each round
    assigns the queries with the members' class probabilities averaged, ``w_mk = (1/E) sum_i
    softmax_k(temperature * scale_i * -||q_im - c'_ik||^2)``, and moves every member's
    prototypes with that ``w`` (the update of :func:`refine_prototypes`). So the members
    agree on which query belongs to which class, as their averaged prediction will; with one
    member this is exactly :func:`refine_prototypes`.

    Args:
        protos: the E members' prototypes, ``[B, C, D_i]`` each.
        queries: the E members' query features, ``[B, M, D_i]`` each.
        scales: the E members' logit scales (floats or 0-dim tensors).
        steps: soft k-means rounds, an int >= 0.
        temperature: multiplies the logits that assign queries to classes (> 0).
        weight: the query set's weight against the support set's (> 0).

    Returns:
        the E refined prototypes, ``[B, C, D_i]`` each, differentiable in every input.

    Raises:
        ValueError: no member, members whose tasks, classes or queries differ, or what
            :func:`refine_prototypes` refuses.
    """
    protos, queries, scales = list(protos), list(queries), list(scales)
    if not protos or not len(protos) == len(queries) == len(scales):
        raise ValueError(f"refine_prototypes_jointly: need one prototype tensor, query tensor "
                         f"and scale per member (at least one), got {len(protos)}, "
                         f"{len(queries)} and {len(scales)}")
    for P, Q in zip(protos, queries):
        _check_pair("refine_prototypes", Q, P)
    shapes = {(tuple(P.shape[:2]), Q.shape[1]) for P, Q in zip(protos, queries)}
    if len(shapes) > 1:
        raise ValueError(f"refine_prototypes_jointly: the members must share tasks, classes "
                         f"and queries; got prototypes {[shape_str(P) for P in protos]} and "
                         f"queries {[shape_str(Q) for Q in queries]}")
    if not isinstance(steps, int) or isinstance(steps, bool) or steps < 0:
        raise ValueError(f"refine_prototypes: steps must be an int >= 0, got {steps!r}")
    for name, v in (("temperature", temperature), ("weight", weight)):
        if not _positive_number(v):
            raise ValueError(f"refine_prototypes: {name} must be a finite number > 0, got {v!r}")
    t = float(temperature)
    for scale in scales:
        if not isinstance(scale, torch.Tensor) and not _positive_number(scale):  # tensor: no sync
            raise ValueError(f"refine_prototypes: scale must be > 0 and finite (a number, or "
                             f"a tensor), got {scale!r}")
    a = float(weight) * protos[0].shape[1] / queries[0].shape[1]    # weight * C / M
    refined = protos
    for _ in range(steps):
        w = cast(torch.Tensor, sum(torch.softmax(t * s * proto_logits(Q, P), -1)   # [B, M, C]
                 for P, Q, s in zip(refined, queries, scales)) * (a / len(protos)))  # per member
        refined = [(P0 + w.mT @ Q) / (1 + w.sum(1).unsqueeze(-1))      # [B, C, D_i]
                   for P0, Q in zip(protos, queries)]
    return list(refined)


def _positive_number(v: object) -> bool:
    """A real number (not a bool or a string) that is finite and > 0."""
    return isinstance(v, numbers.Real) and not isinstance(v, bool) and 0 < float(v) < math.inf


def _check_pair(owner: str, queries: torch.Tensor, protos: torch.Tensor) -> None:
    """ValueError unless ``queries [B, M, D]`` and ``protos [B, C, D]`` line up."""
    check_features(owner, queries)
    if not isinstance(protos, torch.Tensor) or protos.dim() != 3 \
            or protos.shape[0] != queries.shape[0] or protos.shape[2] != queries.shape[2]:
        got = shape_str(protos) if isinstance(protos, torch.Tensor) else type(protos).__name__
        raise ValueError(f"{owner}: need queries [B, M, D] and prototypes [B, C, D], got "
                         f"queries {shape_str(queries)} and prototypes {got}")
    if protos.device != queries.device:
        raise ValueError(f"{owner}: prototypes on {protos.device} but queries on "
                         f"{queries.device}")
