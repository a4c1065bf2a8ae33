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
- **Your own data:** an image folder ``root/<class>/<image>`` or a ``.npz``/``.pt`` file with
  ``x`` and ``y``, split into experiences of a few classes each (``user_experiences``), in
  either setting; test and validation images are held out of each class by a seed
  (``split_classes_of``).

Labels are always indices into the experience's head: ``0..C-1`` for a task head, the
original label (Fashion-MNIST's, or the position in the data's class names) for the shared
head.
"""

from __future__ import annotations

import operator
import os
from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path
from typing import NamedTuple, cast

import torch

from metaloop.data.fashion_mnist import CLASS_NAMES, load_fashion_mnist
from metaloop.data.omniglot import load_omniglot_images
from metaloop.meta._common import check_flag
from metaloop.tasks.episodes import check_examples

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
            classes=cast(tuple[int, ...], grp) if shared else tuple(range(len(grp))),  # tuples
            train=split(tr_x, tr_y, tr), val=split(tr_x, tr_y, va), test=split(te_x, te_y, te)))
    return out


def two_task(root=None, **kwargs) -> list[Experience]:
    """Pretrain on Fashion-MNIST classes 0-4 (head ``"A"``), fine-tune on 5-9 (head ``"B"``).

    Args:
        root: the Fashion-MNIST folder, or None for the default (as
            ``fashion_mnist_experiences``).
        **kwargs: passed to ``fashion_mnist_experiences``.
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

TENSOR_SUFFIXES = (".npz", ".pt")


def _check_fraction(name: str, value, low_open: bool) -> None:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and \
        (0 < value < 1 if low_open else 0 <= value < 1)
    if not ok:
        raise ValueError(f"{name} must be a number in {'(0' if low_open else '[0'}, 1), got "
                         f"{value!r}")


def _held_out(n: int, per_class: int | None, fraction: float, at_least: int) -> int:
    """Images of a class of ``n`` held out: ``per_class``, else ``round(fraction * n)`` but at
    least ``at_least`` (when ``fraction > 0``)."""
    if per_class is not None:
        return per_class
    return max(at_least, round(fraction * n)) if fraction > 0 else 0


def _label(c) -> int | None:
    """``c`` as an int label if it is an integer (Python's, NumPy's, or a 0-d integer
    tensor, as ``np.unique(y)`` and ``torch.unique(y)`` give them), not a bool; else None."""
    if isinstance(c, (bool, str)) or (isinstance(c, torch.Tensor) and c.dtype == torch.bool):
        return None
    try:
        return operator.index(c)
    except TypeError:
        return None


def _user_groups(groups, classes_per_experience: int | None, names: list[str]
                 ) -> list[tuple[int, ...]]:
    """The experiences' labels: ``groups`` (names or labels) or consecutive runs of
    ``classes_per_experience`` labels (the last one may be shorter)."""
    k = len(names)
    if groups is None:
        per = 2 if classes_per_experience is None else classes_per_experience
        _check_count("classes_per_experience", per, allow_none=False)
        return [tuple(range(i, min(i + per, k))) for i in range(0, k, per)]
    if classes_per_experience is not None:
        raise ValueError("give groups or classes_per_experience, not both (groups already "
                         "says how many classes each experience has)")
    index = {n: i for i, n in enumerate(names)}
    out = []
    for grp in groups:
        grp = [grp] if isinstance(grp, str) or _label(grp) is not None else list(grp)
        labels = []
        for c in grp:
            if isinstance(c, str) and c in index:
                labels.append(index[c])
            elif _label(c) is not None and 0 <= cast(int, _label(c)) < k:
                labels.append(cast(int, _label(c)))
            else:
                raise ValueError(f"groups names unknown class {c!r}; the data has the "
                                 f"{k} classes {names[:10]}{' ...' if k > 10 else ''} (names "
                                 f"or labels 0..{k - 1})")
        out.append(tuple(labels))
    flat = [c for grp in out for c in grp]
    if not out or any(not grp for grp in out) or len(set(flat)) != len(flat):
        raise ValueError(f"groups must be non-empty, disjoint sets of classes, got "
                         f"{[[names[c] for c in g] for g in out]}")
    return out


def _as_inputs(x: torch.Tensor, flatten: bool) -> torch.Tensor:
    """uint8 images (scaled to [0, 1]) or float inputs -> float32 ``[N, D]`` when
    ``flatten`` (or for vectors), else ``[N, C, H, W]``."""
    x = x.float().div_(255.0) if x.dtype == torch.uint8 else x.to(torch.float32)
    if x.dim() == 3:
        x = x.unsqueeze(1)                                               # [N, 1, H, W]
    return x.flatten(1) if flatten else x


def split_classes_of(x, y, class_names: Sequence[str] | None = None, *,
                     classes_per_experience: int | None = None,
                     groups: Sequence[Sequence[str | int]] | None = None,
                     setting: str = "task", test_per_class: int | None = None,
                     val_per_class: int | None = None, test_fraction: float | None = None,
                     val_fraction: float | None = None, train_per_class: int | None = None,
                     flatten: bool = True, seed: int = 0, drop_small: bool = False,
                     dropped: list[str] | None = None) -> list[Experience]:
    """Experiences of a few classes each from labelled data that has no official test split.

    Each class's images are shuffled by ``seed`` and split into test, validation and
    training images (per class, so classes of unequal sizes keep their proportions); an
    image is in exactly one of the three. A class's split depends only on ``seed`` and the
    class sizes, not on how the classes are grouped.

    Args:
        x: uint8 images ``[N, C, H, W]`` or ``[N, H, W]`` (scaled to [0, 1]), float images,
            or float feature vectors ``[N, D]``. A tensor or numpy array.
        y: int labels ``[N]`` in ``[0, K)``.
        class_names: K names, indexed by label (default ``"0"``, ``"1"``, ...); the
            experiences are named after them (``"cat, dog"``).
        classes_per_experience: consecutive labels per experience (default 2); the last
            experience gets what is left and may be smaller.
        groups: instead, the classes of each experience (names or labels), e.g.
            ``[["cat", "dog"], ["car", "bus"]]``; classes in no group are not used.
        setting: ``"task"`` (a head per experience, ``"task0"``, ``"task1"``, ..., labels
            ``0..C-1`` in the group's order) or ``"class"`` (one shared K-way head
            ``"all"``, the original labels), as ``fashion_mnist_experiences``.
        test_per_class: test images per class (a fixed count, positive).
        val_per_class: validation images per class (a fixed count, may be 0).
        test_fraction: otherwise this fraction of each class is test images, rounded and at
            least one image (default 0.2).
        val_fraction: and this fraction validation images, rounded and at least one image
            (default 0.1; ``val_fraction=0``: no validation).
        train_per_class: keep at most this many training images per class (None: all the
            rest).
        flatten: inputs ``[N, C*H*W]`` (for an MLP) instead of ``[N, C, H, W]``; feature
            vectors stay ``[N, D]``.
        seed: seed of the split and of the subsampling.
        drop_small: leave out the classes too small to give a test, a validation (if asked
            for) and a training image, before the classes are grouped (the others keep
            their names; with ``groups``, they leave their groups, and a group left empty
            is no experience), instead of raising.
        dropped: a list the names of the classes ``drop_small`` left out are appended to.

    Returns:
        One ``Experience`` per group; ``train``, ``val`` and ``test`` hold float32 inputs.

    Raises:
        ValueError: naming the problem: shapes or dtypes of ``x``/``y``, non-finite values,
            labels outside the class names, unknown setting, unknown or repeated classes in
            ``groups``, fewer than two experiences, a task-setting experience of one class
            (its one-way head would learn nothing), bad counts or fractions, or, without
            ``drop_small``, classes too small to give a test, a validation (if asked for)
            and a training image (listed with their sizes); a ``drop_small`` that is not
            True or False.
    """
    if setting not in SETTINGS:
        raise ValueError(f"unknown setting {setting!r}; choose one of {SETTINGS}")
    flatten = check_flag("flatten", flatten)
    x, y, names = check_examples(x, y, class_names, "split_classes_of")
    _check_count("test_per_class", test_per_class)
    _check_count("val_per_class", val_per_class, allow_zero=True)
    _check_count("train_per_class", train_per_class)
    for name, count, fraction in (("test", test_per_class, test_fraction),
                                  ("val", val_per_class, val_fraction)):
        if count is not None and fraction is not None:
            raise ValueError(f"give {name}_per_class or {name}_fraction, not both")
    test_fraction = 0.2 if test_fraction is None else test_fraction
    val_fraction = 0.1 if val_fraction is None else val_fraction
    _check_fraction("test_fraction", test_fraction, low_open=True)
    _check_fraction("val_fraction", val_fraction, low_open=False)
    if test_fraction + val_fraction >= 1:
        raise ValueError(f"test_fraction + val_fraction = {test_fraction + val_fraction} "
                         f"leaves no training images")
    drop_small = check_flag("drop_small", drop_small)
    grouped = groups is None                          # consecutive classes_per_experience
    gone: list[str] = []
    if drop_small:
        x, y, names, groups = _without_small(
            x, y, names, groups, classes_per_experience, gone,
            lambda n: _held_out(n, test_per_class, test_fraction, 1)
            + _held_out(n, val_per_class, val_fraction, 1) + 1)
        if dropped is not None:
            dropped.extend(gone)
    groups = _user_groups(groups, classes_per_experience, names)
    if len(groups) < 2:
        after = (f" left after dropping {len(gone)} class(es) too small to hold out test and "
                 f"validation images and keep one for training ({gone[:5]})" if gone else "")
        raise ValueError(f"a stream needs at least two experiences, but the {len(names)} "
                         f"classes {names[:10]}{after} make {len(groups)} of "
                         f"{len(groups[0]) if groups else 0} class(es): give fewer classes "
                         f"per experience (classes_per_experience, --classes-per-experience) "
                         f"or more classes")
    if setting == "task":
        single = [names[g[0]] for g in groups if len(g) == 1]
        if single:
            k = len(names)
            fits = [n for n in range(2, k) if k % n != 1]
            hint = f"; e.g. {fits[0]} for {k} classes" if fits and grouped else ""
            after = (f" (the {k} classes left after dropping {len(gone)} too small to hold "
                     f"out test and validation images and keep one for training, {gone[:5]}, "
                     f"grouped without them)" if gone else "")
            raise ValueError(f"in the task setting each experience has its own head, and the "
                             f"experience(s) of the single class(es) {single}{after} would "
                             f"get a one-way head that learns nothing: group the classes so "
                             f"that every experience has at least two "
                             f"(classes_per_experience, --classes-per-experience{hint}), or "
                             f"use the class setting")
    counts = torch.bincount(y, minlength=len(names))                            # [K]
    g = torch.Generator().manual_seed(seed)
    perms = [torch.randperm(int(n), generator=g) for n in counts]   # every class, by label
    members = torch.split(torch.argsort(y, stable=True), counts.tolist())  # K x [n_c]
    used = sorted(c for grp in groups for c in grp)
    small, parts = [], {}
    for c in used:
        n = int(counts[c])
        n_test = _held_out(n, test_per_class, test_fraction, 1)
        n_val = _held_out(n, val_per_class, val_fraction, 1)
        if n - n_test - n_val < 1:
            small.append(f"{names[c]!r} ({n}: needs {n_test} test + {n_val} val + 1 train)")
            continue
        idx = members[c][perms[c]]
        train = idx[n_test + n_val:]
        parts[c] = (train[:train_per_class] if train_per_class is not None else train,
                    idx[n_test:n_test + n_val], idx[:n_test])
    if small:
        more = f" and {len(small) - 8} more" if len(small) > 8 else ""
        raise ValueError(f"{len(small)} class(es) have too few images to hold out test and "
                         f"validation images and keep one for training: "
                         f"{', '.join(small[:8])}{more}; add images, hold out fewer "
                         f"(test_per_class / val_per_class, --test-per-class / "
                         f"--val-per-class), or leave them out (drop_small=True, "
                         f"--drop-small)")
    shared = setting == "class"
    out = []
    for i, grp in enumerate(groups):
        lookup = torch.full((len(names),), -1, dtype=torch.int64)
        lookup[list(grp)] = torch.arange(len(grp))

        def split(k: int, grp=grp, lookup=lookup) -> Split:
            idx = torch.cat([parts[c][k] for c in grp])
            return _as_inputs(x[idx], flatten), (y[idx] if shared else lookup[y[idx]])

        out.append(Experience(
            name=", ".join(names[c] for c in grp), head="all" if shared else f"task{i}",
            num_outputs=len(names) if shared else len(grp),
            classes=grp if shared else tuple(range(len(grp))),
            train=split(0), val=split(1), test=split(2)))
    return out


def _without_small(x: torch.Tensor, y: torch.Tensor, names: list[str], groups,
                   classes_per_experience: int | None, dropped: list[str] | None,
                   need: Callable[[int], int]):
    """``split_classes_of``'s data without the classes of fewer images than ``need(n)``
    (their names appended to ``dropped``): the rows of the others, relabelled 0..K'-1 in
    the same order, their names, and ``groups`` (None stays None) as the names of the
    classes kept, a group left empty dropped."""
    counts = torch.bincount(y, minlength=len(names))                            # [K]
    small = [c for c in range(len(names)) if int(counts[c]) < need(int(counts[c]))]
    if not small:
        return x, y, names, groups
    if dropped is not None:
        dropped.extend(names[c] for c in small)
    if groups is not None:                            # resolved on every class, by name
        gone = set(small)
        resolved = _user_groups(groups, classes_per_experience, names)
        groups = [[names[c] for c in g if c not in gone] for g in resolved]
        groups = [g for g in groups if g]
    keep = torch.tensor([c for c in range(len(names)) if c not in set(small)],
                        dtype=torch.int64)
    renumber = torch.full((len(names),), -1, dtype=torch.int64)
    renumber[keep] = torch.arange(len(keep))
    rows = (renumber[y] >= 0).nonzero().flatten()
    return x[rows], renumber[y[rows]], [names[c] for c in keep.tolist()], groups


def load_labelled(path: str | os.PathLike, *, image_size: int | None = None,
                  channels: int | None = None, invert: str = "never",
                  cache_dir: str | os.PathLike | None = None, class_depth: int | None = None
                  ) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
    """Labelled data from an image folder or a tensor file.

    Args:
        path: an image folder ``root/<class>/<image>`` (torchvision's layout, decoded once
            into a cache by ``metaloop.data.folder.load_folder``), or a ``.npz``/``.pt``
            file with ``x`` and ``y`` (and optionally ``class_names``), read as
            ``metaloop.tasks.Episodes.from_tensors`` reads it.
        image_size: folders only: side H = W of the decoded images (default 28).
        channels: folders only: 1 (greyscale, the default) or 3 (RGB).
        invert: folders only: ``"never"``, ``"always"`` or ``"auto"``.
        cache_dir: folders only: where the decoded cache lives.
        class_depth: folders only: 1 (the default), ``root/<class>/<image>``; 2,
            ``root/<group>/<class>/<image>``, each class named ``"group/class"``.

    Returns:
        x (uint8 ``[N, C, H, W]`` for a folder; as stored for a file), y int64 ``[N]`` in
        ``[0, K)`` and the K class names.

    Raises:
        ValueError: a missing path, a file that is not ``.npz``/``.pt``, a folder without
            images in that layout or with an unreadable image, an unreadable tensor file
            (all named), a tensor file whose ``x`` or ``y`` is not as ``split_classes_of``
            takes them (named by the file: labels that are not ints ``[N]``, N unlike x's,
            NaN in x ...), a ``class_depth`` other than 1 or 2, or
            ``image_size``/``channels``/``invert``/``class_depth`` given for a tensor file,
            where they would change nothing.

    Warns:
        metaloop.data.folder.NestedClassFoldersWarning: a folder read with class depth 1
            whose images sit mostly in sub-folders of its class folders (``class_depth=2``
            reads those sub-folders as the classes).
    """
    p = Path(path).expanduser()
    if not p.exists():
        raise ValueError(f"data {p} does not exist: give an image folder root/<class>/<image> "
                         f"or a .npz/.pt file with x and y")
    if p.is_dir():
        from metaloop.data.folder import load_folder

        data = load_folder(p, image_size=28 if image_size is None else image_size,
                           channels=1 if channels is None else channels, invert=invert,
                           class_depth=1 if class_depth is None else class_depth,
                           cache_dir=cache_dir)
        return data.images, data.labels, list(data.class_names)
    if p.suffix not in TENSOR_SUFFIXES:
        raise ValueError(f"data {p} is neither a folder nor a .npz/.pt file (got "
                         f"{p.suffix or 'no extension'!r}): give an image folder "
                         f"root/<class>/<image> or a tensor file with x and y")
    given = [(n, v) for n, v in (("image_size", image_size), ("channels", channels),
                                 ("invert", invert), ("class_depth", class_depth))
             if v is not None and v != "never"]
    if given:
        flags = " and ".join(f"--{n.replace('_', '-')}" for n, _ in given)
        raise ValueError(f"{', '.join(f'{n}={v!r}' for n, v in given)} ({flags}) only "
                         f"decode{'s' if len(given) == 1 else ''} image folders; {p} is a "
                         f"tensor file whose x is used as it is, so it would change nothing: "
                         f"drop {flags}")
    return _read_tensor_file(p)


def _read_tensor_file(path: Path) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
    """``x`` (as stored; bool images as float32 0/1), int64 ``y`` and the class names of a
    ``.npz``/``.pt`` file, read by ``metaloop.tasks.episodes.read_tensor_file`` (no
    pickles; integer labels with gaps become classes named by their value; a name in
    ``class_names`` no row has is left out, with an ``EmptyClassesWarning``), checked as
    ``split_classes_of`` checks them, so that an error names the file (not the function that
    found it)."""
    from metaloop.tasks.episodes import drop_empty_classes, read_tensor_file

    x, y, names = read_tensor_file(path)
    assert y is not None                                  # labels=True: read
    y, names = drop_empty_classes(y, names, f"tensor file {path}: class_names")
    if names is None and y.dim() == 1 and len(y) and not y.is_floating_point() \
            and y.dtype != torch.bool and int(y.min()) >= 0:
        names = [str(i) for i in range(int(y.max()) + 1)]
    _, y, names = check_examples(x, y, names, f"tensor file {path}:")
    return x, y, names


def user_experiences(path: str | os.PathLike, *, setting: str = "task",
                     image_size: int | None = None, channels: int | None = None,
                     invert: str = "never", cache_dir: str | os.PathLike | None = None,
                     class_depth: int | None = None, **kwargs) -> list[Experience]:
    """Experiences from your own labelled data: an image folder ``root/<class>/<image>`` or a
    ``.npz``/``.pt`` file with ``x`` and ``y``.

    ``load_labelled(path, image_size=, channels=, invert=, cache_dir=, class_depth=)`` reads
    the data;
    ``split_classes_of`` (with ``setting`` and ``**kwargs``: ``classes_per_experience``,
    ``groups``, ``test_per_class``, ``val_per_class``, ``test_fraction``,
    ``val_fraction``, ``train_per_class``, ``flatten``, ``seed``, ``drop_small``,
    ``dropped``) makes the experiences.

    Args:
        path: an image folder ``root/<class>/<image>`` or a ``.npz``/``.pt`` file.
        setting: ``"task"`` (a head per experience) or ``"class"`` (one shared head).
        image_size: folders only: side H = W of the decoded images (default 28).
        channels: folders only: 1 (greyscale, the default) or 3 (RGB).
        invert: folders only: ``"never"``, ``"always"`` or ``"auto"``.
        cache_dir: folders only: where the decoded cache lives.
        class_depth: folders only: 1 (the default), ``root/<class>/<image>``; 2,
            ``root/<group>/<class>/<image>``, each class named ``"group/class"``.
        **kwargs: passed to ``split_classes_of``.

    Example:
        ``user_experiences("photos", classes_per_experience=2, setting="class")``: one
        experience per two classes of ``photos/<class>/``, 28x28 greyscale, one shared head.

    Raises:
        ValueError: as ``load_labelled`` and ``split_classes_of``.
    """
    x, y, names = load_labelled(path, image_size=image_size, channels=channels,
                                invert=invert, cache_dir=cache_dir, class_depth=class_depth)
    return split_classes_of(x, y, names, setting=setting, **kwargs)


SCENARIOS: dict[str, Callable[..., list[Experience]]] = {
    "two-task": two_task,
    "split-fmnist-task": partial(split_fashion_mnist, setting="task"),
    "split-fmnist-class": partial(split_fashion_mnist, setting="class"),
    "omniglot-alphabets": omniglot_alphabets,
    "split-data-task": partial(user_experiences, setting="task"),
    "split-data-class": partial(user_experiences, setting="class"),
}
"""The named scenarios of ``metaloop forgetting``; ``split-data-task`` and ``split-data-class``
take the path of your own data (``user_experiences``), the others read their built-in data
from ``root``."""
