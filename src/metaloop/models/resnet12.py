"""ResNet-12: the residual few-shot backbone of MetaOptNet (Lee et al. 2019), after TADAM's."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from metaloop.models.conv4 import BatchNorm


class ResBlock(nn.Module):
    """Three 3x3 conv -> BatchNorm -> LeakyReLU(0.1) layers (no activation before the sum), a
    1x1 conv + BatchNorm shortcut, LeakyReLU after the sum, then a 2x2 max-pool (floor)."""

    def __init__(self, cin: int, cout: int, slope: float):
        super().__init__()
        self.slope = slope
        self.conv1 = nn.Conv2d(cin, cout, 3, padding=1, bias=False)
        self.bn1 = BatchNorm(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1, bias=False)
        self.bn2 = BatchNorm(cout)
        self.conv3 = nn.Conv2d(cout, cout, 3, padding=1, bias=False)
        self.bn3 = BatchNorm(cout)
        self.shortcut = nn.Conv2d(cin, cout, 1, bias=False)
        self.bn_shortcut = BatchNorm(cout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.leaky_relu(self.bn1(self.conv1(x)), self.slope)
        h = F.leaky_relu(self.bn2(self.conv2(h)), self.slope)
        h = self.bn3(self.conv3(h))
        h = F.leaky_relu(h + self.bn_shortcut(self.shortcut(x)), self.slope)
        return F.max_pool2d(h, 2)


class ResNet12(nn.Module):
    """Four residual blocks of widths ``(w, 2.5w, 5w, 10w)``, a spatial mean, a linear ``head``.

    With ``width=64`` the blocks have 64, 160, 320 and 640 channels, as in Lee et al. (2019)
    (``int(2.5 * w)`` for the second: 80 for ``width=32``); TADAM (Oreshkin et al. 2018),
    whose network theirs follows, had 64, 128, 256 and 512. Each block is Lee et al.'s:
    three bias-free 3x3 convs with BatchNorm, a bias-free 1x1 conv + BatchNorm shortcut,
    LeakyReLU (``negative_slope``), a 2x2 max-pool. It differs from MetaOptNet's code in four ways:

    * features are the spatial mean of the last map (``10 * width``); MetaOptNet flattens it
      (640 x 5 x 5 = 16,000 features on 84x84 images);
    * no DropBlock or dropout (MetaOptNet: rate 0.1, dropout after the first two blocks,
      DropBlock in the last two);
    * its BatchNorm uses the statistics of the batch it is given, like Conv4's, in training
      and at test time, so that forward is a pure function of (parameters, input);
      MetaOptNet's uses running statistics at test time;
    * PyTorch's default initialisation; MetaOptNet's is Kaiming-normal (fan-out).

    A 28x28 Omniglot image leaves the four 2x2 pools at 1x1; an 84x84 image at 5x5.

    Args:
        in_channels: image channels.
        width: channels of the first block (64 in the paper).
        out_dim: outputs of the head (the number of ways).
        image_size: side of the square input (at least 16, so that four pools leave >= 1x1).
        negative_slope: of the LeakyReLU, in [0, 1) (0.1 in the paper).

    Shapes:
        x ``[N, in_channels, image_size, image_size]`` -> ``[N, out_dim]``; features
        ``[N, 10 * width]``. Any input of at least 16x16 works (the spatial mean makes the
        features independent of the size).

    Raises:
        ValueError: a size or count that is not a positive int, ``image_size`` < 16, or a
            ``negative_slope`` outside [0, 1).
    """

    def __init__(self, in_channels: int = 1, width: int = 64, out_dim: int = 5,
                 image_size: int = 28, negative_slope: float = 0.1):
        super().__init__()
        for name, v in (("in_channels", in_channels), ("width", width), ("out_dim", out_dim),
                        ("image_size", image_size)):
            if not isinstance(v, int) or isinstance(v, bool) or v <= 0:
                raise ValueError(f"ResNet12 {name} must be a positive int, got {v!r}")
        if not isinstance(negative_slope, (int, float)) or isinstance(negative_slope, bool) \
                or not 0 <= negative_slope < 1:
            raise ValueError(f"ResNet12 negative_slope must be a number in [0, 1), got "
                             f"{negative_slope!r}")
        if image_size < 16:
            raise ValueError(f"ResNet12 image_size must be >= 16 (four 2x2 pools), got "
                             f"{image_size}")
        self.in_channels, self.image_size = in_channels, image_size
        widths = (in_channels, width, int(2.5 * width), 5 * width, 10 * width)
        self.body = nn.Sequential(*(ResBlock(a, b, negative_slope)
                                    for a, b in zip(widths[:-1], widths[1:])))
        self.feature_dim = widths[-1]
        self.head = nn.Linear(self.feature_dim, out_dim)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Body output ``[N, feature_dim]``.

        Raises:
            ValueError: x not floating point or not ``[N, in_channels, H, W]``, or H or W
                below 16 (four 2x2 pools would leave nothing), naming the built size.
        """
        if x.dim() != 4 or x.shape[1] != self.in_channels:
            raise ValueError(f"ResNet12 expects [N, {self.in_channels}, H, W] input, "
                             f"got {list(x.shape)}")
        if not x.is_floating_point():
            raise ValueError(f"ResNet12 expects floating-point images, got {x.dtype} (uint8 "
                             f"images: x.float() / 255)")
        if min(x.shape[-2:]) < 16:                            # a shape, never a value
            raise ValueError(f"ResNet12 needs inputs of at least 16x16 (four 2x2 pools), but "
                             f"input {list(x.shape)} is {x.shape[-2]}x{x.shape[-1]}; it was "
                             f"built for {self.image_size}x{self.image_size}: resize the "
                             f"images")
        return self.body(x).mean((2, 3))

    def forward(self, x: torch.Tensor, head: bool = True) -> torch.Tensor:
        """``[N, C, H, W] -> [N, out_dim]``, or the features ``[N, feature_dim]`` if not head.

        Raises:
            ValueError: as ``features``.
        """
        h = self.features(x)
        return self.head(h) if head else h
