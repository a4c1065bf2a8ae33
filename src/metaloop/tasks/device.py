"""Device-resident episodes: an image family's uint8 store and class table on the model's
device, sampled and augmented there with a generator on that device.

``DeviceTasks(family, device)`` copies the store once; each ``sample`` then runs entirely on
``device`` (no host->device copy, no Python per task, no host synchronisation), so that on a
GPU the data share of a meta-iteration is a handful of kernel launches.

How the streams relate: the sampler runs the host families' own functions (Omniglot's
``task_indices``, with the challenge's within-alphabet tasks and shared drawers, or
``episode_indices`` for other stores; then ``episode_batch``'s gather and ``Shifted``'s
``augment_images``) with every random draw made on the generator's device. On the CPU,
``DeviceTasks(fam, "cpu")`` with a CPU generator gives exactly (bit for bit) ``fam``'s tasks.
On CUDA the draws come from the CUDA generator's own (Philox) stream, so the tasks differ
from the CPU's, but the same seed gives the same tasks on a given device and torch version.
"""

from __future__ import annotations

import copy
from typing import cast

import torch

from metaloop.tasks.augment import (
    Shifted,
    augment_images,
    elastic_images,
    rotate_images,
    shift_images,
    stroke_images,
)
from metaloop.tasks.batch import TaskBatch, _unchecked_batch
from metaloop.tasks.omniglot import (
    check_generator,
    check_positive_int,
    episode_indices,
    task_indices,
)


def _store(family) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """The family's flat uint8 images ``[N, C, H, W]``, class table int64 ``[K, M]`` (flat
    image indices per class, padded) and counts int64 ``[K]`` (None: every row is full).

    Read from ``family.episode_store()`` where a family defines it, else from a public
    ``images`` of shape ``[K, M, H, W]`` (K classes of M images each, as ``Omniglot``).
    """
    if hasattr(family, "episode_store"):
        images, table, counts = family.episode_store()
    else:
        images = getattr(family, "images", None)
        if not torch.is_tensor(images) or images.dim() != 4:
            raise ValueError(f"DeviceTasks needs an image family with an episode_store() "
                             f"method or uint8 images [classes, per_class, H, W] (as Omniglot)"
                             f"; {type(family).__name__} has neither")
        k, m, h, w = images.shape
        images, table, counts = images.reshape(k * m, h, w), torch.arange(k * m).view(k, m), None
    if images.dtype != torch.uint8 or images.dim() not in (3, 4):
        raise ValueError(f"DeviceTasks needs uint8 images [N, H, W] or [N, C, H, W], got "
                         f"{images.dtype} {list(images.shape)}")
    if images.dim() == 3:
        images = images.unsqueeze(1)                                    # [N, 1, H, W]
    return images, table, counts


class DeviceTasks:
    """N-way K-shot tasks of an image family, stored and sampled on ``device``.

    Args:
        family: an image family (see ``_store``: ``Omniglot``, or any family with an
            ``episode_store()``), or a ``Shifted`` one, whose rotations and shifts are then
            drawn on the device too.
        device: where the store lives and the tasks are drawn; ``sample`` needs a
            ``torch.Generator`` on it (``generator_device``; ``metaloop.train`` makes it).
        dtype: the floating dtype of the sampled images (the model's).

    Attributes:
        kind: ``"classification"``.
        ways: classes per task, as the family's.
        shots: support examples per class, as the family's.
        queries: query examples per class, as the family's.
        num_classes: the family's number of classes.
        class_names: the family's class names.
        image_shape: ``(C, H, W)`` of one image, as the family's.
        input_shape: the model's input shape, as the family's.
        device: where the store lives and the tasks are drawn.
        dtype: the floating dtype of the sampled images.
        generator_device: the device of the ``torch.Generator`` that ``sample`` needs.

    An Omniglot family's ``within_alphabet`` rate and ``drawers`` carry over: its alphabet
    table goes to the device with the images, and its tasks are drawn by the same
    ``task_indices``.

    Raises:
        ValueError: a family without a uint8 image store, or shots + queries above the
            smallest class.
    """

    kind = "classification"
    # every task's labels are arange(ways) repeated: metaloop.train steps on these batches
    # inside metaloop.tasks.batch.valid_by_construction(), reading no label back to the host
    valid_by_construction = True

    def __init__(self, family, device, dtype: torch.dtype = torch.float32):
        self.max_shift, self.max_rotate, self.max_stroke, self.elastic = 0, 0.0, 0.0, 0.0
        if isinstance(family, Shifted):
            self.max_shift, self.max_rotate = family.max_shift, family.max_rotate
            self.max_stroke, self.elastic = family.max_stroke, family.elastic
            family = family.family
        images, table, counts = _store(family)
        device = torch.device(device)
        if device.type == "cuda" and device.index is None:
            device = torch.device("cuda", torch.cuda.current_device())
        # Omniglot's challenge options: its own tables, drawn by its own task_indices
        self.within_alphabet = float(getattr(family, "within_alphabet", 0.0))
        self.drawers = getattr(family, "drawers", "any")
        self._groups = self._sizes = self._largest = None
        if (self.within_alphabet or self.drawers != "any") and not hasattr(family,
                                                                           "index_tables"):
            raise ValueError(f"DeviceTasks: {family!r} draws tasks within an alphabet or by "
                             f"shared drawers but has no index_tables() to draw them from")
        if hasattr(family, "index_tables"):
            table, groups, sizes = family.index_tables()
            self._groups, self._sizes = groups.to(device), sizes.to(device)   # [A, M], [A]
            self._largest = int(sizes.max())                    # read here, on the host
        self.family, self.device, self.dtype, self.generator_device = family, device, dtype, device
        self.ways, self.shots, self.queries = family.ways, family.shots, family.queries
        self.num_classes = table.shape[0]
        self.class_names = getattr(family, "class_names", None)
        self.image_shape = tuple(images.shape[1:])
        self._fewest = int(table.shape[1] if counts is None else counts.min())
        self._images = images.to(device)                                # [N, C, H, W] uint8
        self._table = table.to(device)                                  # [K, M] int64
        self._counts = None if counts is None else counts.to(device)    # [K] int64
        self._validate()

    @property
    def input_shape(self) -> tuple[int, ...]:
        return self.image_shape

    def _validate(self) -> None:
        check_positive_int("DeviceTasks", ways=self.ways, shots=self.shots,
                           queries=self.queries)
        if self.ways > self.num_classes:
            raise ValueError(f"DeviceTasks ways={self.ways} exceeds the {self.num_classes} "
                             f"classes")
        if self.shots + self.queries > self._fewest:
            raise ValueError(f"DeviceTasks shots + queries = {self.shots} + {self.queries} "
                             f"exceeds the {self._fewest} images of the smallest class")
        if self.within_alphabet > 0 and self._largest < self.ways:
            raise ValueError(f"DeviceTasks within_alphabet={self.within_alphabet}: no alphabet "
                             f"has ways={self.ways} characters (the largest has "
                             f"{self._largest})")
        z = torch.zeros(1, 1, 1)                                      # checks, as Shifted
        shift_images(torch.zeros(1, *self.image_shape[-2:]), self.max_shift)
        rotate_images(z, self.max_rotate)
        stroke_images(z, self.max_stroke)
        elastic_images(z, self.elastic)

    def sample(self, n: int, generator: torch.Generator | None = None) -> TaskBatch:
        """n tasks, every tensor on ``device``.

        Args:
            n: number of tasks.
            generator: a generator on ``generator_device`` (None: that device's default).

        Returns:
            TaskBatch: support_x ``[n, ways*shots, C, H, W]`` in ``dtype``, support_y int64
            ``[n, ways*shots]``, query likewise with ``queries``, classes int64 ``[n, ways]``.

        Raises:
            ValueError: a non-positive n, or a generator on another device.
        """
        check_positive_int("DeviceTasks.sample", n=n)
        check_generator("DeviceTasks.sample", generator)
        if generator is not None and generator.device != self.device:
            raise ValueError(f"DeviceTasks on {self.device} needs a generator there, got one "
                             f"on {generator.device}")
        ways, shots, per_class = self.ways, self.shots, self.shots + self.queries
        if self._groups is not None:        # Omniglot: its stream, on this device
            classes, idx = task_indices(self._table, self._groups,
                                        cast(torch.Tensor, self._sizes), n, ways,
                                        per_class, self.within_alphabet, self.drawers,
                                        generator)
        else:
            classes, idx = episode_indices(self._table, self._counts, n, ways, per_class,
                                           generator)
        c, h, w = self.image_shape
        x = self._images.index_select(0, idx.flatten()).to(torch.float32).div_(255)
        x = x.view(n, ways, per_class, c, h, w)                         # [n, ways, S+Q, C, H, W]
        sx = x[:, :, :shots].reshape(n, ways * shots, c, h, w)          # [n, ways*S, C, H, W]
        qx = x[:, :, shots:].reshape(n, ways * self.queries, c, h, w)   # [n, ways*Q, C, H, W]
        aug = (self.max_shift, self.max_rotate, self.max_stroke, self.elastic)
        sx = augment_images(sx, generator, *aug)          # Shifted's order: support, query
        qx = augment_images(qx, generator, *aug)
        label = torch.arange(ways, device=self.device)
        sy = label.repeat_interleave(shots).expand(n, -1).contiguous()         # [n, ways*S]
        qy = label.repeat_interleave(self.queries).expand(n, -1).contiguous()  # [n, ways*Q]
        return _unchecked_batch(sx.to(self.dtype), sy, qx.to(self.dtype), qy, classes)

    def with_shots(self, shots: int, queries: int | None = None) -> DeviceTasks:
        """The same store (shared, not copied) with other shot (and query) counts."""
        new = copy.copy(self)
        new.shots, new.queries = shots, self.queries if queries is None else queries
        new._validate()
        return new

    def __repr__(self) -> str:
        aug = "".join(f", {k}={getattr(self, k)}" for k in
                      ("max_shift", "max_rotate", "max_stroke", "elastic") if getattr(self, k))
        return f"DeviceTasks({self.family!r}, device={self.device}, dtype={self.dtype}{aug})"
