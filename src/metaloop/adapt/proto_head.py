"""Prototype head (Prototypical Networks, Snell et al. 2017), batched over tasks.

Each class is represented by the mean of its support features, its prototype ``c_k``, and a
query ``q`` is scored by the negative squared Euclidean distance ``-||q - c_k||^2``. Expanding
the square, ``-||q - c_k||^2 = 2 q.c_k - ||c_k||^2 - ||q||^2``, and the last term is the same
for every class, so it cancels in the softmax and the argmax: the classifier is the linear
head ``W = 2 C^T``, ``b_k = -||c_k||^2``, a closed-form head like ``ridge_head``'s. Its logits
differ from the negative squared distances by ``||q||^2`` per query (same probabilities, same
cross-entropy, same predictions); ``proto_logits`` gives the distances themselves.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from metaloop.adapt._checks import check_features, check_labels, shape_str

__all__ = ["proto_head", "proto_logits", "prototypes"]


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
        ValueError: the shapes do not line up.
    """
    check_features("proto_logits", queries)
    if not isinstance(protos, torch.Tensor) or protos.dim() != 3 \
            or protos.shape[0] != queries.shape[0] or protos.shape[2] != queries.shape[2]:
        got = shape_str(protos) if isinstance(protos, torch.Tensor) else type(protos).__name__
        raise ValueError(f"proto_logits: need queries [B, M, D] and prototypes [B, C, D], got "
                         f"queries {shape_str(queries)} and prototypes {got}")
    diff = queries.unsqueeze(2) - protos.unsqueeze(1)               # [B, M, C, D]
    return -(diff * diff).sum(-1)                                    # [B, M, C]
