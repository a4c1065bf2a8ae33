"""Pixel likelihoods p(x | z) for the decoders: Bernoulli for binary data, two for [0, 1] data.

A decoder outputs ``n_params(kind) * C`` channels per pixel. These functions turn those
outputs into a log-likelihood summed over pixels, a mean image, or a sample.

- ``"bernoulli"``: one logit per pixel. For binary data (the literature's binarised MNIST,
  Omniglot, Fashion-MNIST); log-likelihoods are in nats and comparable to published NLLs.
- ``"gaussian"``: a mean (through a sigmoid) and a log-scale per pixel, the scale floored at
  ``GAUSSIAN_MIN_SCALE`` so that constant background pixels cannot drive it to zero.
- ``"cbernoulli"``: the continuous Bernoulli (Loaiza-Ganem & Cunningham 2019), a proper
  density on [0, 1] with one logit per pixel.

Densities of continuous data are not comparable with the probabilities of binary data.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

KINDS = ("bernoulli", "gaussian", "cbernoulli")
GAUSSIAN_MIN_SCALE = 1e-2
_CB_SMALL = 1e-2  # |logit| below which the continuous Bernoulli uses its Taylor series


def n_params(kind: str) -> int:
    """Decoder output channels per image channel for likelihood ``kind``.

    Raises:
        ValueError: for an unknown ``kind``.
    """
    check_kind(kind)
    return 2 if kind == "gaussian" else 1


def check_kind(kind: str) -> None:
    """Raise ValueError naming ``kind`` unless it is one of ``KINDS``."""
    if kind not in KINDS:
        raise ValueError(f"unknown likelihood {kind!r}; choose one of {', '.join(KINDS)}")


def check_data(x: torch.Tensor, kind: str) -> None:
    """Check that the pixels ``x`` suit likelihood ``kind``.

    Args:
        x: ``[N, C, H, W]`` float pixels.
        kind: one of ``KINDS``.

    Raises:
        ValueError: if ``kind`` is ``"bernoulli"`` and ``x`` holds values other than 0 and 1,
            or if any pixel is NaN or lies outside [0, 1].
    """
    check_kind(kind)
    if not x.is_floating_point():
        raise ValueError(f"pixels must be float in [0, 1], got dtype {x.dtype}")
    if not bool(torch.isfinite(x).all()):
        raise ValueError("pixels must be finite floats in [0, 1], got NaN or inf values")
    if x.numel() and (x.min() < 0 or x.max() > 1):
        raise ValueError(f"pixels must lie in [0, 1], got range [{x.min():.3g}, {x.max():.3g}]")
    if kind == "bernoulli" and not bool(((x == 0) | (x == 1)).all()):
        grey = int(((x != 0) & (x != 1)).sum())
        raise ValueError(
            f"the Bernoulli decoder needs binary pixels, but {grey:,} of the {x.numel():,} "
            "pixels lie strictly between 0 and 1; binarise the data (--binarize dynamic or "
            "static) or use a likelihood for continuous data (--likelihood gaussian or "
            "cbernoulli)")


def log_prob(out: torch.Tensor, x: torch.Tensor, kind: str) -> torch.Tensor:
    """log p(x | decoder output), summed over pixels.

    Args:
        out: ``[..., B, n_params(kind) * C, H, W]`` decoder outputs.
        x: ``[B, C, H, W]`` pixels, broadcast against the leading dims of ``out``.
        kind: one of ``KINDS``.

    Returns:
        ``[..., B]`` log-likelihoods in nats.
    """
    if kind == "bernoulli":
        # log p = x*l - softplus(l): one elementwise pass fewer than BCE-with-logits.
        return (out * x).flatten(-3).sum(-1) - F.softplus(out).flatten(-3).sum(-1)
    if kind == "cbernoulli":
        return _cbernoulli_log_prob(out, x)
    if kind == "gaussian":
        mean, log_scale = _gaussian_params(out)
        z = (x - mean) * torch.exp(-log_scale)                                 # [..., B, C, H, W]
        lp = -0.5 * z.square() - log_scale - 0.5 * math.log(2 * math.pi)
        return lp.flatten(-3).sum(-1)
    check_kind(kind)
    raise AssertionError("unreachable")


def mean(out: torch.Tensor, kind: str) -> torch.Tensor:
    """The mean image E[x | z] ``[..., C, H, W]`` from decoder outputs ``[..., n*C, H, W]``."""
    if kind == "bernoulli":
        return torch.sigmoid(out)
    if kind == "cbernoulli":
        return _cbernoulli_mean(out)
    if kind == "gaussian":
        return _gaussian_params(out)[0]
    check_kind(kind)
    raise AssertionError("unreachable")


def _gaussian_params(out: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    m, s = out.chunk(2, dim=-3)
    log_scale = math.log(GAUSSIAN_MIN_SCALE) + F.softplus(s)
    return torch.sigmoid(m), log_scale


def _cbernoulli_log_norm(logits: torch.Tensor) -> torch.Tensor:
    """log C(lambda) of the continuous Bernoulli, stable near lambda = 1/2 (logit 0)."""
    # C(lam) = 2 atanh(1 - 2 lam) / (1 - 2 lam), which with lam = sigmoid(l) is l / tanh(l / 2);
    # it tends to 2 as l -> 0, where the Taylor series log 2 + l^2 / 12 replaces it.
    small = logits.abs() < _CB_SMALL
    safe = torch.where(small, torch.ones_like(logits), logits)
    exact = torch.log(safe / torch.tanh(safe / 2))
    taylor = math.log(2.0) + logits.square() / 12
    return torch.where(small, taylor, exact)


def _cbernoulli_log_prob(logits: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    # log p(x) = x log lam + (1-x) log(1-lam) + log C(lam), with lam = sigmoid(l).
    lp = x * logits - F.softplus(logits) + _cbernoulli_log_norm(logits)
    return lp.flatten(-3).sum(-1)


def _cbernoulli_mean(logits: torch.Tensor) -> torch.Tensor:
    # E[x] = 1 / (1 - exp(-l)) - 1 / l, which tends to 1/2 + l / 12 as l -> 0.
    small = logits.abs() < _CB_SMALL
    safe = torch.where(small, torch.ones_like(logits), logits)
    exact = 1 / (1 - torch.exp(-safe)) - 1 / safe
    return torch.where(small, 0.5 + logits / 12, exact)
