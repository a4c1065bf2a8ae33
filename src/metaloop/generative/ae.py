"""The plain autoencoder: the baseline whose decoder makes a poor generator.

It is trained only to reconstruct: z = f(x) is deterministic and nothing shapes the
distribution of the codes. Decoding z ~ N(0, I) then lands wherever N(0, I) happens to fall
relative to the codes: at small L, on a few blurry blends of the training data; at large L,
almost always off the thin set the codes occupy, where the decoder outputs "hiss". Fitting a
Gaussian to the codes (``fit_code_gaussian``) helps at small L and much less at large L.
"""

from __future__ import annotations

import torch
from torch import nn

from metaloop.generative import likelihoods
from metaloop.generative.nets import (
    Decoder,
    Encoder,
    check_generator,
    check_number,
    check_positive,
    draw_device,
)


class AE(nn.Module):
    """Deterministic encoder z = f(x) and a decoder p(x|z) with the same pixel likelihood and
    architecture as the ``VAE``, so that the two differ only in the three VAE ingredients.

    Args:
        latent: size L of z.
        image_shape: ``(C, H, W)``.
        arch: ``"mlp"`` or ``"conv"``.
        hidden: MLP hidden widths (the decoder uses them reversed).
        likelihood: reconstruction likelihood, see ``metaloop.generative.likelihoods``.
        output_bias: optional ``[n_params * C, H, W]`` initial decoder output bias.

    Raises:
        ValueError: for a latent size <= 0 or an unknown arch/likelihood.
    """

    n_classes = 0
    conditional = False

    def __init__(self, latent: int = 50, *, image_shape=(1, 28, 28), arch: str = "mlp",
                 hidden: tuple[int, ...] = (200, 200), likelihood: str = "bernoulli",
                 output_bias: torch.Tensor | None = None):
        super().__init__()
        latent = check_positive("latent size", latent)
        likelihoods.check_kind(likelihood)
        hidden = tuple(check_positive("hidden width", h) for h in hidden)
        self.encoder = Encoder(latent, image_shape=image_shape, arch=arch, hidden=hidden)
        self.latent, self.likelihood = latent, likelihood
        self.image_shape = self.encoder.image_shape
        out_ch = likelihoods.n_params(likelihood) * self.image_shape[0]
        self.decoder = Decoder(latent, out_ch, image_shape=self.image_shape, arch=arch,
                               hidden=tuple(reversed(hidden)), output_bias=output_bias)

    def codes(self, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        """z = f(x): ``[B, C, H, W]`` -> ``[B, L]``. ``y`` must be None."""
        return self.encoder(x, y)

    def log_px(self, x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """log p(x|z): x ``[B, C, H, W]``, z ``[..., B, L]`` -> ``[..., B]``."""
        return likelihoods.log_prob(self.decoder(z), x, self.likelihood)

    def loss(self, x: torch.Tensor, y: torch.Tensor | None = None,
             generator: torch.Generator | None = None) -> tuple[torch.Tensor, dict[str, float]]:
        """Reconstruction loss -log p(x | f(x)), averaged over the batch.

        Args:
            x: ``[B, C, H, W]`` data.
            y: must be None (the AE is unconditional).
            generator: unused; accepted so that every model trains through one loop.

        Returns:
            The scalar loss and ``{"loss", "recon"}`` (``recon`` = mean log p(x|f(x))).
        """
        recon = self.log_px(x, self.codes(x, y))               # [B]
        loss = -recon.mean()
        return loss, {"loss": float(loss.detach()), "recon": float(recon.detach().mean())}

    @torch.no_grad()
    def decode_mean(self, z: torch.Tensor) -> torch.Tensor:
        """Mean images for given codes: ``[..., B, L]`` -> ``[..., B, C, H, W]``."""
        return likelihoods.mean(self.decoder(z), self.likelihood)

    @torch.no_grad()
    def reconstruct(self, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        """``[B, C, H, W]`` -> mean image of p(x | f(x)), ``[B, C, H, W]``."""
        return self.decode_mean(self.codes(x, y))

    @torch.no_grad()
    def sample(self, n: int, generator: torch.Generator | None = None,
               code_gaussian: tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
        """Decode z ~ N(0, I), or z ~ N(mean, cov) of ``code_gaussian``: ``[n, C, H, W]``, in
        the model's dtype and on its device.

        Args:
            n: number of samples.
            generator: optional random generator. z is drawn on its device (None: torch's
                default CPU generator) and moved to the model's.
            code_gaussian: ``(mean [L], cov [L, L])`` from ``fit_code_gaussian``; None for
                the prior N(0, I) that a VAE would use.

        Raises:
            ValueError: ``n`` not a positive int, a ``generator`` that is not a
                ``torch.Generator`` or None, or a ``code_gaussian`` that is not a finite
                mean ``[L]`` and a positive definite covariance ``[L, L]`` for this model's
                L.
        """
        n = check_positive("number of samples", n)
        check_generator("sample", generator)
        if code_gaussian is not None:
            _check_code_gaussian(code_gaussian, self.latent)
        eps = torch.randn(n, self.latent, generator=generator,
                          device=draw_device(generator, "cpu"))  # [n, L], the generator's device
        eps = eps.to(self.decoder.bias)                             # the model's dtype, device
        if code_gaussian is None:
            return self.decode_mean(eps)
        mean, cov = code_gaussian
        chol, info = torch.linalg.cholesky_ex(cov.double())         # [L, L]
        if int(info) != 0 or not bool(torch.isfinite(mean).all()):
            raise ValueError("code_gaussian must have a finite mean and a symmetric positive "
                             "definite covariance (as fit_code_gaussian returns with "
                             "jitter >= 0 on finite data); this one is not")
        chol = chol.to(eps)
        return self.decode_mean(mean.to(eps) + eps @ chol.T)


def _check_code_gaussian(code_gaussian, latent: int) -> None:
    shapes = None
    if isinstance(code_gaussian, (tuple, list)) and len(code_gaussian) == 2 \
            and all(isinstance(t, torch.Tensor) for t in code_gaussian):
        shapes = [list(t.shape) for t in code_gaussian]
        if shapes == [[latent], [latent, latent]]:
            return
    raise ValueError(f"code_gaussian must be (mean [L], cov [L, L]) with L = {latent} (the "
                     f"model's latent size), from fit_code_gaussian; got "
                     f"{shapes if shapes is not None else type(code_gaussian).__name__}")


@torch.no_grad()
def fit_code_gaussian(model: AE, x: torch.Tensor, batch_size: int = 1000,
                      jitter: float = 1e-5) -> tuple[torch.Tensor, torch.Tensor]:
    """Fit N(mean, cov) (full covariance) to the codes f(x) of data ``x``.

    Args:
        model: a trained ``AE``.
        x: ``[N, C, H, W]`` data, N >= 2.
        batch_size: examples per encoder pass.
        jitter: added to the diagonal (relative to its mean) so the Cholesky factor exists;
            a finite number >= 0.

    Returns:
        mean ``[L]`` and covariance ``[L, L]``.

    Raises:
        ValueError: fewer than 2 examples, data that is not a float tensor of finite
            values, a ``batch_size`` that is not a positive int, or a ``jitter`` that is not
            a finite number >= 0 (a negative one can leave the covariance indefinite).
    """
    check_positive("batch_size", batch_size)
    check_number("jitter", jitter, strict=False)
    if not isinstance(x, torch.Tensor) or not x.is_floating_point():
        got = x.dtype if isinstance(x, torch.Tensor) else type(x).__name__
        raise ValueError(f"fit_code_gaussian needs float data [N, C, H, W], got {got}")
    if len(x) < 2:
        raise ValueError(f"fit_code_gaussian needs at least 2 examples, got {len(x)}")
    if not bool(torch.isfinite(x).all()):
        raise ValueError("fit_code_gaussian needs finite data; x holds NaN or inf (the fitted "
                         "mean and covariance would be NaN)")
    z = torch.cat([model.codes(x[s:s + batch_size]) for s in range(0, len(x), batch_size)])
    z = z.double()                                              # [N, L]
    mean = z.mean(0)
    cov = torch.cov(z.T).reshape(model.latent, model.latent)
    cov = cov + jitter * cov.diagonal().mean().clamp_min(1e-12) * torch.eye(
        model.latent, dtype=cov.dtype, device=cov.device)
    dtype = model.decoder.bias.dtype
    return mean.to(dtype), cov.to(dtype)
