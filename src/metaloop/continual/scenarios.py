"""Continual-learning scenarios: sequences of experiences from Fashion-MNIST and Omniglot.

An *experience* (Avalanche's word) is one task's data plus the name of the head that scores
it. Three settings:

- **Two-task:** pretrain on Fashion-MNIST classes 0-4 (head ``"A"``), then fine-tune on
  classes 5-9 (head ``"B"``).
- **Split Fashion-MNIST:** five experiences of two classes each, (0, 1), (2, 3), ..., (8, 9).
  *Task-incremental*: a two-way head per experience (``"task0"`` ... ``"task4"``) and the task
  identity is given at test time. *Class-incremental*: one shared ten-way head ``"all"``; the
  model must also tell which experience a test image came from (van de Ven et al. 2022).
- **Omniglot alphabets:** a sequence of alphabets of Lake et al.'s background set, each one a
  task with a head over its characters (task-incremental).

Labels are always indices into the experience's head: ``0..C-1`` for a task head, the
original Fashion-MNIST label for the shared head.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial
from typing import NamedTuple

import torch

from metaloop.data.fashion_mnist import CLASS_NAMES, load_fashion_mnist
from metaloop.data.omniglot import load_omniglot_images
from metaloop.meta._common import check_flag

Split = tuple[torch.Tensor, torch.Tensor]
SETTINGS = ("task", "class")


class Experience(NamedTuple):
    """One task of a continual-learning stream.

    Attributes:
        name: a readable name, e.g. ``"classes 0-4"``.
        head: the name of the head that scores it (``params["heads.<head>.weight"]``).
        num_outputs: output size C of that head.
        classes: the head outputs (labels) this experience uses.
        train: inputs float ``[N, *shape]`` and labels int64 ``[N]`` in ``classes``.
        val: held-out part of the training data, for early stopping (may be empty).
        test: test data, for the accuracy matrix.
    """

    name: str
    head: str
    num_outputs: int
    classes: tuple[int, ...]
    train: Split
    val: Split
    test: Split


def _check_count(name: str, value, allow_none: bool = True, allow_zero: bool = False) -> None:
    if value is None and allow_none:
        return
    low = 0 if allow_zero else 1
    if not isinstance(value, int) or isinstance(value, bool) or value < low:
        kind = "non-negative" if allow_zero else "positive"
        raise ValueError(f"{name} must be a {kind} int{' or None' if allow_none else ''}, "
                         f"got {value!r}")


def _images(x: torch.Tensor, flatten: bool) -> torch.Tensor:
    """uint8 ``[N, H, W]`` (ink or foreground high) -> float ``[N, H*W]`` or ``[N, 1, H, W]``."""
    x = x.float().div_(255.0)
    return x.flatten(1) if flatten else x.unsqueeze(1)


def _per_class(labels: torch.Tensor, cls: int, generator: torch.Generator) -> torch.Tensor:
    """Indices of ``cls`` in ``labels``, in a seeded random order."""
    idx = (labels == cls).nonzero().squeeze(1)
    return idx[torch.randperm(idx.numel(), generator=generator)]


def _class_indices(labels: torch.Tensor, groups, n_held: int, n_keep: int | None,
                   seed: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Per group: (kept, held-out) indices; ``n_held`` per class held out, then at most
    ``n_keep`` per class kept, both chosen at random by ``seed``."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for group in groups:
        kept, held = [], []
        for c in group:
            idx = _per_class(labels, c, g)
            if n_held >= idx.numel():
                raise ValueError(f"val_per_class={n_held} leaves no training images of "
                                 f"class {c} ({idx.numel()} in total)")
            held.append(idx[:n_held])
            kept.append(idx[n_held:][:n_keep] if n_keep is not None else idx[n_held:])
        out.append((torch.cat(kept), torch.cat(held)))
    return out


def _relabel(y: torch.Tensor, group: Sequence[int], setting: str) -> torch.Tensor:
    if setting == "class":
        return y.clone()
    lookup = torch.full((len(CLASS_NAMES),), -1, dtype=torch.int64)
    lookup[list(group)] = torch.arange(len(group))
    return lookup[y]


def fashion_mnist_experiences(groups: Sequence[Sequence[int]], *, setting: str = "task",
                              heads: Sequence[str] | None = None, root=None,
                              train_per_class: int | None = None, val_per_class: int = 500,
                              test_per_class: int | None = None, flatten: bool = True,
                              seed: int = 0) -> list[Experience]:
    """Fashion-MNIST experiences, one per group of classes.

    The validation images are held out of the official training split (``val_per_class`` per
    class, chosen by ``seed``); the test images come from the official test split.

    Args:
        groups: the original labels of each experience, e.g. ``[range(5), range(5, 10)]``.
        setting: ``"task"`` (a head per experience, labels ``0..len(group)-1``) or
            ``"class"`` (one shared ten-way head ``"all"``, original labels).
        heads: head names for the task setting (default ``"task0"``, ``"task1"``, ...).
        root: folder with the IDX files (see ``load_fashion_mnist``).
        train_per_class: keep at most this many training images per class (None: all).
        val_per_class: validation images per class, taken out of the training split.
        test_per_class: keep at most this many test images per class (None: all 1,000).
        flatten: inputs ``[N, 784]`` (for an MLP) instead of ``[N, 1, 28, 28]``.
        seed: seed of the split and of the subsampling.

    Returns:
        One ``Experience`` per group.

    Raises:
        ValueError: unknown setting, labels outside 0..9, a label in two groups, wrong
            number of head names, bad counts, or a ``flatten`` that is not a bool.
    """
    if setting not in SETTINGS:
        raise ValueError(f"unknown setting {setting!r}; choose one of {SETTINGS}")
    flatten = check_flag("flatten", flatten)
    groups = [tuple(int(c) for c in grp) for grp in groups]
    flat = [c for grp in groups for c in grp]
    if not groups or any(not grp for grp in groups) or \
            any(not 0 <= c < len(CLASS_NAMES) for c in flat) or len(set(flat)) != len(flat):
        raise ValueError(f"groups must be non-empty, disjoint sets of labels in 0..9, got "
                         f"{[list(g) for g in groups]}")
    heads = list(heads) if heads is not None else [f"task{i}" for i in range(len(groups))]
    if setting == "task" and len(heads) != len(groups):
        raise ValueError(f"{len(heads)} head names for {len(groups)} groups")
    _check_count("train_per_class", train_per_class)
    _check_count("val_per_class", val_per_class, allow_none=False, allow_zero=True)
    _check_count("test_per_class", test_per_class)
    tr_x, tr_y = load_fashion_mnist(root, "train")
    te_x, te_y = load_fashion_mnist(root, "test")
    train_val = _class_indices(tr_y, groups, val_per_class, train_per_class, seed)
    test = _class_indices(te_y, groups, 0, test_per_class, seed + 1)
    out = []
    for i, grp in enumerate(groups):
        (tr, va), (te, _) = train_val[i], test[i]

        def split(x, y, idx, grp=grp):
            return _images(x[idx], flatten), _relabel(y[idx], grp, setting)

        shared = setting == "class"
        out.append(Experience(
            name=f"classes {grp[0]}-{grp[-1]}" if len(grp) > 1 else f"class {grp[0]}",
            head="all" if shared else heads[i],
            num_outputs=len(CLASS_NAMES) if shared else len(grp),
            classes=grp if shared else tuple(range(len(grp))),
            train=split(tr_x, tr_y, tr), val=split(tr_x, tr_y, va), test=split(te_x, te_y, te)))
    return out


def two_task(root=None, **kwargs) -> list[Experience]:
    """Pretrain on Fashion-MNIST classes 0-4 (head ``"A"``), fine-tune on 5-9 (head ``"B"``).

    Keyword arguments go to ``fashion_mnist_experiences``.
    """
    return fashion_mnist_experiences([range(5), range(5, 10)], setting="task",
                                     heads=["A", "B"], root=root, **kwargs)


def split_fashion_mnist(root=None, setting: str = "class", **kwargs) -> list[Experience]:
    """Split Fashion-MNIST: five experiences of two classes each, (0, 1) ... (8, 9).

    Args:
        root: folder with the IDX files.
        setting: ``"class"`` (class-incremental, one shared head) or ``"task"``
            (task-incremental, a head per experience).
        **kwargs: see ``fashion_mnist_experiences``.
    """
    return fashion_mnist_experiences([(i, i + 1) for i in range(0, 10, 2)], setting=setting,
                                     root=root, **kwargs)


def omniglot_alphabets(root=None, alphabets: int | Sequence[str] = 5, *,
                       split: str = "background", train_per_class: int = 12,
                       val_per_class: int = 3, flatten: bool = True,
                       seed: int = 0) -> list[Experience]:
    """A sequence of Omniglot alphabets, each a task with a head over its characters.

    Each character's 20 drawings are shuffled (by ``seed``) and split into
    ``train_per_class`` training, ``val_per_class`` validation and the rest test images.
    Images are 28x28 with ink high, as ``load_omniglot_images`` returns them.

    Args:
        root: Omniglot folder (see ``load_omniglot_images``).
        alphabets: the first N alphabets of the split in name order, or a list of names.
        split: ``"background"`` (30 alphabets) or ``"evaluation"`` (20).
        train_per_class: training drawings per character.
        val_per_class: validation drawings per character; the test set gets the rest.
        flatten: inputs ``[N, 784]`` instead of ``[N, 1, 28, 28]``.
        seed: seed of the drawing split.

    Returns:
        One ``Experience`` per alphabet, its head named after the alphabet.

    Raises:
        ValueError: unknown or repeated alphabet names, too many alphabets, counts that
            leave no test drawings, or a ``flatten`` that is not a bool.
    """
    if split not in ("background", "evaluation"):
        raise ValueError(f"omniglot_alphabets needs split 'background' or 'evaluation', got "
                         f"{split!r}")
    _check_count("train_per_class", train_per_class, allow_none=False)
    _check_count("val_per_class", val_per_class, allow_none=False, allow_zero=True)
    flatten = check_flag("flatten", flatten)
    images, names = load_omniglot_images(root, split, 28)               # [C, 20, 28, 28]
    if train_per_class + val_per_class >= images.shape[1]:
        raise ValueError(f"train_per_class + val_per_class = {train_per_class + val_per_class}"
                         f" leaves no test drawings of the {images.shape[1]} per character")
    by_alphabet: dict[str, list[int]] = {}
    for i, n in enumerate(names):
        by_alphabet.setdefault(n.split("/")[0], []).append(i)
    chosen = _choose_alphabets(alphabets, sorted(by_alphabet), split)
    g = torch.Generator().manual_seed(seed)
    out = []
    for name in chosen:
        chars = by_alphabet[name]
        order = torch.stack([torch.randperm(images.shape[1], generator=g) for _ in chars])
        cuts = (0, train_per_class, train_per_class + val_per_class, images.shape[1])
        parts = []
        for a, b in zip(cuts[:-1], cuts[1:]):
            x = torch.stack([images[c, order[k, a:b]] for k, c in enumerate(chars)])  # [K,n,H,W]
            y = torch.arange(len(chars)).repeat_interleave(b - a)
            parts.append((_images(x.flatten(0, 1), flatten), y))
        out.append(Experience(name=name, head=name, num_outputs=len(chars),
                              classes=tuple(range(len(chars))), train=parts[0], val=parts[1],
                              test=parts[2]))
    return out


def _choose_alphabets(alphabets, available: list[str], split: str) -> list[str]:
    if isinstance(alphabets, int) and not isinstance(alphabets, bool):
        if not 1 <= alphabets <= len(available):
            raise ValueError(f"alphabets must be 1..{len(available)} for the {split} set, got "
                             f"{alphabets}")
        return available[:alphabets]
    if isinstance(alphabets, str):
        alphabets = [alphabets]      # one name, not its letters
    chosen = list(alphabets)
    unknown = [a for a in chosen if a not in available]
    if unknown or not chosen:
        raise ValueError(f"unknown Omniglot alphabets {unknown or chosen}; the {split} set has "
                         f"{available}")
    repeated = sorted({a for a in chosen if chosen.count(a) > 1})
    if repeated:
        raise ValueError(f"alphabets {repeated} are listed more than once; each alphabet is "
                         f"one experience with its own head")
    return chosen


SCENARIOS = {
    "two-task": two_task,
    "split-fmnist-task": partial(split_fashion_mnist, setting="task"),
    "split-fmnist-class": partial(split_fashion_mnist, setting="class"),
    "omniglot-alphabets": omniglot_alphabets,
}
