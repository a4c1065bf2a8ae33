"""Variational bounds on log p(x): the ELBO (Kingma & Welling 2014) and the IWAE bound (Burda
et al. 2016), for any model with a Gaussian posterior and a prior N(0, I).

With q(z|x) = N(mu, diag(sigma^2)) and w = p(x|z) p(z) / q(z|x) for z ~ q:

- ELBO = E_q[log p(x|z)] - KL(q(z|x) || N(0, I)), the KL in closed form;
- IWAE_k = E[log (1/k) sum_i w_i] >= ELBO, non-decreasing in k, and -> log p(x) as k -> inf.

``-IWAE_k`` with k = 5000 is the NLL estimate that the literature reports.
"""

from __future__ import annotations

import math
import numbers
from typing import Protocol, cast

import torch
from tqdm.auto import tqdm

from metaloop._progress import tqdm_defaults
from metaloop.generative import likelihoods
from metaloop.generative.nets import (
    check_flag,
    check_generator,
    check_seed,
    draw_device,
    latent_log_normal,
)


class LatentModel(Protocol):
    """What the bounds need from a model; ``VAE`` (and so the CVAE) provides it."""

    def posterior(self, x: torch.Tensor, y: torch.Tensor | None = None
                  ) -> tuple[torch.Tensor, torch.Tensor]:
        """``[B, C, H, W]`` -> mu ``[B, L]``, log-variance ``[B, L]`` of q(z|x)."""

    def log_px(self, x: torch.Tensor, z: torch.Tensor, y: torch.Tensor | None = None
               ) -> torch.Tensor:
        """x ``[B, C, H, W]``, z ``[..., B, L]`` -> log p(x|z) ``[..., B]``."""


def _count(what: str, name: str, value) -> int:
    """``value`` as an int if it is a positive integer (Python's or NumPy's, not a bool)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise ValueError(f"{what}: {name} must be a positive int, got {value!r}")
    return int(value)


def _check_latent_model(what: str, model) -> None:
    """A ValueError unless ``model`` has ``posterior`` and ``log_px`` (a VAE or CVAE)."""
    if not (callable(getattr(model, "posterior", None))
            and callable(getattr(model, "log_px", None))):
        raise ValueError(f"{what} needs a VAE or CVAE (a model with an encoder posterior "
                         f"q(z|x) and log_px), got {type(model).__name__}; an AE has no "
                         f"posterior, so it has no ELBO or IWAE bound")


def _check_pixels(what: str, model, x) -> None:
    """Data ``[N, C, H, W]`` that suits the model's likelihood (finite, in [0, 1], ...)."""
    if not isinstance(x, torch.Tensor) or x.dim() != 4 or len(x) == 0:
        got = list(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
        raise ValueError(f"{what} needs data [N, C, H, W] with N >= 1, got {got}")
    kind = getattr(model, "likelihood", None)
    if kind is not None:
        likelihoods.check_data(x, kind)
    elif not x.is_floating_point() or not bool(torch.isfinite(x).all()):
        raise ValueError(f"{what} needs finite float pixels, got dtype {x.dtype} with "
                         f"{'NaN or inf' if x.is_floating_point() else 'integer'} values")


def _check_gaussian(what: str, mu, logvar) -> None:
    """A ValueError naming both shapes unless ``mu`` and ``logvar`` are tensors of one shape."""
    if not (isinstance(mu, torch.Tensor) and isinstance(logvar, torch.Tensor)) \
            or mu.shape != logvar.shape:
        shapes = [list(t.shape) if isinstance(t, torch.Tensor) else type(t).__name__
                  for t in (mu, logvar)]
        raise ValueError(f"{what} needs mu and logvar of one shape [..., L], got mu "
                         f"{shapes[0]} and logvar {shapes[1]}")


def gaussian_kl(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """KL(N(mu, diag(exp(logvar))) || N(0, I)) in closed form.

    Args:
        mu: ``[..., L]`` means.
        logvar: ``[..., L]`` log-variances.

    Returns:
        ``[...]`` KL divergences in nats.

    Raises:
        ValueError: ``mu`` and ``logvar`` that are not tensors of one shape.
    """
    _check_gaussian("gaussian_kl", mu, logvar)
    return 0.5 * (mu.square() + torch.exp(logvar) - 1.0 - logvar).sum(-1)


def reparameterize(mu: torch.Tensor, logvar: torch.Tensor, n: int | None = None,
                   generator: torch.Generator | None = None) -> torch.Tensor:
    """z = mu + sigma * eps with eps ~ N(0, I): a sample that is differentiable in mu and sigma.

    Args:
        mu: ``[B, L]`` means.
        logvar: ``[B, L]`` log-variances.
        n: number of samples per row; ``None`` for one sample without a leading dim.
        generator: optional random generator for eps, on any device: eps is drawn on the
            generator's device and moved to ``mu``'s (a CPU generator gives the same eps
            whether ``mu`` is on the CPU or on a GPU).

    Returns:
        ``[B, L]`` if ``n`` is None, else ``[n, B, L]``.

    Raises:
        ValueError: ``mu`` and ``logvar`` that are not tensors of one shape, an ``n`` that
            is not None or an int >= 1, or a ``generator`` that is not a
            ``torch.Generator`` or None.
    """
    _check_gaussian("reparameterize", mu, logvar)
    check_generator("reparameterize", generator)
    if n is not None:
        n = _count("reparameterize", "n", n)
    shape = mu.shape if n is None else (n, *mu.shape)
    eps = torch.randn(shape, generator=generator, dtype=mu.dtype,
                      device=draw_device(generator, mu.device))   # [*shape]
    eps = eps.to(mu.device)                                       # no copy on the same device
    return mu + torch.exp(0.5 * logvar) * eps


def elbo(model: LatentModel, x: torch.Tensor, y: torch.Tensor | None = None,
         generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
    """The ELBO with one reparameterised sample and the analytic KL.

    Args:
        model: a ``LatentModel``.
        x: ``[B, C, H, W]`` data.
        y: int64 ``[B]`` labels for a conditional model, else ``None``.
        generator: optional random generator.

    Returns:
        ``{"elbo", "recon", "kl"}``, each ``[B]`` in nats, with ``elbo = recon - kl`` and
        ``recon`` the one-sample estimate of E_q[log p(x|z)].

    Raises:
        ValueError: a model without ``posterior`` and ``log_px`` (an ``AE``), or a
            ``generator`` that is not a ``torch.Generator`` or None. The pixels
            are not checked here, as this is the training loss computed every step (a check
            would cost a host sync per step): NaN pixels give NaN bounds. Check data once
            with ``likelihoods.check_data``, or use ``evaluate_bounds``, which does.
    """
    _check_latent_model("elbo", model)
    check_generator("elbo", generator)
    return _elbo(model, x, y, generator)


def _elbo(model: LatentModel, x: torch.Tensor, y: torch.Tensor | None = None,
          generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
    """``elbo`` without the model check (the per-step training loss)."""
    mu, logvar = model.posterior(x, y)                         # [B, L] each
    z = reparameterize(mu, logvar, generator=generator)        # [B, L]
    recon = model.log_px(x, z, y)                              # [B]
    kl = gaussian_kl(mu, logvar)                               # [B]
    return {"elbo": recon - kl, "recon": recon, "kl": kl}


def log_weights(model: LatentModel, x: torch.Tensor, k: int, y: torch.Tensor | None = None,
                generator: torch.Generator | None = None) -> torch.Tensor:
    """log w = log p(x|z) + log p(z) - log q(z|x) for k samples z ~ q(z|x).

    Args:
        model: a ``LatentModel``.
        x: ``[B, C, H, W]`` data.
        k: samples per example.
        y: int64 ``[B]`` labels for a conditional model, else ``None``.
        generator: optional random generator.

    Returns:
        ``[k, B]`` log importance weights.
    """
    mu, logvar = model.posterior(x, y)                         # [B, L]
    z = reparameterize(mu, logvar, n=k, generator=generator)   # [k, B, L]
    zeros = torch.zeros_like(mu)
    log_pz = latent_log_normal(z, zeros, zeros)                # [k, B]
    log_qz = latent_log_normal(z, mu, logvar)                  # [k, B]
    return model.log_px(x, z, y) + log_pz - log_qz             # [k, B]


def iwae_bound(model: LatentModel, x: torch.Tensor, k: int, y: torch.Tensor | None = None,
               chunk: int = 500, generator: torch.Generator | None = None) -> torch.Tensor:
    """The importance-weighted bound log (1/k) sum_i w_i, computed ``chunk`` samples at a time.

    A running log-sum-exp over the chunks keeps memory at ``chunk * B`` decoder outputs, so
    k = 5000 fits in a few hundred MB for B = 100 on 28x28 images.

    Args:
        model: a ``LatentModel``.
        x: ``[B, C, H, W]`` data.
        k: importance samples per example (k = 1 is a one-sample ELBO).
        y: int64 ``[B]`` labels for a conditional model, else ``None``.
        chunk: samples per decoder pass.
        generator: optional random generator.

    Returns:
        ``[B]`` bounds in nats; ``-iwae_bound(...).mean()`` estimates the NLL.

    Raises:
        ValueError: if ``k`` or ``chunk`` is not a positive int (NumPy ints are taken); a
            model without ``posterior`` and ``log_px`` (an ``AE``); data that is not
            ``[B, C, H, W]``, or pixels that do not suit the model's likelihood
            (``likelihoods.check_data``: NaN, outside [0, 1], ...), as ``evaluate_bounds``
            checks; a ``generator`` that is not a ``torch.Generator`` or None. (An
            evaluation, not a per-step loss: the pixel check costs one host sync per call,
            against ``k`` decoder passes.)
    """
    for name, v in (("k", k), ("chunk", chunk)):
        if isinstance(v, bool) or not isinstance(v, numbers.Integral) or v < 1:
            raise ValueError(f"iwae_bound needs k >= 1 and chunk >= 1 (ints), got "
                             f"{name}={v!r}")
    k, chunk = int(k), int(chunk)
    _check_latent_model("iwae_bound", model)
    check_generator("iwae_bound", generator)
    _check_pixels("iwae_bound", model, x)
    return _iwae_bound(model, x, k, y, chunk, generator)


def _iwae_bound(model: LatentModel, x: torch.Tensor, k: int, y: torch.Tensor | None,
                chunk: int, generator: torch.Generator | None) -> torch.Tensor:
    """``iwae_bound`` without the checks."""
    total = None
    for start in range(0, k, chunk):
        lw = log_weights(model, x, min(chunk, k - start), y, generator)   # [c, B]
        part = torch.logsumexp(lw, dim=0)                                 # [B]
        total = part if total is None else torch.logaddexp(total, part)
    return cast(torch.Tensor, total) - math.log(k)                          # k >= 1


@torch.no_grad()
def evaluate_bounds(model: LatentModel, x: torch.Tensor, y: torch.Tensor | None = None, *,
             k: int = 0, batch_size: int = 100, chunk: int = 500, seed: int = 0,
             progress: bool = False) -> dict[str, float]:
    """Test-set averages: ELBO, its parts, and (if ``k`` > 0) the IWAE_k NLL estimate.

    Args:
        model: a ``LatentModel`` (put in eval mode by the caller if it matters).
        x: ``[N, C, H, W]`` data (already binarised for a Bernoulli decoder).
        y: int64 ``[N]`` labels for a conditional model, else ``None``.
        k: importance samples for the NLL; 0 skips it.
        batch_size: examples per pass.
        chunk: samples per decoder pass inside ``iwae_bound``.
        seed: seed of the sampling noise, for reproducible numbers.
        progress: show a progress bar.

    Returns:
        ``{"elbo", "recon", "kl", "n"}`` and, if ``k`` > 0, ``"nll"`` and ``"k"``: means over
        the N examples in nats (``elbo = recon - kl``; ``nll`` is ``-IWAE_k``).

    Raises:
        ValueError: no examples; ``k`` not an int >= 0 (NumPy ints are taken); ``batch_size``
            or ``chunk`` not a positive int; a model without ``posterior`` and ``log_px``
            (an ``AE``: the bounds need a VAE or CVAE); labels that are not one per
            example; or, for a model with a ``likelihood``, pixels that do not suit it
            (``likelihoods.check_data``: NaN, outside [0, 1], or not binary for
            ``"bernoulli"``); a ``seed`` that is not an int torch takes, or a ``progress``
            that is not True or False.
    """
    if not isinstance(x, torch.Tensor) or x.dim() != 4 or len(x) == 0:
        got = list(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
        raise ValueError(f"evaluate_bounds needs data [N, C, H, W] with N >= 1, got {got}")
    if isinstance(k, bool) or not isinstance(k, numbers.Integral) or k < 0:
        raise ValueError(f"evaluate_bounds: k must be an int >= 0 (0 skips the NLL), got {k!r}")
    k = int(k)
    batch_size = _count("evaluate_bounds", "batch_size", batch_size)
    chunk = _count("evaluate_bounds", "chunk", chunk)
    seed = check_seed("evaluate_bounds", seed)
    check_flag("evaluate_bounds", "progress", progress)
    _check_latent_model("evaluate_bounds", model)
    if y is not None and (not isinstance(y, torch.Tensor) or y.shape != x.shape[:1]):
        got = list(y.shape) if isinstance(y, torch.Tensor) else type(y).__name__
        raise ValueError(f"evaluate_bounds: labels must be one per example, [{len(x)}], "
                         f"got {got}")
    kind = getattr(model, "likelihood", None)
    if kind is not None:
        likelihoods.check_data(x, kind)
    g = torch.Generator().manual_seed(seed)
    sums = {"elbo": 0.0, "recon": 0.0, "kl": 0.0, "nll": 0.0}
    starts = range(0, len(x), batch_size)
    for s in tqdm(starts, desc=f"eval (k={k})", disable=not progress, leave=False,
                  **tqdm_defaults()):
        xb = x[s:s + batch_size]
        yb = None if y is None else y[s:s + batch_size]
        for name, v in _elbo(model, xb, yb, generator=g).items():
            sums[name] += float(v.sum())
        if k:
            sums["nll"] -= float(_iwae_bound(model, xb, k, yb, chunk, g).sum())
    n = len(x)
    out = {name: v / max(n, 1) for name, v in sums.items()}
    if not k:
        del out["nll"]
    else:
        out["k"] = k
    out["n"] = n
    return out
