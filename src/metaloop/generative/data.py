"""Image data for the generative models: which data set, and how it is binarised.

The literature's binarised benchmarks treat each grey pixel as the probability of ink:

- **dynamic** binarisation draws a fresh Bernoulli sample of every training image in every
  batch (Burda et al. 2016 do this for MNIST and Omniglot);
- **static** binarisation draws one fixed sample (seeded), which is how test numbers are made
  reproducible here;
- **none** keeps the grey values in [0, 1], for the continuous likelihoods.

Data sets (28x28, one channel, ink = 1):

- ``"fashion-mnist"``: 60,000 train / 10,000 test, 10 classes (Debian ``dataset-fashion-mnist``).
- ``"omniglot"``: Lake et al.'s split, train = ``background`` (30 alphabets, 964 characters,
  19,280 images), test = ``evaluation`` (20 other alphabets, 659 characters, 13,180 images),
  downsampled 105 -> 28 with antialiasing. The IWAE paper's Omniglot (24,345 / 8,070 images,
  from ``chardata.mat``) is another split and another downsampling, so its NLLs are not
  exactly comparable; see docs/generative.md. Labels are the alphabet (30 in train), which are
  disjoint between the splits.
- ``"omniglot-mixed"``: the same 32,460 images pooled and split at random (fixed seed) into
  the IWAE paper's sizes, 24,345 train / 8,070 test, so that test images come from alphabets
  seen in training, as in the paper. Labels are the alphabet (50 classes). This is a control
  for the split, not the paper's exact split.

The Omniglot sets take the downsampling kernel as ``resample`` (``RESAMPLE``): antialiased
bilinear by default, as every Omniglot loader in metaloop, or bicubic, whose crisper strokes
leave less grey for the binarisation to flip (``binarization_entropy``).
"""

from __future__ import annotations

import os
from typing import NamedTuple

import torch

from metaloop.data.omniglot import RESAMPLE

DATASETS = ("fashion-mnist", "omniglot", "omniglot-mixed")
BINARIZE = ("dynamic", "static", "none")
TEST_BINARIZATION_SEED = 0
MIXED_SIZES = (24_345, 8_070)   # Burda et al. (2016), Omniglot train / test
MIXED_SEED = 0


class ImageData(NamedTuple):
    """One split of a data set.

    Attributes:
        images: uint8 ``[N, 1, 28, 28]``, 0 = background, 255 = ink.
        labels: int64 ``[N]`` class labels.
        n_classes: number of classes in this split.
        class_names: names of the classes, in label order.
    """

    images: torch.Tensor
    labels: torch.Tensor
    n_classes: int
    class_names: list[str]


def load(name: str, split: str, root: str | os.PathLike | None = None,
         resample: str = "bilinear") -> ImageData:
    """Load ``split`` (``"train"`` or ``"test"``) of data set ``name``.

    Args:
        name: one of ``DATASETS``.
        split: ``"train"`` or ``"test"`` (Omniglot: background / evaluation).
        root: folder of the data files; None uses the loader's default search.
        resample: Omniglot's 105 -> 28 kernel, one of ``RESAMPLE`` (Fashion-MNIST is 28x28
            already and takes only the default).

    Raises:
        ValueError: for an unknown data set, split or kernel, or a kernel for Fashion-MNIST.
        FileNotFoundError: from the loaders, listing where they looked.
    """
    check_resample(name, resample)
    if split not in ("train", "test"):
        raise ValueError(f"unknown split {split!r}; expected 'train' or 'test'")
    if name == "fashion-mnist":
        from metaloop.data.fashion_mnist import CLASS_NAMES, load_fashion_mnist

        x, y = load_fashion_mnist(root=root, split=split)
        return ImageData(x.unsqueeze(1), y, len(CLASS_NAMES), list(CLASS_NAMES))
    if name == "omniglot":
        return _omniglot(("background" if split == "train" else "evaluation",), root, resample)
    if name == "omniglot-mixed":
        d = _omniglot(("background", "evaluation"), root, resample)
        perm = torch.randperm(len(d.images), generator=torch.Generator().manual_seed(MIXED_SEED))
        n_train, n_test = MIXED_SIZES
        idx = perm[:n_train] if split == "train" else perm[n_train:n_train + n_test]
        return d._replace(images=d.images[idx], labels=d.labels[idx])
    raise ValueError(f"unknown data set {name!r}; choose one of {', '.join(DATASETS)}")


def check_resample(name: str, resample: str) -> None:
    """Raise ``ValueError`` for an unknown kernel, or any but the default for Fashion-MNIST."""
    if resample not in RESAMPLE:
        raise ValueError(f"unknown resample kernel {resample!r}; choose one of "
                         f"{', '.join(RESAMPLE)}")
    if name == "fashion-mnist" and resample != RESAMPLE[0]:
        raise ValueError(f"resample {resample!r} applies to the Omniglot data sets, which are "
                         f"downsampled from 105x105; Fashion-MNIST is 28x28 already")


def _omniglot(sets: tuple[str, ...], root, resample: str) -> ImageData:
    """Lake et al.'s sets at 28x28, concatenated; labels are the alphabets, sorted by name."""
    from metaloop.data.omniglot import load_omniglot_images

    loaded = [load_omniglot_images(root=root, split=s, image_size=28, resample=resample)
              for s in sets]
    chars = [c for _, names in loaded for c in names]
    x = torch.cat([images for images, _ in loaded])                       # [C, 20, 28, 28]
    alphabets = sorted({c.split("/")[0] for c in chars})
    index = {a: i for i, a in enumerate(alphabets)}
    per_char = torch.tensor([index[c.split("/")[0]] for c in chars], dtype=torch.int64)
    labels = per_char.repeat_interleave(x.shape[1])                         # [C * 20]
    return ImageData(x.reshape(-1, 1, *x.shape[2:]), labels, len(alphabets), alphabets)


def to_unit(images: torch.Tensor) -> torch.Tensor:
    """uint8 ``[N, ...]`` -> floats (the default dtype) in [0, 1]."""
    if images.dtype != torch.uint8:
        raise ValueError(f"expected uint8 images, got {images.dtype}")
    return images.to(torch.get_default_dtype()) / 255.0


def binarize_dynamic(images: torch.Tensor, generator: torch.Generator | None = None
                     ) -> torch.Tensor:
    """A fresh Bernoulli sample with the grey level as the probability of ink.

    Args:
        images: uint8 ``[N, ...]``.
        generator: optional random generator.

    Returns:
        floats ``[N, ...]`` (the default dtype) of 0s and 1s.
    """
    return torch.bernoulli(to_unit(images), generator=generator)


def binarization_entropy(images: torch.Tensor) -> torch.Tensor:
    """The entropy in nats of each image's binarisation: sum over pixels of H(p), with p the
    grey level as the probability of ink (``binarize_dynamic``'s coin).

    No model of the binarised images can have an expected NLL below it on that image: even a
    model that knew every grey level exactly pays this for the coin flips. Grey, antialiased
    strokes raise it; crisp black and white lowers it.

    Args:
        images: uint8 ``[N, ...]``.

    Returns:
        float64 ``[N]``, nats per image.
    """
    if images.dtype != torch.uint8:
        raise ValueError(f"expected uint8 images, got {images.dtype}")
    p = images.double().flatten(1) / 255.0                                    # [N, D]
    h = -(torch.special.xlogy(p, p) + torch.special.xlogy(1 - p, 1 - p))     # [N, D]
    return h.sum(1)


def binarize_static(images: torch.Tensor, seed: int = TEST_BINARIZATION_SEED) -> torch.Tensor:
    """The fixed binarisation with ``seed``: the same 0/1 images on every call."""
    return binarize_dynamic(images, torch.Generator().manual_seed(seed))


def default_binarize(likelihood: str) -> str:
    """The training binarisation that suits ``likelihood``: ``"dynamic"`` for the Bernoulli
    decoder (binary data), ``"none"`` (the grey values) for the continuous likelihoods, whose
    densities on binarised pixels grow without bound and mean nothing.

    Raises:
        ValueError: for an unknown likelihood.
    """
    from metaloop.generative.likelihoods import check_kind

    check_kind(likelihood)
    return "dynamic" if likelihood == "bernoulli" else "none"


def check_binarize(mode: str) -> None:
    """Raise ValueError naming ``mode`` unless it is one of ``BINARIZE``."""
    if mode not in BINARIZE:
        raise ValueError(f"unknown binarisation {mode!r}; choose one of {', '.join(BINARIZE)}")


def eval_pixels(images: torch.Tensor, mode: str, seed: int = TEST_BINARIZATION_SEED
                ) -> torch.Tensor:
    """Test data as float pixels: statically binarised unless ``mode`` is ``"none"``.

    Args:
        images: uint8 ``[N, 1, H, W]``.
        mode: the training binarisation, one of ``BINARIZE``.
        seed: seed of the static binarisation.
    """
    check_binarize(mode)
    return to_unit(images) if mode == "none" else binarize_static(images, seed)
