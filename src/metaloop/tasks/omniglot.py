"""Few-shot Omniglot classification tasks (N-way K-shot), sampled without Python loops.

The episode sampler (``episode_indices``, ``episode_batch``) is shared with the other image
families: each family keeps its images flat, uint8 ``[N, H, W]``, and a table of the flat
indices of each class's images, so that one draw of random keys, one ``topk`` and one gather
build a whole meta-batch.

Omniglot also samples the original one-shot challenge's tasks (Lake et al. 2015): with
``within_alphabet`` every class of a task comes from one alphabet (``within_classes``, again
one ``topk`` over a padded table of each alphabet's classes), so the distractors look alike,
and with ``drawers="shared"`` every class of a task is drawn by the same people, as in the
challenge's official runs (one drawer for a run's training drawings, another for its test
drawings).
"""

from __future__ import annotations

import copy
import numbers
import operator

import torch

from metaloop._random import check_generator, draw_device
from metaloop.data.omniglot import (
    DRAWINGS,
    VINYALS_SPLITS,
    alphabet_of,
    load_omniglot_images,
    rotate_ccw,
)
from metaloop.tasks.batch import TaskBatch

DRAWERS = ("any", "shared")


def check_positive_int(owner: str, **values) -> tuple[int, ...]:
    """``values`` as Python ints, in the order given, each a positive integer.

    An integer of any kind is taken (an int, a numpy integer, a one-element integer tensor:
    whatever ``operator.index`` takes); a bool, a float or a string is not, even with an
    integral value.

    Raises:
        ValueError: naming ``owner`` and the first argument that is not a positive integer.
    """
    out = []
    for name, v in values.items():
        try:
            n = None if isinstance(v, bool) else operator.index(v)
        except TypeError:
            n = None
        if n is None or n <= 0:
            raise ValueError(f"{owner} {name} must be a positive int, got {v!r}")
        out.append(n)
    return tuple(out)


def episode_indices(table: torch.Tensor, counts: torch.Tensor | None, n: int, ways: int,
                    per_class: int, generator: torch.Generator | None = None,
                    classes: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Draw n tasks: ``ways`` distinct classes each, ``per_class`` distinct images per class.

    Args:
        table: int64 ``[K, M]``, the flat image indices of each of K classes (padded rows for
            classes with fewer than M images).
        counts: int64 ``[K]``, how many entries of each row are real; None if all M are.
        n: number of tasks.
        ways: classes per task, at most K.
        per_class: images per class (support + query), at most ``counts.min()``.
        generator: random source (None: ``table``'s device's default); the same seed
            gives the same tasks on a given device. The draws are made on its device and
            moved to ``table``'s, so a CUDA generator also draws a CPU table's tasks.
        classes: int64 ``[n, ways]`` classes already chosen (e.g. by ``within_classes``);
            None draws ``ways`` distinct classes uniformly from all K.

    With a generator on ``table``'s device every draw is made there and nothing is read
    back to the host, so the device-resident sampler (``metaloop.tasks.device``) runs this
    very function on a GPU.

    Returns:
        classes: int64 ``[n, ways]``, row positions into ``table`` (distinct within a task).
        images: int64 ``[n, ways, per_class]``, flat image indices (distinct within a class).
    """
    k, m = table.shape
    dev = table.device
    at = draw_device(generator, dev)    # the draws' device
    if classes is None:
        classes = torch.rand(n, k, generator=generator, device=at).to(dev)      # [n, K]
        classes = classes.topk(ways, dim=1).indices                              # [n, ways]
    keys = torch.rand(n, ways, m, generator=generator, device=at).to(dev)       # [n, ways, M]
    if counts is not None:
        pad = torch.arange(m, device=dev) >= counts[classes].unsqueeze(-1)       # [n, ways, M]
        keys.masked_fill_(pad, -1.0)  # rand is in [0, 1): padding is never among the top
    pos = keys.topk(per_class, dim=-1).indices                                   # [n, ways, k]
    return classes, table[classes.unsqueeze(-1), pos]


def within_classes(groups: torch.Tensor, sizes: torch.Tensor, n: int, ways: int,
                   generator: torch.Generator | None = None) -> torch.Tensor:
    """Draw n tasks of ``ways`` distinct classes, all from one group (alphabet) each.

    The group is uniform over the groups with at least ``ways`` classes; the classes are
    uniform within it. Two draws of random keys and two ``topk``, no Python loop.

    Args:
        groups: int64 ``[G, M]``, the class ids of each group (rows padded past ``sizes``).
        sizes: int64 ``[G]``, real entries per row.
        n: number of tasks.
        ways: classes per task.
        generator: random source.

    Returns:
        int64 ``[n, ways]`` class ids, distinct within a task, one group per task.

    Raises:
        ValueError: no group has ``ways`` classes.
    """
    if not bool((sizes >= ways).any()):
        raise ValueError(f"within-alphabet tasks need an alphabet with at least ways={ways} "
                         f"characters, but the largest has {int(sizes.max())}")
    return _within_classes(groups, sizes, n, ways, generator)


def _within_classes(groups: torch.Tensor, sizes: torch.Tensor, n: int, ways: int,
                    generator: torch.Generator | None) -> torch.Tensor:
    """``within_classes`` without its check (which reads ``sizes`` back to the host): every
    draw on the generator's device (``groups``' for None) and moved to ``groups``', for callers
    that checked the sizes once beforehand."""
    dev = groups.device
    at = draw_device(generator, dev)
    g_keys = torch.rand(n, groups.shape[0], generator=generator, device=at).to(dev)  # [n, G]
    g_keys.masked_fill_(sizes < ways, -1.0)  # rand is in [0, 1): too-small groups never win
    g = g_keys.argmax(dim=1)                                                  # [n]
    m = groups.shape[1]
    keys = torch.rand(n, m, generator=generator, device=at).to(dev)           # [n, M]
    keys.masked_fill_(torch.arange(m, device=dev) >= sizes[g].unsqueeze(1), -1.0)  # padding
    pos = keys.topk(ways, dim=1).indices                                      # [n, ways]
    return groups[g.unsqueeze(1), pos]                                        # [n, ways]


def task_indices(table: torch.Tensor, groups: torch.Tensor, sizes: torch.Tensor, n: int,
                 ways: int, per_class: int, within_alphabet: float = 0.0,
                 drawers: str = "any", generator: torch.Generator | None = None
                 ) -> tuple[torch.Tensor, torch.Tensor]:
    """Omniglot's task stream: ``episode_indices`` with the challenge's options.

    Args:
        table: int64 ``[C, D]``, the flat image ids of each class's D drawings (column j:
            drawer number j).
        groups: int64 ``[A, M]``, each alphabet's class ids (rows padded past ``sizes``),
            as ``within_classes`` takes them; some alphabet must have at least ``ways``
            classes when ``within_alphabet > 0`` (checked by the caller).
        sizes: int64 ``[A]``, the number of classes of each alphabet.
        n: tasks.
        ways: classes per task.
        per_class: drawings per class.
        within_alphabet: the rate in [0, 1] of tasks whose classes share an alphabet.
        drawers: ``"any"`` or ``"shared"`` (image j of every class by the task's drawer j).
        generator: random source; its draws are moved to the tables' device.

    With a generator on the tables' device every draw is made there and nothing is read
    back to the host, so the same function draws the host family's tasks and the device
    sampler's: on the CPU with the same generator they are the same tasks.

    Returns:
        classes int64 ``[n, ways]`` and flat image ids int64 ``[n, ways, per_class]``.
    """
    dev, k = table.device, table.shape[0]
    at = draw_device(generator, dev)    # the draws' device
    if within_alphabet == 0 and drawers == "any":   # the random-class stream, as it always was
        return episode_indices(table, None, n, ways, per_class, generator)
    if within_alphabet == 0:
        classes = torch.rand(n, k, generator=generator, device=at).to(dev)         # [n, C]
        classes = classes.topk(ways, dim=1).indices                                # [n, ways]
    else:
        classes = _within_classes(groups, sizes, n, ways, generator)
    if 0 < within_alphabet < 1:   # each task is within-alphabet with probability rate
        within = torch.rand(n, generator=generator, device=at).to(dev)             # [n]
        within = within < within_alphabet
        anywhere = torch.rand(n, k, generator=generator, device=at).to(dev)        # [n, C]
        anywhere = anywhere.topk(ways, dim=1).indices                              # [n, ways]
        classes = torch.where(within.unsqueeze(1), classes, anywhere)
    if drawers == "shared":   # image j of every class by the task's drawer j
        drawer = torch.rand(n, table.shape[1], generator=generator, device=at)     # [n, D]
        drawer = drawer.to(dev)
        drawer = drawer.topk(per_class, dim=1).indices                             # [n, S+Q]
        return classes, table[classes.unsqueeze(-1), drawer.unsqueeze(1)]
    return episode_indices(table, None, n, ways, per_class, generator, classes)


def episode_batch(images: torch.Tensor, classes: torch.Tensor, idx: torch.Tensor,
                  shots: int) -> TaskBatch:
    """Gather images into a TaskBatch (one ``index_select``); the first ``shots`` of each
    class are the support.

    Args:
        images: uint8 ``[N, H, W]``, flat image store.
        classes: int64 ``[n, ways]``, stored as ``TaskBatch.classes``.
        idx: int64 ``[n, ways, shots + queries]`` flat indices from ``episode_indices``.
        shots: support images per class.

    Returns:
        TaskBatch with float32 ``[n, ways*shots, 1, H, W]`` support and
        ``[n, ways*queries, 1, H, W]`` query images in [0, 1]; labels
        ``arange(ways).repeat_interleave(shots)`` (resp. ``queries``).
    """
    n, ways, per_class = idx.shape
    h, w = images.shape[-2:]
    x = images.index_select(0, idx.flatten()).to(torch.float32).div_(255)  # [n*ways*(S+Q), H, W]
    return split_episodes(x.view(n, ways, per_class, 1, h, w), classes, shots)


def split_episodes(x: torch.Tensor, classes: torch.Tensor, shots: int) -> TaskBatch:
    """Tasks from gathered examples: the first ``shots`` of each class are the support.

    Args:
        x: ``[n, ways, shots + queries, *feature]`` examples, class by class.
        classes: int64 ``[n, ways]``, stored as ``TaskBatch.classes``.
        shots: support examples per class.

    Returns:
        TaskBatch with ``[n, ways*shots, *feature]`` support and ``[n, ways*queries,
        *feature]`` query inputs, labels ``arange(ways).repeat_interleave(shots)`` (resp.
        ``queries``).
    """
    n, ways, per_class, *feat = x.shape
    queries = per_class - shots
    sx = x[:, :, :shots].reshape(n, ways * shots, *feat)            # [n, ways*S, *feature]
    qx = x[:, :, shots:].reshape(n, ways * queries, *feat)          # [n, ways*Q, *feature]
    label = torch.arange(ways)
    sy = label.repeat_interleave(shots).expand(n, -1).contiguous()  # [n, ways*S]
    qy = label.repeat_interleave(queries).expand(n, -1).contiguous()  # [n, ways*Q]
    return TaskBatch(sx, sy, qx, qy, classes)


class Omniglot:
    """N-way K-shot Omniglot classification tasks.

    Each task draws ``ways`` distinct classes of the split and ``shots + queries`` distinct
    drawings of each (of its 20). Images are float32 in [0, 1] with ink = 1.

    The original one-shot challenge (Lake et al. 2015) is 20-way 1-shot with all 20
    characters of a task from one alphabet: ``within_alphabet=True`` on the ``"evaluation"``
    split. For training, ``within_alphabet`` is a rate, so that a meta-batch can mix
    within-alphabet and random tasks, ``rotations=True`` adds each character's rotations
    by 90, 180 and 270 degrees as three more classes (of the same alphabet), and
    ``reflections=True`` its mirror image (left to right) as one more.

    Args:
        root: data folder, or None for the default search (see
            ``metaloop.data.omniglot.load_omniglot_images``).
        split: ``"train"``, ``"val"``, ``"test"``, ``"trainval"`` (Vinyals, characters x 4
            rotations as classes) or ``"background"``, ``"evaluation"`` (Lake et al.), or
            the background set divided by alphabet: ``"background_train"`` (25 alphabets,
            775 characters) and ``"background_val"`` (5 alphabets, 189 characters).
        ways: classes per task.
        shots: support images per class.
        queries: query images per class.
        image_size: image side H = W.
        download: fetch the official zips if no local copy is found.
        within_alphabet: the fraction in [0, 1] of tasks whose classes all come from one
            alphabet (True = 1, False = 0; each task decides independently). The alphabet is
            uniform over those with at least ``ways`` classes; smaller ones are skipped.
        rotations: Lake splits only (``"background"``, ``"evaluation"``,
            ``"background_train"``, ``"background_val"``): add the rotations by 90, 180 and
            270 degrees counter-clockwise as classes, ``4 C`` in all; class ``r * C + c`` is
            class c rotated by ``90 r`` degrees (named ``.../rotXXX``). The Vinyals splits
            have them already.
        reflections: add each class's mirror image (flipped left to right) as another class
            of the same alphabet, ``2 C`` in all (after the rotations, if any); class ``C + c``
            is class c mirrored (named ``.../mirror``). Any split.
        drawers: who drew a task's images. ``"any"`` (the default): each class's drawings
            are drawn on their own, so a task mixes drawers. ``"shared"``: each task draws
            ``shots + queries`` distinct drawer numbers (the ``DD`` of the official files'
            ``IIII_DD.png``) and image j of every class is drawer j's: the support set is by
            ``shots`` drawers and the queries by ``queries`` others, as the challenge's
            official runs are built (1-shot: one drawer for the training drawings, another
            for the test drawings).

    Attributes:
        kind: ``"classification"``.
        num_classes: classes in the split (C).
        image_shape: ``(1, H, W)``.
        class_names: C names, indexed by the ids in ``TaskBatch.classes``.
        alphabets: the split's alphabet names, sorted.
        class_alphabet: int64 ``[C]``, each class's index into ``alphabets``.

    Raises:
        ValueError: non-positive counts, ``ways > num_classes``, ``shots + queries > 20``,
            ``within_alphabet`` outside [0, 1] or (when > 0) no alphabet with ``ways``
            characters, ``rotations`` on a Vinyals split, ``rotations`` or ``reflections``
            not a bool, an unknown ``drawers``.
        FileNotFoundError: the images (``omniglot_<part>.npz``, ``images_<part>/`` or
            ``images_<part>.zip`` under ``root``) or, for a Vinyals split, its split file
            ``splits/vinyals/<split>.txt`` are not found and ``download`` is False; the
            message names the paths looked at and where to get the files.
    """

    kind = "classification"

    def __init__(self, root=None, split: str = "train", ways: int = 5, shots: int = 1,
                 queries: int = 15, image_size: int = 28, download: bool = False,
                 within_alphabet: float | bool = 0.0, rotations: bool = False,
                 drawers: str = "any", reflections: bool = False):
        ways, shots, queries = check_positive_int("Omniglot", ways=ways, shots=shots,
                                                  queries=queries)
        rate = _check_rate(within_alphabet)
        for name, flag in (("rotations", rotations), ("reflections", reflections)):
            if not isinstance(flag, bool):
                raise ValueError(f"Omniglot {name} must be a bool, got {flag!r}")
        if drawers not in DRAWERS:
            raise ValueError(f"Omniglot drawers must be one of {list(DRAWERS)}, got "
                             f"{drawers!r}")
        if rotations and split in VINYALS_SPLITS:   # an unknown split: the loader names it
            raise ValueError(f"Omniglot rotations=True applies to the Lake splits; split "
                             f"{split!r} (Vinyals) has the rotations as classes already")
        images, names = load_omniglot_images(root, split, image_size, download)
        if rotations:
            images = torch.cat([rotate_ccw(images, deg) for deg in (0, 90, 180, 270)])
            names = [f"{n}/rot{deg:03d}" for deg in (0, 90, 180, 270) for n in names]
        if reflections:
            images = torch.cat([images, images.flip(-1)])             # [2C, 20, H, W]
            names = names + [f"{n}/mirror" for n in names]
        c, d, h, w = images.shape
        self.split, self.image_size, self.class_names = split, image_size, names
        self.num_classes, self.image_shape = c, (1, h, w)
        self.within_alphabet, self.rotations, self.drawers = rate, rotations, drawers
        self.reflections = reflections
        self._images = images.reshape(c * d, h, w)                   # [C*20, H, W] uint8
        self._table = torch.arange(c * d).view(c, d)                 # [C, 20]
        self.alphabets = sorted({alphabet_of(n) for n in names})
        index = {a: i for i, a in enumerate(self.alphabets)}
        self.class_alphabet = torch.tensor([index[alphabet_of(n)] for n in names])  # [C]
        sizes = torch.bincount(self.class_alphabet, minlength=len(self.alphabets))  # [A]
        order = self.class_alphabet.argsort(stable=True)             # classes grouped by alphabet
        start = torch.cumsum(sizes, 0) - sizes                       # [A]
        slot = torch.arange(int(sizes.max())).unsqueeze(0)           # [1, M]
        pos = (start.unsqueeze(1) + slot).clamp_max(c - 1)           # [A, M]
        self._groups, self._group_sizes = order[pos], sizes          # [A, M] (padded), [A]
        self.ways, self.shots, self.queries = ways, shots, queries
        self._validate()

    def _validate(self) -> None:
        self.ways, self.shots, self.queries = check_positive_int(
            "Omniglot", ways=self.ways, shots=self.shots, queries=self.queries)
        if self.ways > self.num_classes:
            raise ValueError(f"Omniglot ways={self.ways} exceeds the {self.num_classes} classes "
                             f"of split {self.split!r}")
        if self.shots + self.queries > DRAWINGS:
            raise ValueError(f"Omniglot shots + queries = {self.shots} + {self.queries} exceeds "
                             f"the {DRAWINGS} drawings per class")
        largest = int(self._group_sizes.max())
        if self.within_alphabet > 0 and largest < self.ways:
            raise ValueError(f"Omniglot within_alphabet={self.within_alphabet}: no alphabet of "
                             f"split {self.split!r} has ways={self.ways} characters (the "
                             f"largest has {largest})")

    @property
    def input_shape(self) -> tuple[int, ...]:
        """The shape of one input (TaskFamily protocol): ``image_shape``."""
        return self.image_shape

    @property
    def images(self) -> torch.Tensor:
        """uint8 ``[C, 20, H, W]`` (shared, read-only), ink = 255."""
        return self._images.view(self.num_classes, DRAWINGS, *self.image_shape[1:])

    def sample_indices(self, n: int, generator: torch.Generator | None = None
                       ) -> tuple[torch.Tensor, torch.Tensor]:
        """Classes int64 ``[n, ways]`` and flat image ids ``[n, ways, shots+queries]``
        (image id = class * 20 + drawing)."""
        (n,) = check_positive_int("Omniglot.sample", n=n)
        check_generator("Omniglot.sample", generator)
        return task_indices(*self.index_tables(), n, self.ways, self.shots + self.queries,
                            self.within_alphabet, self.drawers, generator)

    def index_tables(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """What ``task_indices`` draws from (shared, read-only): the class table int64 ``[C,
        20]`` (class c's drawings are the flat image ids ``20 c ... 20 c + 19``), and each
        alphabet's class ids int64 ``[A, M]`` (rows padded) with their counts ``[A]``."""
        return self._table, self._groups, self._group_sizes

    def sample(self, n: int, generator: torch.Generator | None = None) -> TaskBatch:
        """Sample n tasks.

        Returns:
            TaskBatch: support_x float32 ``[n, ways*shots, 1, H, W]``, support_y int64
            ``[n, ways*shots]``, query likewise with ``queries``, classes int64 ``[n, ways]``
            (split-level class ids).
        """
        classes, idx = self.sample_indices(n, generator)
        return episode_batch(self._images, classes, idx, self.shots)

    def sample_flat(self, n: int, generator: torch.Generator | None = None
                    ) -> tuple[torch.Tensor, torch.Tensor]:
        """n images drawn uniformly with replacement from the whole split, for ordinary
        multi-class pretraining.

        Returns:
            x: float32 ``[n, 1, H, W]`` in [0, 1]; y: int64 ``[n]`` split-level class ids.
        """
        (n,) = check_positive_int("Omniglot.sample_flat", n=n)
        check_generator("Omniglot.sample_flat", generator)
        at = draw_device(generator)
        idx = torch.randint(self._images.shape[0], (n,), generator=generator, device=at)
        idx = idx.to(self._images.device)                                         # [n]
        x = self._images.index_select(0, idx).to(torch.float32).div_(255)         # [n, H, W]
        x = x.unsqueeze(1)                                                        # [n, 1, H, W]
        return x, idx // DRAWINGS

    def with_shots(self, shots: int, queries: int | None = None) -> Omniglot:
        """The same split and ways with other shot (and query) counts, sharing the images."""
        new = copy.copy(self)
        new.shots, new.queries = shots, self.queries if queries is None else queries
        new._validate()
        return new

    def __repr__(self) -> str:
        extra = (f", within_alphabet={self.within_alphabet}" if self.within_alphabet else "") \
            + (", rotations=True" if self.rotations else "") \
            + (", reflections=True" if self.reflections else "") \
            + (f", drawers={self.drawers!r}" if self.drawers != "any" else "")
        return (f"Omniglot(split={self.split!r}, ways={self.ways}, shots={self.shots}, "
                f"queries={self.queries}, image_size={self.image_size}, "
                f"num_classes={self.num_classes}{extra})")


def _check_rate(value: object) -> float:
    """``within_alphabet`` as a float in [0, 1] (True = 1.0, False = 0.0)."""
    if isinstance(value, bool):
        return float(value)
    if not isinstance(value, numbers.Real) or not 0.0 <= float(value) <= 1.0:
        raise ValueError(f"Omniglot within_alphabet must be a bool or a rate in [0, 1], got "
                         f"{value!r}")
    return float(value)
