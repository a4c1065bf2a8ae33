"""Sample quality, measured by a classifier trained on real data.

A small CNN is trained on the real training images (grey levels in [0, 1], which is also what
the decoders' mean images are). For a set of generated images it gives three numbers:

- ``recognisable``: the fraction of samples the classifier assigns to one class with
  probability >= ``confidence`` (0.9): "how often is a sample recognisably something";
- ``inception_score``: exp E_x KL(p(y|x) || p(y)) (Salimans et al. 2016) with this domain
  classifier in place of Inception: high when samples are both recognisable and varied
  (at most the number of classes);
- ``frechet``: the Frechet distance between Gaussians fitted to the classifier's penultimate
  features of the samples and of real test images (FID, Heusel et al. 2017, with this
  classifier's features). Lower is better, 0 for the real distribution itself. It catches
  what confidence alone misses: "hiss" that fools the classifier into a confident label
  still sits far from real images in feature space.

The same numbers for real test images are the ceiling to compare against.
"""

from __future__ import annotations

import numbers
from typing import cast

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from metaloop._progress import tqdm_defaults
from metaloop._random import seeded_rng
from metaloop.generative.data import to_unit
from metaloop.generative.nets import check_flag, check_number, check_positive, check_seed


class Classifier(nn.Module):
    """Two stride-2 5x5 convolutions (16, 32 channels) and a 128-unit layer.

    Built for one image size (28x28 by default, the built-in sets'); each convolution halves
    a side, rounding up (28 -> 14 -> 7).

    Args:
        n_classes: outputs K.
        in_channels: C, 1 (grey) or 3 (RGB).
        image_size: the side S of the square images (or ``(H, W)``).

    Shapes:
        x ``[B, C, H, W]`` in [0, 1] -> logits ``[B, K]``; ``features``: ``[B, 128]``.
    """

    def __init__(self, n_classes: int, in_channels: int = 1,
                 image_size: int | tuple[int, int] = 28):
        super().__init__()
        n_classes = check_positive("n_classes", n_classes)
        in_channels = check_positive("classifier in_channels", in_channels)
        sides = (image_size, image_size) if isinstance(image_size, numbers.Integral) \
            else tuple(cast(tuple, image_size))
        h, w = (check_positive("classifier image size", v) for v in sides)
        self.image_shape = (in_channels, h, w)
        mh, mw = (h + 3) // 4, (w + 3) // 4                    # the last map: ceil(side / 4)
        self.body = nn.Sequential(
            nn.Conv2d(in_channels, 16, 5, 2, 2), nn.ReLU(),    # [B, 16, H/2, W/2]
            nn.Conv2d(16, 32, 5, 2, 2), nn.ReLU(),             # [B, 32, H/4, W/4] (7x7 at 28)
            nn.Flatten(), nn.Linear(32 * mh * mw, 128), nn.ReLU())
        self.head = nn.Linear(128, n_classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, C, H, W]`` -> penultimate features ``[B, 128]``.

        Raises:
            ValueError: images of another shape than the classifier's ``image_shape``.
        """
        if x.dim() != 4 or tuple(x.shape[1:]) != self.image_shape:
            raise ValueError(f"the classifier was built for images "
                             f"[B, {', '.join(map(str, self.image_shape))}], got "
                             f"{list(x.shape)}")
        return self.body(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, C, H, W]`` -> logits ``[B, K]``."""
        return self.head(self.features(x))


def train_classifier(images: torch.Tensor, labels: torch.Tensor, n_classes: int, *,
                     epochs: int = 2, batch_size: int = 128, lr: float = 2e-3, seed: int = 0,
                     progress: bool = True) -> Classifier:
    """Train a ``Classifier`` on real images.

    Args:
        images: uint8 ``[N, C, H, W]`` (the classifier is built for that C, H and W, and
            trained on their device: the CPU or a GPU).
        labels: int64 ``[N]`` in ``[0, n_classes)``, on the images' device.
        n_classes: number of classes.
        epochs: passes over the data.
        batch_size: examples per step.
        lr: Adam learning rate.
        seed: seed of initialisation and shuffling.
        progress: show a progress bar.

    Returns:
        The trained classifier, in eval mode, on the images' device. Its initial weights
        and the shuffling are drawn on the CPU, so the same seed starts it the same on
        every device.

    Raises:
        ValueError: no images, images that are not uint8 ``[N, C, H, W]``, an ``n_classes``
            that is not an int >= 2, labels that are not int64 ``[N]`` in
            ``[0, n_classes)`` on the images' device, bad epochs, batch size or rate, a
            ``seed`` that is not an int torch takes, or a ``progress`` that is not True or
            False.
    """
    check_positive("classifier epochs", epochs)
    seed = check_seed("train_classifier", seed)
    check_flag("train_classifier", "progress", progress)
    check_positive("classifier batch_size", batch_size)
    check_number("classifier lr", lr)
    if not isinstance(n_classes, numbers.Integral) or isinstance(n_classes, bool) or \
            n_classes < 2:
        raise ValueError(f"train_classifier needs n_classes >= 2 (an int), got {n_classes!r}: "
                         f"a classifier of one class has nothing to tell apart, and "
                         f"invert_classifier / confidence_report refuse it")
    n_classes = int(n_classes)
    if not isinstance(images, torch.Tensor) or images.dtype != torch.uint8 \
            or images.dim() != 4 or len(images) == 0:
        got = (f"{images.dtype} {list(images.shape)}" if isinstance(images, torch.Tensor)
               else type(images).__name__)
        raise ValueError(f"train_classifier needs uint8 images [N, C, H, W] with N >= 1, "
                         f"got {got}")
    if not isinstance(labels, torch.Tensor) or images.shape[:1] != labels.shape:
        got = list(labels.shape) if isinstance(labels, torch.Tensor) else type(labels).__name__
        raise ValueError(f"images {list(images.shape)} and labels {got} disagree on N")
    if labels.dtype != torch.int64:
        raise ValueError(f"labels must be int64 class indices, got {labels.dtype}")
    if labels.device != images.device:
        raise ValueError(f"labels are on {labels.device} but the images on {images.device}; "
                         f"move one of them")
    lo, hi = int(labels.min()), int(labels.max())
    if lo < 0 or hi >= n_classes:
        raise ValueError(f"labels must lie in [0, n_classes={n_classes}), got range "
                         f"[{lo}, {hi}]")
    g = torch.Generator().manual_seed(seed)
    with seeded_rng(seed):                # the CPU's generator: CUDA is left alone
        clf = Classifier(n_classes, images.shape[1], tuple(images.shape[-2:]))
    clf.to(images.device)                 # initialised on the CPU: the same on every device
    opt = torch.optim.Adam(clf.parameters(), lr=lr)
    for _ in tqdm(range(epochs), desc="classifier", unit="epoch", disable=not progress,
                  **tqdm_defaults()):
        perm = torch.randperm(len(images), generator=g).to(images.device)       # [N]
        for s in range(0, len(images), batch_size):
            idx = perm[s:s + batch_size]
            loss = F.cross_entropy(clf(to_unit(images[idx])), labels[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    return clf.eval()


@torch.no_grad()
def predict(clf: Classifier, x: torch.Tensor, batch_size: int = 1000
            ) -> tuple[torch.Tensor, torch.Tensor]:
    """Class probabilities ``[N, K]`` and features ``[N, 128]`` of float images ``[N, C, H, W]``,
    moved to the classifier's device and cast to its dtype (the samples of a float64 model
    score as float32 ones); both on the classifier's device."""
    w = clf.head.weight
    x = x.to(w.device, w.dtype) if x.is_floating_point() else x.to(w.device)
    probs, feats = [], []
    for s in range(0, len(x), batch_size):
        f = clf.features(x[s:s + batch_size])
        feats.append(f)
        probs.append(torch.softmax(clf.head(f), dim=-1))
    return torch.cat(probs), torch.cat(feats)


def frechet_distance(a: torch.Tensor, b: torch.Tensor) -> float:
    """Frechet distance between Gaussians fitted to feature sets ``a [N, D]`` and ``b [M, D]``.

    ||m_a - m_b||^2 + tr(S_a + S_b - 2 (S_a^1/2 S_b S_a^1/2)^1/2), in float64 via eigh.
    """
    a, b = a.double(), b.double()
    ma, mb = a.mean(0), b.mean(0)
    sa, sb = torch.cov(a.T), torch.cov(b.T)
    w, v = torch.linalg.eigh(sa)
    root_a = (v * w.clamp_min(0).sqrt()) @ v.T                 # [D, D]
    m = root_a @ sb @ root_a
    tr_sqrt = torch.linalg.eigvalsh((m + m.T) / 2).clamp_min(0).sqrt().sum()
    return float((ma - mb).square().sum() + sa.trace() + sb.trace() - 2 * tr_sqrt)


def class_frechet_distance(a: torch.Tensor, labels_a: torch.Tensor, b: torch.Tensor,
                           labels_b: torch.Tensor) -> float:
    """The mean over classes of the Frechet distance between the class's features in ``a``
    and in ``b``: how far the samples meant as class c lie from real images of class c.

    Args:
        a: features ``[N, D]`` (e.g. of samples), with their intended classes ``labels_a [N]``.
        b: reference features ``[M, D]`` (e.g. of real images), with labels ``labels_b [M]``.

    Returns:
        The mean of ``frechet_distance`` over the classes with at least two rows on each side.

    Raises:
        ValueError: if the label counts do not match the rows, or no class has two rows on
            each side.
    """
    if labels_a.shape != (len(a),) or labels_b.shape != (len(b),):
        raise ValueError(f"class_frechet_distance needs one label per row, got "
                         f"{tuple(labels_a.shape)} for {len(a)} rows and "
                         f"{tuple(labels_b.shape)} for {len(b)}")
    labels_a, labels_b = labels_a.to(a.device), labels_b.to(b.device)   # masks of their rows
    ds = [frechet_distance(a[labels_a == c], b[labels_b == c])
          for c in torch.unique(labels_a).tolist()
          if int((labels_a == c).sum()) >= 2 and int((labels_b == c).sum()) >= 2]
    if not ds:
        raise ValueError("class_frechet_distance: no class has two rows on each side")
    return sum(ds) / len(ds)


@torch.no_grad()
def sample_quality(clf: Classifier, samples: torch.Tensor, real: torch.Tensor, *,
                   confidence: float = 0.9) -> dict[str, float]:
    """Score generated images with a classifier trained on real data.

    Args:
        clf: a trained ``Classifier``.
        samples: float ``[N, C, H, W]`` generated (mean) images in [0, 1], the classifier's
            shape.
        real: float ``[M, C, H, W]`` real test images in [0, 1], for the Frechet distance.
        confidence: probability above which a sample counts as recognisable.

    Returns:
        ``{"recognisable", "inception_score", "frechet", "mean_confidence"}``.

    Raises:
        ValueError: fewer than two samples or real images, images that are not finite
            floats in [0, 1], or a ``confidence`` outside ``(0, 1]``.
    """
    if isinstance(confidence, bool) or not isinstance(confidence, (int, float)) \
            or not 0 < confidence <= 1:
        raise ValueError(f"confidence must be a probability in (0, 1], got {confidence!r}")
    for name, t in (("samples", samples), ("real", real)):
        _check_pixels(name, t)
    if len(samples) < 2 or len(real) < 2:
        raise ValueError(f"sample_quality needs >= 2 samples and real images, got "
                         f"{len(samples)} and {len(real)}")
    p, f = predict(clf, samples)                               # [N, K], [N, 128]
    _, f_real = predict(clf, real)
    top = p.max(-1).values
    py = p.mean(0, keepdim=True)                               # [1, K]
    kl = (p * (torch.log(p.clamp_min(1e-12)) - torch.log(py.clamp_min(1e-12)))).sum(-1)
    return {"recognisable": float((top >= confidence).float().mean()),
            "inception_score": float(torch.exp(kl.mean())),
            "frechet": frechet_distance(f, f_real),
            "mean_confidence": float(top.mean())}


def _check_pixels(name: str, x: object) -> None:
    """Float images ``[N, C, H, W]``, finite, in [0, 1] (what the classifier was trained on)."""
    if not isinstance(x, torch.Tensor) or not x.is_floating_point() or x.dim() != 4:
        got = f"{x.dtype} {list(x.shape)}" if isinstance(x, torch.Tensor) else type(x).__name__
        raise ValueError(f"{name} must be float images [N, C, H, W] in [0, 1], got {got} "
                         f"(uint8 images: divide by 255)")
    if x.numel() and not bool(((x >= 0) & (x <= 1)).all()):    # False for NaN too
        raise ValueError(f"{name} must be finite pixels in [0, 1], got values in "
                         f"[{float(x.min()):.3g}, {float(x.max()):.3g}] or NaN")


@torch.no_grad()
def accuracy(clf: Classifier, x: torch.Tensor, labels: torch.Tensor) -> float:
    """Fraction of float images ``[N, 1, H, W]`` classified as ``labels [N]`` (on any device:
    both are moved to the classifier's).

    Raises:
        ValueError: labels that are not one per image, ``[N]``.
    """
    if not isinstance(labels, torch.Tensor) or labels.shape != (len(x),):
        got = list(labels.shape) if isinstance(labels, torch.Tensor) else type(labels).__name__
        raise ValueError(f"accuracy needs one label per image, [{len(x)}], got {got}")
    p, _ = predict(clf, x)
    return float((p.argmax(-1) == labels.to(p.device)).float().mean())
