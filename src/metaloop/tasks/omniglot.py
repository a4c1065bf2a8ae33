"""Few-shot Omniglot classification tasks (N-way K-shot), sampled without Python loops.

The episode sampler (``episode_indices``, ``episode_batch``) is shared with the other image
families: each family keeps its images flat, uint8 ``[N, H, W]``, and a table of the flat
indices of each class's images, so that one draw of random keys, one ``topk`` and one gather
build a whole meta-batch.
"""

from __future__ import annotations

import copy

import torch

from metaloop.data.omniglot import DRAWINGS, load_omniglot_images
from metaloop.tasks.batch import TaskBatch


def check_positive_int(owner: str, **values) -> None:
    """Raise ValueError naming each argument that is not a positive int."""
    for name, v in values.items():
        if not isinstance(v, int) or isinstance(v, bool) or v <= 0:
            raise ValueError(f"{owner} {name} must be a positive int, got {v!r}")


def episode_indices(table: torch.Tensor, counts: torch.Tensor | None, n: int, ways: int,
                    per_class: int, generator: torch.Generator | None = None
                    ) -> tuple[torch.Tensor, torch.Tensor]:
    """Draw n tasks: ``ways`` distinct classes each, ``per_class`` distinct images per class.

    Args:
        table: int64 ``[K, M]``, the flat image indices of each of K classes (padded rows for
            classes with fewer than M images).
        counts: int64 ``[K]``, how many entries of each row are real; None if all M are.
        n: number of tasks.
        ways: classes per task, at most K.
        per_class: images per class (support + query), at most ``counts.min()``.
        generator: random source; the same seed gives the same tasks.

    Returns:
        classes: int64 ``[n, ways]``, row positions into ``table`` (distinct within a task).
        images: int64 ``[n, ways, per_class]``, flat image indices (distinct within a class).
    """
    k, m = table.shape
    classes = torch.rand(n, k, generator=generator).topk(ways, dim=1).indices  # [n, ways]
    keys = torch.rand(n, ways, m, generator=generator)                          # [n, ways, M]
    if counts is not None:
        pad = torch.arange(m) >= counts[classes].unsqueeze(-1)                   # [n, ways, M]
        keys.masked_fill_(pad, -1.0)  # rand is in [0, 1): padding is never among the top
    pos = keys.topk(per_class, dim=-1).indices                                   # [n, ways, k]
    return classes, table[classes.unsqueeze(-1), pos]


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
    queries = per_class - shots
    h, w = images.shape[-2:]
    x = images.index_select(0, idx.flatten()).to(torch.float32).div_(255)  # [n*ways*(S+Q), H, W]
    x = x.view(n, ways, per_class, 1, h, w)                        # [n, ways, S+Q, 1, H, W]
    sx = x[:, :, :shots].reshape(n, ways * shots, 1, h, w)         # [n, ways*S, 1, H, W]
    qx = x[:, :, shots:].reshape(n, ways * queries, 1, h, w)       # [n, ways*Q, 1, H, W]
    label = torch.arange(ways)
    sy = label.repeat_interleave(shots).expand(n, -1).contiguous()  # [n, ways*S]
    qy = label.repeat_interleave(queries).expand(n, -1).contiguous()  # [n, ways*Q]
    return TaskBatch(sx, sy, qx, qy, classes)


class Omniglot:
    """N-way K-shot Omniglot classification tasks.

    Each task draws ``ways`` distinct classes of the split and ``shots + queries`` distinct
    drawings of each (of its 20). Images are float32 in [0, 1] with ink = 1.

    Args:
        root: data folder, or None for the default search (see
            ``metaloop.data.omniglot.load_omniglot_images``).
        split: ``"train"``, ``"val"``, ``"test"``, ``"trainval"`` (Vinyals, characters x 4
            rotations as classes) or ``"background"``, ``"evaluation"`` (Lake et al.).
        ways: classes per task.
        shots: support images per class.
        queries: query images per class.
        image_size: image side H = W.
        download: fetch the official zips if no local copy is found.

    Attributes:
        kind: ``"classification"``.
        num_classes: classes in the split (C).
        image_shape: ``(1, H, W)``.
        class_names: C names, indexed by the ids in ``TaskBatch.classes``.

    Raises:
        ValueError: non-positive counts, ``ways > num_classes`` or ``shots + queries > 20``.
    """

    kind = "classification"

    def __init__(self, root=None, split: str = "train", ways: int = 5, shots: int = 1,
                 queries: int = 15, image_size: int = 28, download: bool = False):
        check_positive_int("Omniglot", ways=ways, shots=shots, queries=queries)
        images, names = load_omniglot_images(root, split, image_size, download)
        c, d, h, w = images.shape
        self.split, self.image_size, self.class_names = split, image_size, names
        self.num_classes, self.image_shape = c, (1, h, w)
        self._images = images.view(c * d, h, w)                      # [C*20, H, W] uint8
        self._table = torch.arange(c * d).view(c, d)                 # [C, 20]
        self.ways, self.shots, self.queries = ways, shots, queries
        self._validate()

    def _validate(self) -> None:
        check_positive_int("Omniglot", ways=self.ways, shots=self.shots, queries=self.queries)
        if self.ways > self.num_classes:
            raise ValueError(f"Omniglot ways={self.ways} exceeds the {self.num_classes} classes "
                             f"of split {self.split!r}")
        if self.shots + self.queries > DRAWINGS:
            raise ValueError(f"Omniglot shots + queries = {self.shots} + {self.queries} exceeds "
                             f"the {DRAWINGS} drawings per class")

    @property
    def images(self) -> torch.Tensor:
        """uint8 ``[C, 20, H, W]`` (shared, read-only), ink = 255."""
        return self._images.view(self.num_classes, DRAWINGS, *self.image_shape[1:])

    def sample_indices(self, n: int, generator: torch.Generator | None = None
                       ) -> tuple[torch.Tensor, torch.Tensor]:
        """Classes int64 ``[n, ways]`` and flat image ids ``[n, ways, shots+queries]``
        (image id = class * 20 + drawing)."""
        check_positive_int("Omniglot.sample", n=n)
        return episode_indices(self._table, None, n, self.ways, self.shots + self.queries,
                               generator)

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
        check_positive_int("Omniglot.sample_flat", n=n)
        idx = torch.randint(self._images.shape[0], (n,), generator=generator)     # [n]
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
        return (f"Omniglot(split={self.split!r}, ways={self.ways}, shots={self.shots}, "
                f"queries={self.queries}, image_size={self.image_size}, "
                f"num_classes={self.num_classes})")
