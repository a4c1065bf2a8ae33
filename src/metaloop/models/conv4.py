"""Conv4: the standard few-shot CNN (Vinyals et al. 2016; Finn et al. 2017)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class BatchNorm(nn.Module):
    """Batch normalisation on the statistics of the current batch, in training and testing.

    MAML normalises with batch statistics at test time too, so there are no running-statistics
    buffers at all: nothing is mutated during adaptation, and forward is a pure function of
    (parameters, input). The biased variance, ``eps`` inside the square root, as
    ``F.batch_norm(training=True)``. Learnable ``weight [C]`` and ``bias [C]`` (the MAML
    code's TensorFlow layer, with its defaults, learns the bias alone, with eps 1e-3).

    Inputs ``[N, C, H, W]`` (as ``nn.BatchNorm2d``), ``[N, C]`` or ``[N, C, L]`` (as
    ``nn.BatchNorm1d``): a replacement for torch's layers in a model of your own.

    ``fixed``: None, or a ``(mean [C], var [C])`` pair to normalise with instead of the
    batch's, set only for the duration of ``metaloop.models.bn_stats.fixed_stats``
    (non-transductive scoring).

    Raises:
        ValueError: an input that is not ``[N, C]``, ``[N, C, L]`` or ``[N, C, H, W]`` with
            the layer's C channels; batch statistics of one value per channel (one
            example, or one image whose map has shrunk to 1x1), which would normalise every
            value to 0 and so replace the input by ``bias``; ``fixed`` statistics that are
            not ``[C]`` for the input's C channels (recorded on another network).
    """

    def __init__(self, channels: int, eps: float = 1e-5):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))
        self.fixed: tuple[torch.Tensor, torch.Tensor] | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` normalised per channel with the batch's statistics (or ``fixed``), times
        ``weight`` plus ``bias``; the same shape.

        Args:
            x: ``[N, C]``, ``[N, C, L]`` or ``[N, C, H, W]``.

        Raises:
            ValueError: ``x`` of another rank or with another number of channels than the
                layer's C; no ``fixed`` statistics and one value per channel (a single
                example, or a single image whose map has shrunk to 1x1); ``fixed``
                statistics that are not ``[C]`` (recorded on another network).
        """
        if x.dim() not in (2, 3, 4) or x.shape[1] != self.weight.shape[0]:   # shapes only
            raise ValueError(f"BatchNorm({self.weight.shape[0]}) takes [N, C], [N, C, L] or "
                             f"[N, C, H, W] with C={self.weight.shape[0]} channels (as "
                             f"BatchNorm1d and BatchNorm2d), got {list(x.shape)}")
        if self.fixed is None and x.numel() == x.shape[1]:         # one value per channel
            raise ValueError(f"BatchNorm on batch statistics needs more than one value per "
                             f"channel, but its input {list(x.shape)} has one (a single "
                             f"example, or a single image whose feature map has shrunk to "
                             f"1x1): give more examples at once, larger images, or fixed "
                             f"statistics (metaloop.models.bn_stats)")
        if self.fixed is not None and any(t.shape != x.shape[1:2] for t in self.fixed):
            raise ValueError(f"BatchNorm fixed statistics must be [C] for input "
                             f"{list(x.shape)} of C={x.shape[1]} channels, got mean "
                             f"{list(self.fixed[0].shape)} and var "
                             f"{list(self.fixed[1].shape)} (recorded on another network?)")
        if self.fixed is None and torch._C._functorch.maybe_current_level() is None:
            return F.batch_norm(x, None, None, self.weight, self.bias, True, 0.0, self.eps)
        # Given statistics, or under torch.func transforms (vmap), where the fused kernel's
        # double backward is wrong (pytorch/functorch#534): plain arithmetic, exact there.
        mean, var = self.fixed if self.fixed is not None else batch_stats(x)   # [C], [C]
        c = (-1,) + (1,) * (x.dim() - 2)                          # [C] -> [C, 1, ...] for x
        x = (x - mean.view(c)) * torch.rsqrt(var.view(c) + self.eps)
        return x * self.weight.view(c) + self.bias.view(c)


def batch_stats(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The per-channel mean and biased variance ``[C]`` of ``x`` ``[N, C, H, W]`` (or
    ``[N, C]``, ``[N, C, L]``): the statistics ``BatchNorm`` normalises a batch with."""
    dims = (0, *range(2, x.dim()))                                    # all but C
    mean = x.mean(dims)                                               # [C]
    c = (-1,) + (1,) * (x.dim() - 2)
    return mean, (x - mean.view(c)).square().mean(dims)


class ConvBlock(nn.Module):
    """3x3 conv -> BatchNorm -> ReLU -> 2x2 max-pool, or a stride-2 conv instead of the pool.

    With the max-pool, the ReLU runs after it (the same function, cheaper). Padding 1 on
    every side: where the MAML code's TensorFlow ``'SAME'`` pads a stride-2 conv on an even
    side at the bottom and right only, this gives the same output size on a grid one pixel
    up and left.
    """

    def __init__(self, cin: int, cout: int, pool: str):
        super().__init__()
        self.pool = pool
        self.conv = nn.Conv2d(cin, cout, 3, stride=2 if pool == "stride" else 1, padding=1)
        self.bn = BatchNorm(cout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.bn(self.conv(x))
        if self.pool != "max":
            return F.relu(x)
        # relu(max_pool(x)) == max_pool(relu(x)) exactly (both monotone), and so are their
        # gradients (a window whose max is <= 0 passes no gradient either way), but the ReLU
        # and its backward pass then touch a quarter of the elements.
        return F.relu(F.max_pool2d(x, 2))


class Conv4(nn.Module):
    """Four conv blocks of ``hidden`` filters, then a linear ``head``.

    Args:
        in_channels: image channels.
        hidden: filters per block (64 in Vinyals et al. and in the MAML paper's Omniglot
            net; 32 in its MiniImagenet net).
        out_dim: outputs of the head (the number of ways).
        pool: ``"max"`` (2x2 max-pool per block) or ``"stride"`` (stride-2 convolutions and a
            spatial mean at the end, as the MAML paper's Omniglot network).
        image_size: side of the square input, used to size the head: >= 16 for ``"max"``
            (each pool halves it, rounding down, and a 15x15 image is gone after the
            fourth); any size for ``"stride"`` (each conv halves it rounding up, so a map
            never shrinks below 1x1; up to 16 it ends at 1x1, so a batch of one image has
            no batch statistics in the last block and is refused: ``BatchNorm``).
        readout: how the last feature map ``[N, hidden, h, w]`` becomes features:
            ``"mean"`` (spatial mean, ``hidden`` features; the MAML paper's stride net) or
            ``"flatten"`` (``hidden * h * w`` features: 256 for the stride net on 28x28, at
            no extra backbone cost; it did not help ProtoNet on the Omniglot challenge
            pilot, ``docs/omniglot.md``'s ablation table). A max-pool net on 28x28 ends at
            1x1, where the two agree. None: ``"mean"`` for stride, ``"flatten"`` for max.

    Shapes:
        x ``[N, in_channels, image_size, image_size]`` -> ``[N, out_dim]``.

    Raises:
        ValueError: an unknown ``pool`` or ``readout``, a size or count that is not a
            positive int, or ``image_size`` < 16 with ``pool="max"``.
    """

    def __init__(self, in_channels: int = 1, hidden: int = 64, out_dim: int = 5,
                 pool: str = "max", image_size: int = 28, readout: str | None = None):
        super().__init__()
        if pool not in ("max", "stride"):
            raise ValueError(f"Conv4 pool must be 'max' or 'stride', got {pool!r}")
        readout = readout or ("mean" if pool == "stride" else "flatten")
        if readout not in ("mean", "flatten"):
            raise ValueError(f"Conv4 readout must be 'mean' or 'flatten', got {readout!r}")
        for name, v in (("in_channels", in_channels), ("hidden", hidden), ("out_dim", out_dim),
                        ("image_size", image_size)):
            if not isinstance(v, int) or isinstance(v, bool) or v <= 0:
                raise ValueError(f"Conv4 {name} must be a positive int, got {v!r}")
        if pool == "max" and image_size < 16:     # 15 -> 7 -> 3 -> 1 -> 0: nothing to pool
            raise ValueError(f"Conv4 image_size must be >= 16 with pool 'max' (four 2x2 "
                             f"pools), got {image_size}; use pool 'stride' (any size) or "
                             f"larger images")
        self.pool, self.in_channels, self.image_size = pool, in_channels, image_size
        self.readout = readout
        chans = (in_channels, hidden, hidden, hidden, hidden)
        self.body = nn.Sequential(*(ConvBlock(a, b, pool) for a, b in zip(chans[:-1], chans[1:])))
        with torch.no_grad():
            d = self.features(torch.zeros(2, in_channels, image_size, image_size)).shape[1]
        self.feature_dim = d
        self.head = nn.Linear(d, out_dim)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Body output ``[N, feature_dim]``.

        Raises:
            ValueError: x not floating point or not ``[N, in_channels, H, W]``, or, with
                ``pool="max"``, H or W below 16 (four 2x2 pools would leave nothing),
                naming the built size.
        """
        if x.dim() != 4 or x.shape[1] != self.in_channels:
            raise ValueError(f"Conv4 expects [N, {self.in_channels}, H, W] input, "
                             f"got {list(x.shape)}")
        if not x.is_floating_point():
            raise ValueError(f"Conv4 expects floating-point images, got {x.dtype} (uint8 "
                             f"images: x.float() / 255)")
        if self.pool == "max" and min(x.shape[-2:]) < 16:     # a shape, never a value
            raise ValueError(f"Conv4 with pool 'max' needs inputs of at least 16x16 (four 2x2 "
                             f"pools), but input {list(x.shape)} is {x.shape[-2]}x"
                             f"{x.shape[-1]}; it was built for {self.image_size}x"
                             f"{self.image_size}: resize the images, or use pool 'stride'")
        h = self.body(x)                                   # [N, hidden, h, w]
        return h.mean((2, 3)) if self.readout == "mean" else h.flatten(1)

    def forward(self, x: torch.Tensor, head: bool = True) -> torch.Tensor:
        """``[N, C, H, W] -> [N, out_dim]``, or the features ``[N, feature_dim]`` if not head.

        Raises:
            ValueError: as ``features``; with the head, an input whose size gives other than
                ``feature_dim`` features (the net was built for another ``image_size``, or
                the image is not square).
        """
        h = self.features(x)
        if not head:
            return h
        if h.shape[-1] != self.feature_dim:
            fix = (f"build it with image_size={x.shape[-1]} or resize the images"
                   if x.shape[-2] == x.shape[-1] else
                   "it reads square images: pad or resize them to a square")
            raise ValueError(f"Conv4 was built for {self.image_size}x{self.image_size} inputs "
                             f"({self.feature_dim} features for its head), but input "
                             f"{list(x.shape)} gives {h.shape[-1]}; {fix}")
        return self.head(h)
