"""The conditional VAE (Sohn et al. 2015): q(z|x, y) and p(x|z, y) with a one-hot label y.

It is the ``VAE`` with a flag, ``n_classes > 0`` (variants are flags, not subclasses), plus
class-conditional sampling that checks the classes asked for.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from metaloop.generative.nets import check_generator, check_positive
from metaloop.generative.vae import VAE


def CVAE(n_classes: int, latent: int = 50, **kwargs) -> VAE:
    """A ``VAE`` whose encoder and decoder both see the one-hot class.

    Args:
        n_classes: number of classes, >= 1.
        latent: size L of z.
        **kwargs: the other ``VAE`` arguments (arch, likelihood, beta, ...).

    Returns:
        A ``VAE`` with ``n_classes`` set; its ``loss``, ``posterior`` and ``sample`` need labels.

    Raises:
        ValueError: for ``n_classes`` < 1 or a bad ``VAE`` argument.
    """
    n_classes = check_positive("n_classes of a CVAE", n_classes)
    return VAE(latent, n_classes=n_classes, **kwargs)


def check_classes(model: VAE, classes: Sequence[int] | torch.Tensor) -> torch.Tensor:
    """The classes as int64 ``[K]``, after checking the model knows each one.

    Raises:
        ValueError: if the model is unconditional, no class is given, a class is not an
            integer, or a class is outside ``[0, n_classes)``.
    """
    if not model.conditional:
        raise ValueError("class-conditional sampling needs a conditional model (a CVAE)")
    t = torch.as_tensor(classes)
    if t.numel() == 0:
        raise ValueError("no classes to sample: give at least one class")
    if t.is_floating_point() or t.is_complex() or t.dtype == torch.bool:
        raise ValueError(f"classes must be integer class indices, got {t.dtype} values "
                         f"{t.reshape(-1).tolist()[:5]}")
    t = t.to(torch.int64).reshape(-1)
    bad = [int(c) for c in t if not 0 <= int(c) < model.n_classes]
    if bad:
        raise ValueError(f"unknown class(es) {bad}: this CVAE knows classes "
                         f"0..{model.n_classes - 1}")
    return t


@torch.no_grad()
def sample_classes(model: VAE, classes: Sequence[int] | torch.Tensor, per_class: int,
                   generator: torch.Generator | None = None) -> torch.Tensor:
    """``per_class`` samples of each class, one row per class.

    Args:
        model: a conditional ``VAE``.
        classes: the K classes to draw.
        per_class: samples per class.
        generator: optional random generator.

    Returns:
        ``[K, per_class, C, H, W]`` mean images.

    Raises:
        ValueError: for an unknown class, ``per_class`` < 1, or a ``generator`` that is not a
            ``torch.Generator`` or None.
    """
    t = check_classes(model, classes)
    per_class = check_positive("samples per class", per_class)
    check_generator("sample_classes", generator)
    y = t.repeat_interleave(per_class).to(model.decoder.bias.device)   # [K * per_class]
    x = model.sample(len(y), y=y, generator=generator)         # [K * per_class, C, H, W]
    return x.reshape(len(t), per_class, *x.shape[1:])
