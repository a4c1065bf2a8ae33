"""The variational autoencoder (Kingma & Welling 2014), optionally conditional on a label.

Three things turn an autoencoder into a generator:

1. z is random during training: z ~ q(z|x) = N(mu(x), diag(sigma(x)^2));
2. a loss on the distribution of z: beta * KL(q(z|x) || N(0, I)), so that codes fill the prior
   that samples are later drawn from;
3. the reparameterisation z = mu + sigma * eps, eps ~ N(0, I), so that the sampled loss is
   differentiable in the encoder and the whole model trains with SGD.

The conditional VAE is this class with ``n_classes > 0`` (see ``metaloop.generative.cvae``).
"""

from __future__ import annotations

import operator

import torch
from torch import nn

from metaloop.generative import likelihoods
from metaloop.generative.bounds import elbo
from metaloop.generative.nets import (
    Decoder,
    Encoder,
    check_generator,
    check_number,
    check_positive,
    draw_device,
)


class VAE(nn.Module):
    """Gaussian encoder q(z|x[, y]), prior N(0, I), decoder p(x|z[, y]) with a pixel likelihood.

    Args:
        latent: size L of z.
        image_shape: ``(C, H, W)``.
        arch: ``"mlp"`` (IWAE paper: 784-200-200-L, tanh) or ``"conv"``.
        hidden: MLP hidden widths (the decoder uses them reversed).
        likelihood: ``"bernoulli"`` for binary data, ``"gaussian"`` or ``"cbernoulli"`` for
            data in [0, 1]; see ``metaloop.generative.likelihoods``.
        beta: weight of the KL term in the training loss (1 is the ELBO; the reported
            bounds always use 1).
        n_classes: condition encoder and decoder on a label in ``[0, n_classes)``; 0 for none.
        output_bias: optional ``[n_params * C, H, W]`` initial decoder output bias, e.g.
            ``nets.logit_of_mean(train_images)``.

    Raises:
        ValueError: for a latent size <= 0, a beta that is not a finite number >= 0, or an
            unknown arch/likelihood.
    """

    def __init__(self, latent: int = 50, *, image_shape=(1, 28, 28), arch: str = "mlp",
                 hidden: tuple[int, ...] = (200, 200), likelihood: str = "bernoulli",
                 beta: float = 1.0, n_classes: int = 0, output_bias: torch.Tensor | None = None):
        super().__init__()
        latent = check_positive("latent size", latent)
        n_classes_given = n_classes
        likelihoods.check_kind(likelihood)
        check_number("beta", beta, 0.0, strict=False)
        try:
            n_classes = -1 if isinstance(n_classes, bool) else operator.index(n_classes)
        except TypeError:
            n_classes = -1
        if n_classes < 0:
            raise ValueError(f"n_classes must be an int >= 0, got {n_classes_given!r}")
        hidden = tuple(check_positive("hidden width", h) for h in hidden)
        self.encoder = Encoder(2 * latent, image_shape=image_shape, arch=arch, hidden=hidden,
                               n_classes=n_classes)
        self.latent, self.likelihood, self.beta = latent, likelihood, float(beta)
        self.n_classes, self.image_shape = n_classes, self.encoder.image_shape
        out_ch = likelihoods.n_params(likelihood) * self.image_shape[0]
        self.decoder = Decoder(latent, out_ch, image_shape=self.image_shape, arch=arch,
                               hidden=tuple(reversed(hidden)), n_classes=n_classes,
                               output_bias=output_bias)

    @property
    def conditional(self) -> bool:
        """Whether the model takes labels."""
        return self.n_classes > 0

    def posterior(self, x: torch.Tensor, y: torch.Tensor | None = None
                  ) -> tuple[torch.Tensor, torch.Tensor]:
        """q(z|x[, y]): ``[B, C, H, W]`` -> mu ``[B, L]``, log-variance ``[B, L]``."""
        mu, logvar = self.encoder(x, y).chunk(2, dim=-1)
        return mu, logvar

    def decode(self, z: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        """Likelihood parameters: z ``[..., B, L]`` -> ``[..., B, n_params * C, H, W]``."""
        return self.decoder(z, y)

    def log_px(self, x: torch.Tensor, z: torch.Tensor, y: torch.Tensor | None = None
               ) -> torch.Tensor:
        """log p(x|z[, y]): x ``[B, C, H, W]``, z ``[..., B, L]`` -> ``[..., B]``."""
        return likelihoods.log_prob(self.decode(z, y), x, self.likelihood)

    def loss(self, x: torch.Tensor, y: torch.Tensor | None = None,
             generator: torch.Generator | None = None) -> tuple[torch.Tensor, dict[str, float]]:
        """Training loss -(recon - beta * KL), averaged over the batch.

        Args:
            x: ``[B, C, H, W]`` data.
            y: int64 ``[B]`` labels (conditional model only).
            generator: optional random generator for the reparameterisation noise.

        Returns:
            The scalar loss and ``{"loss", "elbo", "recon", "kl"}`` batch means (nats).
        """
        terms = elbo(self, x, y, generator=generator)
        loss = -(terms["recon"] - self.beta * terms["kl"]).mean()
        metrics = {name: float(v.detach().mean()) for name, v in terms.items()}
        return loss, {"loss": float(loss.detach()), **metrics}

    @torch.no_grad()
    def sample(self, n: int, y: torch.Tensor | None = None,
               generator: torch.Generator | None = None) -> torch.Tensor:
        """Mean images E[x|z[, y]] for z ~ N(0, I): ``[n, C, H, W]``, in the model's dtype
        and on its device.

        Args:
            n: number of samples.
            y: int64 ``[n]`` labels (conditional model only), on the model's device.
            generator: optional random generator. z is drawn on its device (None: torch's
                default CPU generator) and moved to the model's, so a seeded CPU generator
                gives the same z on every device.

        Raises:
            ValueError: ``n`` not a positive int, or a ``generator`` that is not a
                ``torch.Generator`` or None.
        """
        n = check_positive("number of samples", n)
        check_generator("sample", generator)
        z = torch.randn(n, self.latent, generator=generator,
                        device=draw_device(generator, "cpu"))  # [n, L], the generator's device
        z = z.to(self.decoder.bias)                            # the model's dtype and device
        return likelihoods.mean(self.decode(z, y), self.likelihood)

    @torch.no_grad()
    def decode_mean(self, z: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        """Mean images for given codes: ``[..., B, L]`` -> ``[..., B, C, H, W]``."""
        return likelihoods.mean(self.decode(z, y), self.likelihood)

    @torch.no_grad()
    def reconstruct(self, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        """Mean image at the posterior mean: ``[B, C, H, W]`` -> ``[B, C, H, W]``."""
        return self.decode_mean(self.posterior(x, y)[0], y)

    @torch.no_grad()
    def codes(self, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        """Posterior means, the codes used for interpolation: ``[B, C, H, W]`` -> ``[B, L]``."""
        return self.posterior(x, y)[0]
