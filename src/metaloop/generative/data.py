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

Your own images (``load_user``; ``load`` takes a path where it takes a data set's name):

- an image folder in torchvision's layout ``root/<class>/<image>``, decoded once by
  ``metaloop.data.folder.load_folder`` into a cached uint8 array (the image suffixes of
  ``metaloop.data.images.IMAGE_EXTENSIONS``, any mode, padded to a square, resized with
  antialiasing to ``image_size``, converted to grey (or kept in colour with
  ``channels = 3``), inverted per ``invert``); the class folders are the labels;
- a tensor file ``.npz`` or ``.pt`` with ``x`` (``[N, H, W]`` or ``[N, C, H, W]``, C = 1 or
  3; uint8 0..255, bool (0/1, read as 0/255) or floats in [0, 1]: every command refuses
  other dtypes and 0..255 floats, ``metaloop.tasks.episodes.check_pixels``, and the vae
  standardised floats with negative values too) and ``y`` (``[N]`` integer labels), optionally
  ``class_names``; converted as a folder's images are (RGB to grey with
  Pillow's ``L`` weights, or grey to RGB by repeating it, ``invert``, padded to a square,
  resized to ``image_size``).

By default (``channels = 1``) the images come out as the built-in sets' do: uint8 ``[N, 1,
S, S]``, ink = 255. With ``channels = 3`` they keep their colour, uint8 ``[N, 3, S, S]``:
each colour channel of the models is one more grey image, and the pictures are drawn in
colour. ``invert = "auto"`` inverts grey images only (a light page becomes a dark one, its ink
light); colour images are kept as they are unless ``invert = "always"``. The models take any
S and either number of channels (the conv architecture needs S divisible by 4), and so do
the sample-quality classifiers of the latent sweep and the inversion studies.
The default likelihood and binarisation are the built-in sets' (``default_binarize``): each
pixel value (of each channel) is the probability of ink, binarised afresh in every batch for
the Bernoulli decoder; the continuous likelihoods model the values as they are, which suits
photographs and colour better.

Such data has no test split of its own: ``split_indices`` holds out ``test_fraction`` of each
class (rounded half up, at least one image of each class of two or more, never its last),
chosen at random with a fixed seed: the split is the same on every call, the two parts are
disjoint, and each comes in a fixed random order (the classes mixed). ``user_data_hash``
identifies the decoded images, so a resumed run can refuse data that changed.
"""

from __future__ import annotations

import hashlib
import math
import numbers
import os
from pathlib import Path
from typing import NamedTuple

import torch
import torch.nn.functional as F

from metaloop.data.images import INVERT_MODES, pad_square
from metaloop.data.omniglot import RESAMPLE
from metaloop.generative.nets import check_generator, check_seed, draw_device

DATASETS = ("fashion-mnist", "omniglot", "omniglot-mixed")
TENSOR_SUFFIXES = (".npz", ".pt")
IMAGE_SIZE = 28             # the built-in sets' side, and the default for your own images
CHANNELS = (1, 3)           # your own images: grey (the default, as the built-in sets) or RGB
INVERT = "auto"             # your own images: dark ink on light paper becomes ink = 255
TEST_FRACTION = 0.1         # your own images: the share of each class held out as "test"
SPLIT_SEED = 0              # ... chosen with this seed
BINARIZE = ("dynamic", "static", "none")
TEST_BINARIZATION_SEED = 0
MIXED_SIZES = (24_345, 8_070)   # Burda et al. (2016), Omniglot train / test
MIXED_SEED = 0


class ImageData(NamedTuple):
    """One split of a data set.

    Attributes:
        images: uint8 ``[N, C, S, S]``, 0 = background, 255 = ink (C = 1 and S = 28 for
            the built-in sets; ``channels`` and ``image_size`` for your own images).
        labels: int64 ``[N]`` class labels.
        n_classes: number of classes in this split (your own data: in both splits).
        class_names: names of the classes, in label order.
    """

    images: torch.Tensor
    labels: torch.Tensor
    n_classes: int
    class_names: list[str]

    def to(self, device: torch.device | str) -> ImageData:
        """The split with its images and labels on ``device`` (the same tensors where they
        already are)."""
        return self._replace(images=self.images.to(device), labels=self.labels.to(device))


def load(name: str, split: str, root: str | os.PathLike | None = None,
         resample: str = "bilinear", *, image_size: int = IMAGE_SIZE, invert: str = INVERT,
         test_fraction: float = TEST_FRACTION, channels: int = 1,
         skip_corrupt: bool = False, classes_for: str | None = None,
         class_depth: int = 1) -> ImageData:
    """Load ``split`` (``"train"`` or ``"test"``) of data set ``name``, or of your own data.

    Args:
        name: one of ``DATASETS``, or the path of an image folder or a ``.npz``/``.pt``
            tensor file (``load_user``).
        split: ``"train"`` or ``"test"`` (Omniglot: background / evaluation; your own
            data: ``split_indices``).
        root: folder of the built-in data files; None uses the loader's default search.
        resample: Omniglot's 105 -> 28 kernel, one of ``RESAMPLE`` (Fashion-MNIST is 28x28
            already and takes only the default).
        image_size: your own data's image side (see ``load_user``); the built-in sets
            take only the default.
        invert: your own data's grey-level inversion (see ``load_user``); the built-in sets
            take only the default.
        test_fraction: the fraction of your own data held out as ``"test"`` (see
            ``load_user``); the built-in sets take only the default.
        channels: your own data's channels (see ``load_user``); the built-in sets take only
            the default.
        skip_corrupt: leave an image folder's unreadable images out (see ``load_user``); the
            built-in sets take only the default.
        classes_for: what needs at least 2 classes of the data (``require_classes``), or
            None; your own data's classes are counted before its split.
        class_depth: your own image folder's layout (see ``read_user``); the built-in sets
            take only the default.

    Raises:
        ValueError: for an unknown data set, split or kernel, an option the data does not
            take (``check_data_options``), bad data of your own (``load_user``), or data of
            one class where ``classes_for`` needs two.
        FileNotFoundError: from the loaders, listing where they looked.
    """
    check_data_options(name, resample=resample, image_size=image_size, invert=invert,
                       test_fraction=test_fraction, root=root, channels=channels,
                       skip_corrupt=skip_corrupt, class_depth=class_depth)
    if split not in ("train", "test"):
        raise ValueError(f"unknown split {split!r}; expected 'train' or 'test'")
    if is_user_data(name):
        return load_user(name, split, image_size=image_size, invert=invert,
                         test_fraction=test_fraction, channels=channels,
                         skip_corrupt=skip_corrupt, classes_for=classes_for,
                         class_depth=class_depth)
    if name == "fashion-mnist":
        from metaloop.data.fashion_mnist import CLASS_NAMES, load_fashion_mnist

        x, y = load_fashion_mnist(root=root, split=split)
        return ImageData(x.unsqueeze(1), y, len(CLASS_NAMES), list(CLASS_NAMES))
    if name == "omniglot":
        return _omniglot(("background" if split == "train" else "evaluation",), root, resample)
    d = _omniglot(("background", "evaluation"), root, resample)       # omniglot-mixed
    perm = torch.randperm(len(d.images), generator=torch.Generator().manual_seed(MIXED_SEED))
    n_train, n_test = MIXED_SIZES
    idx = perm[:n_train] if split == "train" else perm[n_train:n_train + n_test]
    return d._replace(images=d.images[idx], labels=d.labels[idx])


def is_user_data(name: str | os.PathLike) -> bool:
    """Whether ``name`` is a path of your own data rather than one of ``DATASETS`` (a folder
    named like a built-in set is given as ``./omniglot``)."""
    return str(name) not in DATASETS


def check_resample(name: str, resample: str) -> None:
    """Raise ``ValueError`` for an unknown kernel, or any but the default for data that is
    not Omniglot (Fashion-MNIST, your own images)."""
    if resample not in RESAMPLE:
        raise ValueError(f"unknown resample kernel {resample!r}; choose one of "
                         f"{', '.join(RESAMPLE)}")
    if resample != RESAMPLE[0] and name not in ("omniglot", "omniglot-mixed"):
        what = ("Fashion-MNIST is 28x28 already" if name == "fashion-mnist" else
                f"{name} is resized to image_size with antialiased bilinear interpolation")
        raise ValueError(f"resample {resample!r} applies to the Omniglot data sets, which are "
                         f"downsampled from 105x105; {what}")


def check_data_options(name: str, *, resample: str = "bilinear", image_size: int = IMAGE_SIZE,
                       invert: str = INVERT, test_fraction: float = TEST_FRACTION,
                       root: str | os.PathLike | None = None, channels: int = 1,
                       skip_corrupt: bool = False, class_depth: int = 1) -> None:
    """Check the data options against the data: the built-in sets are grey 28x28 images
    with a test split of their own, so they take only the defaults of ``image_size``,
    ``invert``, ``test_fraction``, ``channels`` and ``skip_corrupt``; your own data takes
    no ``root`` (its path is ``name``) and no Omniglot kernel, and a tensor file no
    ``skip_corrupt`` (it has no image files to leave out).

    Raises:
        ValueError: naming the option and its value; for your own data, as
            ``check_user_path``.
    """
    check_resample(name, resample)
    if not is_user_data(name):
        given = [f"{k}={v!r}" for k, v, d in (("image_size", image_size, IMAGE_SIZE),
                                             ("invert", invert, INVERT),
                                             ("test_fraction", test_fraction, TEST_FRACTION),
                                             ("channels", channels, 1),
                                             ("skip_corrupt", skip_corrupt, False),
                                             ("class_depth", class_depth, 1))
                 if v != d]
        if given:
            raise ValueError(f"{', '.join(given)} appl(ies) to your own images (an image "
                             f"folder or a tensor file); {name} is grey 28x28 images with a "
                             f"test split of its own")
        return
    path = check_user_path(name)
    if skip_corrupt and path.is_file():
        raise ValueError(f"skip_corrupt=True leaves an image folder's unreadable images out; "
                         f"{name} is a tensor file, read as it is")
    if isinstance(class_depth, bool) or class_depth not in (1, 2):
        raise ValueError(f"class_depth must be 1 (root/<class>/<image>) or 2 "
                         f"(root/<group>/<class>/<image>), got {class_depth!r}")
    if class_depth != 1 and path.is_file():
        raise ValueError(f"class_depth={class_depth} is an image folder's layout; {name} is a "
                         f"tensor file, whose classes are its y")
    if root is not None:
        raise ValueError(f"root={str(root)!r} is the built-in data sets' folder; your own "
                         f"data is read from its path, {name}")
    if isinstance(image_size, bool) or not isinstance(image_size, int) or image_size < 4:
        raise ValueError(f"image_size must be an int >= 4, got {image_size!r}")
    if invert not in INVERT_MODES:
        raise ValueError(f"invert must be one of {', '.join(INVERT_MODES)}, got {invert!r}")
    if isinstance(channels, bool) or channels not in CHANNELS:
        raise ValueError(f"channels must be 1 (grey) or 3 (RGB colour), got {channels!r}")
    if (isinstance(test_fraction, bool) or not isinstance(test_fraction, (int, float))
            or not 0 < test_fraction < 1):
        raise ValueError(f"test_fraction must be a number strictly between 0 and 1, got "
                         f"{test_fraction!r}")


def check_user_path(name: str | os.PathLike) -> Path:
    """``name`` as the path of your own data, if it is a folder or a ``.npz``/``.pt`` file.

    Raises:
        ValueError: naming ``name`` when nothing is there (it is then no known data set
            either), it is a file of another kind, or neither a folder nor a regular file.
    """
    path = Path(name).expanduser()
    if not path.exists():
        raise ValueError(f"unknown data set {str(name)!r}: not one of the built-in data sets "
                         f"({', '.join(DATASETS)}), and there is no file or folder {path}; "
                         f"your own data is an image folder root/<class>/<image> or a "
                         f".npz/.pt file with x and y")
    _check_kind(path)
    if path.is_file() and path.suffix not in TENSOR_SUFFIXES:
        raise ValueError(f"data {path}: a file must be a tensor file .npz or .pt with x and "
                         f"y (got {path.suffix or 'no extension'!r}); images go in a folder "
                         f"root/<class>/<image>")
    return path


def _check_kind(path: Path) -> None:
    """ValueError naming ``path`` when it exists but is neither a folder nor a regular file
    (``/dev/null``, a pipe, a socket), which it was reported not to be."""
    if path.exists() and not (path.is_dir() or path.is_file()):
        raise ValueError(f"data {path} exists but is neither a folder nor a regular file (a "
                         f"device, a pipe or a socket); your own data is an image folder "
                         f"root/<class>/<image> or a .npz/.pt file with x and y")


def read_user(path: str | os.PathLike, *, image_size: int = IMAGE_SIZE,
              invert: str = INVERT, channels: int = 1,
              skip_corrupt: bool = False, class_depth: int = 1) -> ImageData:
    """All of your own images, before the split.

    Args:
        path: an image folder ``root/<class>/<image>`` or a ``.npz``/``.pt`` file with ``x``
            and ``y`` (and optionally ``class_names``); see the module's docstring.
        image_size: side S of the square output images.
        invert: ``"auto"`` (per grey image: a mean above half becomes ink = 255; colour
            images are kept), ``"always"`` or ``"never"``.
        channels: 1 (grey, Pillow's ``L`` weights) or 3 (RGB colour; grey images repeated).
        skip_corrupt: a folder's unreadable images (and links to nothing) are left out
            instead of refused (``metaloop.data.folder.load_folder``).
        class_depth: a folder's layout: 1 ``root/<class>/<image>``, 2
            ``root/<group>/<class>/<image>`` (classes named ``group/class``).

    Returns:
        ImageData: uint8 ``[N, channels, S, S]``, ink = 255; labels int64 ``[N]``; every
        class.

    Raises:
        ValueError: a missing path, a file of another kind, a folder without images in the
            layout (or with an unreadable one), a tensor file without ``x`` and ``y``, with
            non-numeric or non-finite values, an ``x`` that is neither uint8, float nor bool
            (uint16, int64: as ``metaloop train`` refuses it), float pixels outside [0, 1]
            (0..255 floats as every command, negative ones for the vae alone), class names
            that repeat (also in another Unicode form), or shapes that are not images with
            labels.
    """
    check_data_options(str(path), image_size=image_size, invert=invert, channels=channels,
                       skip_corrupt=skip_corrupt, class_depth=class_depth)
    path = Path(path).expanduser()
    _check_kind(path)
    invert = applied_invert(invert, channels)
    if path.is_dir():
        from metaloop.data.folder import CacheWriteError, load_folder

        try:
            d = load_folder(path, image_size=image_size, channels=channels, invert=invert,
                            skip_corrupt=skip_corrupt, class_depth=class_depth)
        except CacheWriteError as e:                        # --data takes no cache_dir
            raise e.without_cache_dir() from e
        images = d.images.clone()                            # off the memory-mapped cache
        return ImageData(images, d.labels.clone(), len(d.class_names), list(d.class_names))
    return _read_tensors(path, image_size, invert, channels)


def decoding(settings) -> dict:
    """How your own images are decoded, read from a settings object with ``image_size``,
    ``invert``, ``channels``, ``skip_corrupt`` and ``class_depth`` (the experiments' or the
    protocol's; False and 1 where it has none): the keyword arguments of ``read_user`` and
    ``user_data_hash``, which ``load`` and ``check_data_options`` take too."""
    return {"image_size": settings.image_size, "invert": settings.invert,
            "channels": settings.channels,
            "skip_corrupt": bool(getattr(settings, "skip_corrupt", False)),
            "class_depth": getattr(settings, "class_depth", 1)}


def applied_invert(invert: str, channels: int) -> str:
    """The inversion ``read_user`` applies, and so the ``invert`` that decodes a folder as
    it does (``metaloop.data.folder.load_folder``): ``invert``, but ``"auto"`` (which judges
    a grey page by its mean) keeps colour images (``channels = 3``) as they are."""
    return "never" if invert == "auto" and channels == 3 else invert


def _read_tensors(path: Path, image_size: int, invert: str, channels: int) -> ImageData:
    """A ``.npz``/``.pt`` file's ``x`` and ``y`` as ``read_user`` returns them."""
    from metaloop.tasks.episodes import check_examples, read_tensor_file

    x, y, names = read_tensor_file(path)      # checked: keys, dtypes, finite, dense labels
    assert y is not None                                  # labels=True: read
    if x.dim() == 3:
        x = x.unsqueeze(1)                                                   # [N, 1, H, W]
    if x.dim() != 4 or x.shape[1] not in (1, 3) or len(x) == 0:
        last = (x.dim() == 4 and len(x) and x.shape[-1] in (1, 3))     # [N, H, W, C]?
        raise ValueError(f"tensor file {path}: x must be images [N, H, W] or [N, C, H, W] "
                         f"with C = 1 or 3 and N > 0, got shape {list(x.shape)}"
                         + ("; channels last, as NumPy and Pillow lay out images? Store "
                            "x.transpose(0, 3, 1, 2)" if last else ""))
    if y.dim() != 1 or len(y) != len(x) or y.is_floating_point() or y.dtype == torch.bool:
        raise ValueError(f"tensor file {path}: y must be integer labels [N] with N = {len(x)} "
                         f"(as x), got {y.dtype} {list(y.shape)}")
    y = y.to(torch.int64)
    k = len(names) if names is not None else int(y.max()) + 1
    if int(y.min()) < 0 or int(y.max()) >= k:
        raise ValueError(f"tensor file {path}: labels y must lie in [0, {k}) "
                         f"({'len(class_names)' if names is not None else 'max + 1'}), found "
                         f"{int(y.min())}..{int(y.max())}")
    # the x check of every command (train, forgetting, predict): uint8 or float pixels (bool
    # as float 0/1), no 0..255 floats (read_tensor_file, check_pixels), names distinct in NFC
    check_examples(x, y, names, what=f"tensor file {path}:")
    if x.is_floating_point() and float(x.min()) < 0:       # each pixel a probability of ink
        lo, hi = float(x.min()), float(x.max())
        raise ValueError(f"tensor file {path}: float pixels x must lie in [0, 1] for the vae "
                         f"(each pixel is a probability of ink), got range [{lo:.9g}, "
                         f"{hi:.9g}] ({int((x < 0).sum()):,} pixel(s) below 0): standardised "
                         f"images are not pixels; store the images themselves (uint8 0..255 "
                         f"or floats in [0, 1])")
    u = x.to(torch.float32) if x.is_floating_point() else x.to(torch.float32) / 255.0
    return ImageData(_to_square(u, image_size, invert, channels), y, k,
                     names or [str(i) for i in range(k)])


def _to_square(u: torch.Tensor, image_size: int, invert: str, channels: int) -> torch.Tensor:
    """float ``[N, C, H, W]`` in [0, 1] -> uint8 ``[N, channels, S, S]``, as ``load_image``
    converts a file: grey (Pillow's ``L`` weights) or RGB (grey repeated), inverted per
    ``invert`` (``"auto"``: each image whose mean is above half), centred on a square of
    its border colour (``pad_square``), resized with antialiasing."""
    if u.shape[1] == 3 and channels == 1:
        w = torch.tensor([0.299, 0.587, 0.114]).reshape(1, 3, 1, 1)
        u = (u * w).sum(1, keepdim=True)                                     # [N, 1, H, W]
    elif u.shape[1] == 1 and channels == 3:
        u = u.expand(-1, 3, -1, -1)                                          # [N, 3, H, W]
    if invert == "always":
        u = 1.0 - u
    elif invert == "auto":
        light = u.flatten(1).mean(1) > 0.5                                   # [N]
        u = torch.where(light[:, None, None, None], 1.0 - u, u)
    u = pad_square(u)                             # [N, c, s, s]: its border colour, no crop
    if u.shape[-1] != image_size:
        u = F.interpolate(u, size=(image_size, image_size), mode="bilinear",
                          align_corners=False, antialias=True)               # [N, c, S, S]
    return u.clamp(0.0, 1.0).mul(255).round().to(torch.uint8)


def split_indices(labels: torch.Tensor, n_classes: int, test_fraction: float = TEST_FRACTION,
                  seed: int = SPLIT_SEED) -> tuple[torch.Tensor, torch.Tensor]:
    """A stratified, seeded train/test split of examples with ``labels``.

    Each class of n >= 2 examples gives ``floor(test_fraction * n + 1/2)`` of them to the
    test part, at least 1 and at most n - 1; a class of one example stays in training. The
    examples are drawn at random with ``seed``: the same labels give the same split.

    Args:
        labels: int64 ``[N]`` in ``[0, n_classes)``.
        n_classes: number of classes K.
        test_fraction: share of each class held out, strictly between 0 and 1.
        seed: seed of the draw.

    Returns:
        int64 train indices ``[N - M]`` and test indices ``[M]``: disjoint, covering
        ``range(N)`` together, each in a random order fixed by ``seed`` (the classes mixed,
        as in the built-in test sets, whose first images the pictures and scores take).

    Raises:
        ValueError: ``labels`` that are not integer ``[N]`` or fall outside
            ``[0, n_classes)`` (they would belong to neither part), an ``n_classes`` that is
            not an int >= 1, a ``test_fraction`` not strictly between 0 and 1, or a ``seed``
            that is not an int torch takes.
    """
    if not isinstance(n_classes, numbers.Integral) or isinstance(n_classes, bool) or \
            n_classes < 1:
        raise ValueError(f"n_classes must be an int >= 1, got {n_classes!r}")
    if isinstance(test_fraction, bool) or not isinstance(test_fraction, numbers.Real) or \
            not 0 < float(test_fraction) < 1:
        raise ValueError(f"test_fraction must be a number strictly between 0 and 1, got "
                         f"{test_fraction!r}")
    if not torch.is_tensor(labels) or labels.dim() != 1 or labels.is_floating_point() or \
            labels.is_complex() or labels.dtype == torch.bool:
        raise ValueError(f"labels must be an integer tensor [N], got "
                         f"{labels.dtype if torch.is_tensor(labels) else type(labels).__name__}"
                         f"{list(labels.shape) if torch.is_tensor(labels) else ''}")
    if labels.numel() and (int(labels.min()) < 0 or int(labels.max()) >= n_classes):
        bad = sorted(set(labels[(labels < 0) | (labels >= n_classes)].tolist()))
        raise ValueError(f"labels must be in [0, {n_classes}) for n_classes={n_classes}, got "
                         f"{bad[:10]}: those examples would be in neither part")
    n_classes = int(n_classes)
    g = torch.Generator().manual_seed(check_seed("split_indices", seed))
    train, test = [], []
    for c in range(n_classes):
        idx = (labels == c).nonzero().flatten()                              # [n_c]
        n = len(idx)
        idx = idx[torch.randperm(n, generator=g)]
        m = 0 if n < 2 else min(n - 1, max(1, math.floor(test_fraction * n + 0.5)))
        test.append(idx[:m])
        train.append(idx[m:])
    tr, te = torch.cat(train), torch.cat(test)
    return (tr[torch.randperm(len(tr), generator=g)],
            te[torch.randperm(len(te), generator=g)])


def load_user(path: str | os.PathLike, split: str, *, image_size: int = IMAGE_SIZE,
              invert: str = INVERT, test_fraction: float = TEST_FRACTION,
              seed: int = SPLIT_SEED, channels: int = 1,
              skip_corrupt: bool = False, classes_for: str | None = None,
              class_depth: int = 1) -> ImageData:
    """One split of your own images (``read_user``, then ``split_indices``).

    Args:
        path: an image folder ``root/<class>/<image>`` or a ``.npz``/``.pt`` tensor file.
        split: ``"train"`` or ``"test"``.
        image_size: side S of the square output images (default 28).
        invert: ``"auto"`` (default), ``"always"`` or ``"never"``.
        test_fraction: share of each class held out as the test split (default 0.1).
        seed: seed of the split (default ``SPLIT_SEED``).
        channels: 1 (grey, the default) or 3 (RGB colour).
        skip_corrupt: leave a folder's unreadable images out (``read_user``).
        class_depth: a folder's layout (``read_user``).
        classes_for: what needs at least 2 classes (``require_classes``), checked before
            the split; None: any number of classes.

    Returns:
        ImageData: uint8 ``[N, channels, S, S]``, ink = 255; both splits have every class in
        ``n_classes`` and ``class_names``.

    Raises:
        ValueError: as ``read_user``; a bad option or ``seed``; one class where
            ``classes_for`` needs two; fewer than 2 training or 2 test images after the
            split (naming the counts per class).
    """
    if split not in ("train", "test"):
        raise ValueError(f"unknown split {split!r}; expected 'train' or 'test'")
    check_data_options(str(path), image_size=image_size, invert=invert,
                       test_fraction=test_fraction, channels=channels,
                       skip_corrupt=skip_corrupt, class_depth=class_depth)
    check_seed("load_user", seed)                       # before the images are decoded
    d = read_user(path, image_size=image_size, invert=invert, channels=channels,
                  skip_corrupt=skip_corrupt, class_depth=class_depth)
    if classes_for is not None:                         # the first problem to name
        require_classes(d, str(path), classes_for)
    tr, te = split_indices(d.labels, d.n_classes, test_fraction, seed)
    if len(tr) < 2 or len(te) < 2:
        counts = torch.bincount(d.labels, minlength=d.n_classes).tolist()
        shown = ", ".join(f"{n!r}: {c}" for n, c in zip(d.class_names[:8], counts[:8]))
        raise ValueError(f"data {path}: {len(d.labels)} image(s) in {d.n_classes} class(es) "
                         f"({shown}{', ...' if d.n_classes > 8 else ''}) are too few to hold "
                         f"out a test set: test fraction {test_fraction:g} leaves {len(tr)} "
                         f"training and {len(te)} test image(s), and each part needs at "
                         f"least 2 (every class of two or more images gives at least one to "
                         f"the test set); add images")
    idx = tr if split == "train" else te
    return d._replace(images=d.images[idx], labels=d.labels[idx])


def user_data_hash(path: str | os.PathLike, *, image_size: int = IMAGE_SIZE,
                   invert: str = INVERT, channels: int = 1, skip_corrupt: bool = False,
                   class_depth: int = 1) -> str:
    """SHA-256 of your own data as the models see it (the decoded images, labels and class
    names, before the split): equal for the same data, different after any change."""
    d = read_user(path, image_size=image_size, invert=invert, channels=channels,
                  skip_corrupt=skip_corrupt, class_depth=class_depth)
    h = hashlib.sha256()
    h.update(repr((list(d.images.shape), d.class_names)).encode())
    h.update(d.images.contiguous().numpy().tobytes())
    h.update(d.labels.contiguous().numpy().tobytes())
    return h.hexdigest()


def data_label(name: str) -> str:
    """A short name of the data for figure titles: the data set, or the path's last part."""
    return Path(name).name if is_user_data(name) else name


def require_classes(d: ImageData, name: str, what: str) -> None:
    """Raise ``ValueError`` unless ``d`` has at least 2 classes, which ``what`` needs."""
    if d.n_classes < 2:
        raise ValueError(f"{what} needs at least 2 classes, but {name} has "
                         f"{d.n_classes} ({', '.join(d.class_names)}); give it one "
                         f"sub-folder per class (or labels y with two values or more)")


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
        images: uint8 ``[N, ...]``, on any device.
        generator: optional random generator, on any device: the coins are tossed on its
            device and the result moved to the images' (a CPU generator gives the same
            pixels whether the images are on the CPU or on a GPU).

    Returns:
        floats ``[N, ...]`` (the default dtype) of 0s and 1s, on the images' device.

    Raises:
        ValueError: images that are not uint8, or a ``generator`` that is not a
            ``torch.Generator`` or None.
    """
    check_generator("binarize_dynamic", generator)
    p = to_unit(images)                                        # [N, ...]
    # drawn on the generator's device (a CPU generator cannot draw on CUDA), then moved back
    coins = torch.bernoulli(p.to(draw_device(generator, p.device)), generator=generator)
    return coins.to(p.device)


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
    """The fixed binarisation with ``seed``: the same 0/1 images on every call.

    Args:
        images: uint8 ``[N, ...]``, on any device.
        seed: the seed of the coins (an int); the default is the test set's.

    Returns:
        floats ``[N, ...]`` (the default dtype) of 0s and 1s, on the images' device.

    Raises:
        ValueError: images that are not uint8, or a ``seed`` that is not an int torch takes.
    """
    seed = check_seed("binarize_static", seed)
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
        images: uint8 ``[N, C, H, W]``.
        mode: the training binarisation, one of ``BINARIZE``.
        seed: seed of the static binarisation.
    """
    check_binarize(mode)
    return to_unit(images) if mode == "none" else binarize_static(images, seed)
