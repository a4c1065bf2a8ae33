"""Few-shot Fashion-MNIST classification tasks over a chosen subset of the 10 labels."""

from __future__ import annotations

import copy
from collections.abc import Iterable

import torch

from metaloop._random import draw_device
from metaloop.data.fashion_mnist import CLASS_NAMES, load_fashion_mnist
from metaloop.tasks.batch import TaskBatch
from metaloop.tasks.omniglot import (
    check_generator,
    check_positive_int,
    episode_batch,
    episode_indices,
)


def _subset(classes: Iterable[int]) -> tuple[int, ...]:
    try:
        subset = tuple(classes)
    except TypeError:                   # one label, not a collection of them
        raise ValueError(f"FashionMNIST classes must be a collection of labels in "
                         f"0..{len(CLASS_NAMES) - 1} (e.g. range(5)), got {classes!r}") from None
    bad = [c for c in subset
           if not isinstance(c, int) or isinstance(c, bool) or not 0 <= c < len(CLASS_NAMES)]
    if not subset or bad:
        raise ValueError(f"FashionMNIST classes must be a non-empty set of labels in "
                         f"0..{len(CLASS_NAMES) - 1}, got {list(subset)}")
    if len(set(subset)) != len(subset):
        raise ValueError(f"FashionMNIST classes has duplicates: {list(subset)}")
    return subset


class FashionMNIST:
    """N-way K-shot tasks over a subset of the Fashion-MNIST labels.

    Meta-training and held-out families use disjoint ``classes``, e.g. ``range(5)`` and
    ``range(5, 10)``. ``TaskBatch.classes`` holds positions into ``labels`` (``0..K-1``).

    Args:
        root: folder with the IDX files, or None (see ``load_fashion_mnist``).
        classes: the K original labels (0..9) this family may use.
        ways: classes per task, at most K.
        shots: support images per class.
        queries: query images per class.
        split: ``"train"`` or ``"test"`` images.

    Attributes:
        kind: ``"classification"``.
        labels: the K original labels, in the order of ``TaskBatch.classes`` positions.
        class_names: their names.
        num_classes: K.
        image_shape: ``(1, 28, 28)``.

    Raises:
        ValueError: bad or duplicated classes, non-positive counts, ``ways > K``, or more
            ``shots + queries`` than the smallest class has images.
        FileNotFoundError: the IDX files of ``split`` are not under ``root`` (or the
            default data folder); the message names the paths looked at and where to get
            them.
    """

    kind = "classification"

    def __init__(self, root=None, classes: Iterable[int] = range(10), ways: int = 5,
                 shots: int = 1, queries: int = 15, split: str = "train"):
        ways, shots, queries = check_positive_int("FashionMNIST", ways=ways, shots=shots,
                                                  queries=queries)
        self.labels = _subset(classes)
        self.class_names = [CLASS_NAMES[c] for c in self.labels]
        self.num_classes, self.split = len(self.labels), split
        images, labels = load_fashion_mnist(root, split)
        self._images = images                                          # [N, 28, 28] uint8
        self.image_shape = (1, *images.shape[1:])
        self._table, self._counts = _class_table(labels, self.labels)   # [K, M], [K]
        real = torch.arange(self._table.shape[1]) < self._counts[:, None]  # [K, M]
        self._all = self._table[real]                                   # [sum counts]
        self._all_y = real.nonzero()[:, 0]                              # [sum counts]
        self._pad = None if bool(real.all()) else self._counts
        self.ways, self.shots, self.queries = ways, shots, queries
        self._validate()

    def _validate(self) -> None:
        self.ways, self.shots, self.queries = check_positive_int(
            "FashionMNIST", ways=self.ways, shots=self.shots, queries=self.queries)
        if self.ways > self.num_classes:
            raise ValueError(f"FashionMNIST ways={self.ways} exceeds the {self.num_classes} "
                             f"classes {list(self.labels)}")
        fewest = int(self._counts.min())
        if self.shots + self.queries > fewest:
            raise ValueError(f"FashionMNIST shots + queries = {self.shots} + {self.queries} "
                             f"exceeds the {fewest} images of the smallest class")

    @property
    def input_shape(self) -> tuple[int, ...]:
        """The shape of one input (TaskFamily protocol): ``image_shape``."""
        return self.image_shape

    def sample_indices(self, n: int, generator: torch.Generator | None = None
                       ) -> tuple[torch.Tensor, torch.Tensor]:
        """Class positions int64 ``[n, ways]`` and dataset image indices
        ``[n, ways, shots+queries]``."""
        check_positive_int("FashionMNIST.sample", n=n)
        check_generator("FashionMNIST.sample", generator)
        return episode_indices(self._table, self._pad, n, self.ways, self.shots + self.queries,
                               generator)

    def sample(self, n: int, generator: torch.Generator | None = None) -> TaskBatch:
        """Sample n tasks.

        Returns:
            TaskBatch: support_x float32 ``[n, ways*shots, 1, 28, 28]`` in [0, 1], support_y
            int64 ``[n, ways*shots]``, query likewise with ``queries``, classes int64
            ``[n, ways]`` (positions into ``labels``).
        """
        classes, idx = self.sample_indices(n, generator)
        return episode_batch(self._images, classes, idx, self.shots)

    def sample_flat(self, n: int, generator: torch.Generator | None = None
                    ) -> tuple[torch.Tensor, torch.Tensor]:
        """n images drawn uniformly with replacement from this family's classes.

        Returns:
            x: float32 ``[n, 1, 28, 28]`` in [0, 1]; y: int64 ``[n]`` positions into ``labels``.
        """
        check_positive_int("FashionMNIST.sample_flat", n=n)
        check_generator("FashionMNIST.sample_flat", generator)
        at = draw_device(generator)
        pick = torch.randint(self._all.shape[0], (n,), generator=generator, device=at)
        pick = pick.to(self._all.device)                                          # [n]
        x = self._images.index_select(0, self._all[pick]).to(torch.float32).div_(255)  # [n,28,28]
        x = x.unsqueeze(1)                                                        # [n, 1, 28, 28]
        return x, self._all_y[pick]

    def with_shots(self, shots: int, queries: int | None = None) -> FashionMNIST:
        """The same classes and ways with other shot (and query) counts, sharing the images."""
        new = copy.copy(self)
        new.shots, new.queries = shots, self.queries if queries is None else queries
        new._validate()
        return new

    def __repr__(self) -> str:
        return (f"FashionMNIST(classes={list(self.labels)}, ways={self.ways}, "
                f"shots={self.shots}, queries={self.queries}, split={self.split!r})")


def _class_table(labels: torch.Tensor, subset: tuple[int, ...]
                 ) -> tuple[torch.Tensor, torch.Tensor]:
    """Indices of each subset class's images, padded with 0.

    Args:
        labels: int64 ``[N]``.
        subset: K labels.

    Returns:
        table int64 ``[K, M]`` (M = largest class), counts int64 ``[K]``.
    """
    sub = torch.tensor(subset)
    match = labels.unsqueeze(0) == sub.unsqueeze(1)                      # [K, N]
    counts = match.sum(1)                                                 # [K]
    # stable sort puts each class's images first, in dataset order
    order = match.to(torch.int8).argsort(dim=1, descending=True, stable=True)  # [K, N]
    m = max(int(counts.max()), 1)
    table = order[:, :m].masked_fill(torch.arange(m) >= counts[:, None], 0)
    return table, counts
