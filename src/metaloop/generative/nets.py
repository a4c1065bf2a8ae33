"""Encoders and decoders for 28x28 images: the IWAE paper's MLP and a small conv net.

Both take an optional one-hot label, concatenated to the flattened features (encoder) or to z
(decoder), which is how the conditional VAE conditions on the class.

- ``"mlp"``: Burda et al. (2016), 1 stochastic layer: ``784-200-200-50`` with tanh units.
- ``"conv"``: two stride-2 4x4 convolutions (32, 64 channels, ReLU) to 7x7, then a dense layer
  of 256; the decoder mirrors it with transposed convolutions.
"""

from __future__ import annotations

import math
import numbers
import operator
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from metaloop._random import check_generator as _check_generator
from metaloop._random import draw_device  # noqa: F401  (the generative draws')
from metaloop.meta._common import check_inputs

ARCHS = ("mlp", "conv")


def check_positive(name: str, value: Any, *, exact: bool = False) -> int:
    """``value`` as an int, if it is a positive integer: Python's or any other that
    ``operator.index`` takes (NumPy's, a 0-dim integer tensor), not a bool; with ``exact``,
    a Python int only (a setting that is written to JSON as it is).

    Raises:
        ValueError: naming ``name`` and the value.
    """
    if isinstance(value, bool) or (exact and not isinstance(value, int)):
        index = None
    else:
        try:
            index = operator.index(value)
        except TypeError:
            index = None
    if index is None or index <= 0:
        raise ValueError(f"{name} must be a positive int, got {value!r}")
    return index


def check_number(name: str, value: Any, low: float = 0.0, strict: bool = True) -> float:
    """``value`` as a float, if it is a finite real number > ``low`` (>= with ``strict``
    False); not a bool or a string.

    Raises:
        ValueError: naming ``name`` and the value.
    """
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) \
        and math.isfinite(value) and (value > low if strict else value >= low)
    if not ok:
        raise ValueError(f"{name} must be {'>' if strict else '>='} {low:g} (a finite "
                         f"number), got {value!r}")
    return float(value)


def check_generator(what: str, generator: object) -> None:
    """Raise ValueError naming ``what`` unless ``generator`` is a ``torch.Generator`` or
    None (``metaloop._random.check_generator``; a seed given in its place failed deep inside
    torch, naming neither)."""
    _check_generator(f"{what}:", generator, kind=ValueError)


def check_seed(what: str, seed: object, added: int = 0) -> int:
    """``seed`` as an int, if it is an integer (Python's or NumPy's, not a bool) that torch
    takes as a seed, also with ``added`` (what ``what`` adds to it) added.

    Raises:
        ValueError: naming ``what`` and the seed.
    """
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral) \
            or not -2 ** 63 <= seed <= 2 ** 64 - 1 - added:  # type: ignore[operator]  # Integral
        raise ValueError(f"{what}: seed must be an int in [-2**63, 2**64 - {1 + added}] "
                         f"(torch's seeds), got {seed!r}")
    return int(seed)


def check_flag(what: str, name: str, value: object) -> None:
    """Raise ValueError naming ``what`` and ``name`` unless ``value`` is True or False (a
    string such as "no" was taken as True)."""
    if not isinstance(value, bool):
        raise ValueError(f"{what}: {name} must be True or False, got {value!r}")


def _check_arch(arch: str, image_shape: tuple[int, ...]) -> tuple[int, int, int]:
    """``image_shape`` as a tuple of three Python ints, after checking it and ``arch``."""
    if arch not in ARCHS:
        raise ValueError(f"unknown architecture {arch!r}; choose one of {', '.join(ARCHS)}")
    if len(image_shape) != 3:
        raise ValueError(f"image_shape must be (C, H, W), got {image_shape!r}")
    c, h, w = (check_positive(f"image {name}", v)
               for name, v in zip(("channels", "height", "width"), image_shape))
    if arch == "conv" and (h % 4 or w % 4):
        raise ValueError(f"the conv architecture needs H and W divisible by 4, got {image_shape}")
    return c, h, w


def _mlp(dims: tuple[int, ...], act: type[nn.Module]) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(dims[:-1], dims[1:])):
        layers.append(nn.Linear(a, b))
        if i < len(dims) - 2:
            layers.append(act())
    return nn.Sequential(*layers)


def _one_hot(y: torch.Tensor | None, n_classes: int, batch_shape: torch.Size,
             device: torch.device | None = None) -> torch.Tensor | None:
    if n_classes == 0:
        if y is not None:
            raise ValueError("labels were given to an unconditional network (n_classes = 0)")
        return None
    if y is None:
        raise ValueError(f"this network is conditional on {n_classes} classes: pass labels y")
    if not isinstance(y, torch.Tensor) or y.dtype != torch.int64 or y.shape != batch_shape:
        got = f"{y.dtype} {list(y.shape)}" if isinstance(y, torch.Tensor) else type(y).__name__
        raise ValueError(f"labels must be int64 of shape {list(batch_shape)}, got {got}")
    if device is not None and y.device != device:
        raise ValueError(f"labels are on {y.device} but the inputs are on {device}; move one "
                         f"of them")
    if y.numel() and (y.min() < 0 or y.max() >= n_classes):
        raise ValueError(f"labels must lie in [0, {n_classes}), got range "
                         f"[{int(y.min())}, {int(y.max())}]")
    return F.one_hot(y, n_classes).to(torch.get_default_dtype())


class Encoder(nn.Module):
    """x (and label) -> ``out_dim`` numbers: ``2L`` for a Gaussian posterior, ``L`` for an AE.

    Args:
        out_dim: outputs per image.
        image_shape: ``(C, H, W)``.
        arch: ``"mlp"`` or ``"conv"``.
        hidden: widths of the MLP's hidden layers (``"mlp"`` only).
        n_classes: number of classes to condition on, 0 for none.

    Shapes:
        x ``[B, C, H, W]``, y int64 ``[B]`` -> ``[B, out_dim]``.
    """

    def __init__(self, out_dim: int, *, image_shape=(1, 28, 28), arch: str = "mlp",
                 hidden: tuple[int, ...] = (200, 200), n_classes: int = 0):
        super().__init__()
        image_shape = _check_arch(arch, tuple(image_shape))
        out_dim = check_positive("encoder out_dim", out_dim)
        hidden = tuple(check_positive("hidden width", h) for h in hidden)
        self.n_classes, self.image_shape = n_classes, image_shape
        c, h, w = image_shape
        self.body: nn.Module
        if arch == "mlp":
            self.body = nn.Flatten()
            self.head = _mlp((c * h * w + n_classes, *hidden, out_dim), nn.Tanh)
        else:
            self.body = nn.Sequential(
                nn.Conv2d(c, 32, 4, 2, 1), nn.ReLU(),          # [B, 32, H/2, W/2]
                nn.Conv2d(32, 64, 4, 2, 1), nn.ReLU(),         # [B, 64, H/4, W/4]
                nn.Flatten())
            self.head = _mlp((64 * (h // 4) * (w // 4) + n_classes, 256, out_dim), nn.ReLU)

    def forward(self, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        """``[B, C, H, W]`` (and labels ``[B]``) -> ``[B, out_dim]``.

        Raises:
            ValueError: ``x`` that is not float images of the model's ``(C, H, W)``, or on
                another device or in another float dtype than the model.
        """
        if not isinstance(x, torch.Tensor) or x.dim() != 4 \
                or tuple(x.shape[1:]) != self.image_shape or not x.is_floating_point():
            got = (f"{x.dtype} {list(x.shape)}" if isinstance(x, torch.Tensor)
                   else type(x).__name__)
            raise ValueError(f"images must be float [B, {', '.join(map(str, self.image_shape))}]"
                             f" (the model's image_shape), got {got}")
        check_inputs("the encoder", self, x=x)
        f = self.body(x)                                       # [B, F]
        onehot = _one_hot(y, self.n_classes, x.shape[:1], x.device)
        if onehot is not None:
            f = torch.cat([f, onehot.to(f.dtype)], dim=-1)     # [B, F + n_classes]
        return self.head(f)


class Decoder(nn.Module):
    """z (and label) -> per-pixel likelihood parameters.

    The output has a learned per-pixel bias, initialised from ``output_bias`` (the IWAE code
    starts it at the logit of the training mean, which saves many early epochs).

    Args:
        latent: size L of z.
        out_channels: channels of the output (``n_params * C``).
        image_shape: ``(C, H, W)``.
        arch: ``"mlp"`` or ``"conv"``.
        hidden: widths of the MLP's hidden layers, listed from z upwards (``"mlp"`` only).
        n_classes: number of classes to condition on, 0 for none.
        output_bias: optional ``[out_channels, H, W]`` initial per-pixel bias.

    Shapes:
        z ``[..., B, L]``, y int64 ``[B]`` -> ``[..., B, out_channels, H, W]``.
    """

    def __init__(self, latent: int, out_channels: int, *, image_shape=(1, 28, 28),
                 arch: str = "mlp", hidden: tuple[int, ...] = (200, 200), n_classes: int = 0,
                 output_bias: torch.Tensor | None = None):
        super().__init__()
        image_shape = _check_arch(arch, tuple(image_shape))
        latent = check_positive("latent size", latent)
        self.n_classes, self.arch, self.latent = n_classes, arch, latent
        _, h, w = image_shape
        self.out_shape = (out_channels, h, w)
        if arch == "mlp":
            self.head = _mlp((latent + n_classes, *hidden, out_channels * h * w), nn.Tanh)
            self.body: nn.Module = nn.Identity()
        else:
            self.head = nn.Sequential(_mlp((latent + n_classes, 256, 64 * (h // 4) * (w // 4)),
                                           nn.ReLU), nn.ReLU())
            self.body = nn.Sequential(
                nn.Unflatten(-1, (64, h // 4, w // 4)),
                nn.ConvTranspose2d(64, 32, 4, 2, 1), nn.ReLU(),    # [N, 32, H/2, W/2]
                nn.ConvTranspose2d(32, out_channels, 4, 2, 1))      # [N, out, H, W]
        self.bias = nn.Parameter(torch.zeros(self.out_shape))
        if output_bias is not None:
            if tuple(output_bias.shape) != self.out_shape:
                raise ValueError(f"output_bias must have shape {list(self.out_shape)}, "
                                 f"got {list(output_bias.shape)}")
            with torch.no_grad():
                self.bias.copy_(output_bias)

    def forward(self, z: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        """``[..., B, L]`` (and labels ``[B]``) -> ``[..., B, out_channels, H, W]``.

        Raises:
            ValueError: codes ``z`` whose last size is not the model's latent size L.
        """
        if not isinstance(z, torch.Tensor) or z.dim() < 2 or z.shape[-1] != self.latent:
            got = list(z.shape) if isinstance(z, torch.Tensor) else type(z).__name__
            raise ValueError(f"codes z must be [..., B, L] with L = {self.latent} (the "
                             f"model's latent size), got {got}")
        onehot = _one_hot(y, self.n_classes, z.shape[-2:-1], z.device)
        if onehot is not None:
            onehot = onehot.to(z.dtype).expand(*z.shape[:-1], -1)
            z = torch.cat([z, onehot], dim=-1)                 # [..., B, L + n_classes]
        lead = z.shape[:-1]
        h = self.head(z.reshape(-1, z.shape[-1]))              # [N, F]
        if self.arch == "mlp":
            out = h.reshape(-1, *self.out_shape)               # [N, out, H, W]
        else:
            out = self.body(h)                                 # [N, out, H, W]
        return out.reshape(*lead, *self.out_shape) + self.bias


def logit_of_mean(images: torch.Tensor, n_params: int = 1, eps: float = 1e-3) -> torch.Tensor:
    """The IWAE code's output-bias initialisation: logit of the per-pixel training mean.

    Args:
        images: ``[N, C, H, W]``: float pixels in [0, 1], or uint8 images (255 = ink, as
            ``fit_generative`` takes them), scaled to [0, 1] as ``data.to_unit`` does.
        n_params: decoder outputs per channel; extra parameter channels get bias 0.
        eps: clamp of the mean away from 0 and 1.

    Returns:
        ``[n_params * C, H, W]`` bias, in the default dtype for uint8 images, else in theirs.

    Raises:
        ValueError: no images, images that are not ``[N, C, H, W]``, or pixels that are
            neither uint8 nor finite floats in [0, 1].
    """
    if not isinstance(images, torch.Tensor) or images.dim() != 4 or len(images) == 0:
        got = list(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__
        raise ValueError(f"logit_of_mean needs images [N, C, H, W] with N >= 1, got {got}")
    if images.dtype == torch.uint8:
        images = images.to(torch.get_default_dtype()) / 255.0
    elif not images.is_floating_point():
        raise ValueError(f"logit_of_mean needs uint8 images or float pixels in [0, 1], got "
                         f"{images.dtype}")
    elif not bool(((images >= 0) & (images <= 1)).all()):            # False for NaN too
        raise ValueError("logit_of_mean needs float pixels in [0, 1] (not NaN), got values "
                         "outside it")
    m = images.mean(0).clamp(eps, 1 - eps)                     # [C, H, W]
    logit = torch.log(m) - torch.log1p(-m)
    return torch.cat([logit] + [torch.zeros_like(logit)] * (n_params - 1), dim=0)


def latent_log_normal(z: torch.Tensor, mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """log N(z; mu, diag(exp(logvar))) summed over the last dim: ``[..., B, L] -> [..., B]``."""
    return -0.5 * (((z - mu).square() * torch.exp(-logvar)) + logvar
                   + math.log(2 * math.pi)).sum(-1)
