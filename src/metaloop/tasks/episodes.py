"""``Episodes``: N-way K-shot tasks from any labelled data (tensors, an image folder, a
``Dataset``), on the same vectorised episode sampler as the built-in image families."""

from __future__ import annotations

import copy
import math
import os
import pickle
import re
import warnings
import zipfile
import zlib
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from types import MappingProxyType
from typing import Any, overload

import numpy as np
import torch

from metaloop._random import draw_device
from metaloop.tasks.batch import TaskBatch
from metaloop.tasks.omniglot import (
    check_generator,
    check_positive_int,
    episode_indices,
    split_episodes,
)
from metaloop.tasks.splits import (
    check_name_list,
    check_one_spelling,
    nfc,
    read_split_files,
    same_in_nfc,
    split_classes,
)

SPLITS = ("train", "val", "test")


def class_table(labels: torch.Tensor, num_classes: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The example indices of each class, padded with 0.

    Args:
        labels: int64 ``[N]`` in ``[0, num_classes)``.
        num_classes: K.

    Returns:
        table int64 ``[K, M]`` (M = the largest class; each row in dataset order),
        counts int64 ``[K]``.
    """
    y = labels.numpy()                        # numpy: torch's CPU sort is slow to start up
    counts = np.bincount(y, minlength=num_classes)                             # [K]
    order = np.argsort(y, kind="stable")                                       # [N]
    starts = np.cumsum(counts) - counts                                        # [K]
    m = max(int(counts.max()) if len(counts) else 0, 1)
    pos = np.arange(m)                                                         # [M]
    real = pos < counts[:, None]                                               # [K, M]
    flat = np.minimum(starts[:, None] + pos, max(len(order) - 1, 0))           # [K, M]
    table = np.where(real, order[flat], 0) if len(order) else np.zeros_like(flat)
    return torch.from_numpy(table).long(), torch.from_numpy(counts).long()


class SmallClassesError(ValueError):
    """Classes with fewer examples than a task takes of each (``shots + queries``), raised
    by ``Episodes`` and ``TextTable``. ``problem`` says what is too small and ``advice``
    how to fix it; the message is ``"{problem}; {advice}"``. A caller whose user sets
    shots, queries and ``drop_small`` by other names (a config's keys, a command's flags)
    raises it again with its own ``advice``.

    The ``advice`` given may hold one part in square brackets, the one that says to lower
    the shots (``SMALL_ADVICE``): it is kept, without its brackets, unless ``shots`` is 1,
    the fewest a task takes, where it is left out (``advice_for_shots``).

    Attributes:
        problem: the classes and their sizes, led by the data they are in.
        advice: what to change, fitted to ``shots``.
        shots: the support examples per class of the tasks that did not fit; None where
            not given (an error raised again from another: ``__cause__`` has them).
    """

    def __init__(self, problem: str, advice: str, shots: int | None = None):
        advice = advice_for_shots(advice, shots)
        super().__init__(f"{problem}; {advice}")
        self.problem, self.advice, self.shots = problem, advice, shots

    def __reduce__(self):                     # pickled (and copied) with every part
        return type(self), (self.problem, self.advice, self.shots)


def advice_for_shots(advice: str, shots: int | None) -> str:
    """``advice`` (a ``SmallClassesError``'s, its part on lowering the shots in square
    brackets) for tasks of ``shots`` support examples per class: that part without its
    brackets, or left out where ``shots`` is 1, as a task takes one at least; kept where
    ``shots`` is None (not known). Advice without brackets is returned as it is."""
    head, bracket, rest = advice.partition("[")
    part, closed, tail = rest.partition("]")
    if not (bracket and closed):
        return advice
    return head + ("" if shots == 1 else part) + tail


SMALL_ADVICE = "give fewer [shots/]queries, or leave them out: drop_small=True"
"""``SmallClassesError.advice`` of ``Episodes``: in the constructor's words, its part on the
shots in brackets (``advice_for_shots``)."""


class EmptyClassesWarning(UserWarning):
    """Class names that no example has (a tensor file's ``class_names``, a Hugging Face
    ``ClassLabel``'s names after a ``filter``, the ``class_names`` given): no class, as a
    class folder without images is none. They are left out, named once in this warning; the
    other classes keep their names (``drop_empty_classes``)."""


@overload
def drop_empty_classes(y: torch.Tensor, names: list[str], what: str
                       ) -> tuple[torch.Tensor, list[str]]: ...
@overload
def drop_empty_classes(y: torch.Tensor, names: list[str] | None, what: str
                       ) -> tuple[torch.Tensor, list[str] | None]: ...
def drop_empty_classes(y: torch.Tensor, names: list[str] | None, what: str
                       ) -> tuple[torch.Tensor, list[str] | None]:
    """Integer labels ``y [N]`` into ``names`` without the names no label has: those names
    left out and the labels renumbered 0..K'-1 in the same order, with an
    ``EmptyClassesWarning`` (led by ``what``) naming them. Labels that are not integers in
    ``[0, len(names))`` are returned as they are, for ``check_examples`` to refuse.

    Returns:
        ``(y, names)``: int64 labels and the names that have examples, or both unchanged.
    """
    if names is None or not isinstance(y, torch.Tensor) or y.dim() != 1 or not y.numel() \
            or y.is_floating_point() or y.is_complex() or y.dtype == torch.bool \
            or y.is_meta:
        return y, names
    y64 = y.to(torch.int64)
    if int(y64.min()) < 0 or int(y64.max()) >= len(names):
        return y, names
    counts = torch.bincount(y64, minlength=len(names))                       # [K]
    empty = (counts == 0).nonzero().flatten().tolist()
    if not empty:
        return y, names
    keep = (counts > 0).nonzero().flatten()                                 # [K']
    renumber = torch.full((len(names),), -1, dtype=torch.int64)
    renumber[keep] = torch.arange(len(keep))
    gone = [names[i] for i in empty]
    more = f" and {len(gone) - 8} more" if len(gone) > 8 else ""
    warnings.warn(f"{what} has {len(gone)} name(s) that no example has, left out (a name "
                  f"without examples is no class): {', '.join(map(repr, gone[:8]))}{more}; "
                  f"the other {len(keep)} class(es) keep their names", EmptyClassesWarning,
                  stacklevel=3)
    return renumber[y64], [names[i] for i in keep.tolist()]


class Episodes:
    """N-way K-shot classification tasks from labelled examples.

    Each task draws ``ways`` distinct classes and ``shots + queries`` distinct examples of
    each; classes may have unequal sizes. Images stored as uint8 are scaled to [0, 1] when a
    task is drawn, so a memory-mapped uint8 store (``from_folder``) is read only where tasks
    touch it.

    Args:
        x: ``[N, C, H, W]`` images (uint8 in 0..255, scaled to [0, 1]; float values taken
            unscaled; or bool read as float 0/1), ``[N, H, W]`` greyscale images (a channel
            axis is added), or ``[N, D]`` feature vectors. A numpy array or a tensor; it is
            not copied (except a read-only array, one in the other byte order, or bool).
            Tasks are float32 whatever ``x``'s dtype: a float64 ``x`` is rounded to float32
            as each task is drawn (so that numpy's default float64 arrays meet a float32
            model), and a float64 model's ``ml.train`` casts those batches back to float64,
            float32's values in float64's dtype.
        y: non-negative int ``[N]`` labels: in ``[0, K)`` with ``class_names``; without,
            the classes are the distinct labels present, named by their values (0..K-1 give
            ``"0"`` ... ``"K-1"``; labels with gaps, such as 3, 7, 100, give the three
            classes ``"3"``, ``"7"``, ``"100"``, as ``from_dataset`` and ``from_tensors``
            read them). A negative label is refused, as no class (-1 often marks an
            unlabelled example); to keep negative values as classes, remap them first:
            ``values, y = torch.unique(y, return_inverse=True)`` with
            ``class_names=[str(v) for v in values.tolist()]``.
        ways: classes per task.
        shots: support examples per class.
        queries: query examples per class.
        class_names: K names, indexed by label (default: the labels' values, as above). A
            name that no label has is no class: it is left out, with an
            ``EmptyClassesWarning`` naming it, and the other classes keep their names.
        classes: use only these class names (e.g. one split of ``split_classes``); each is
            compared as ``str(c)``, as the names are stored (label 3's default name is "3"),
            in Unicode NFC (``class_positions``); ``class_names`` then spell them as the
            data does.
        drop_small: leave out classes with fewer than ``shots + queries`` examples (their
            names are in ``dropped``) instead of raising.

    Attributes:
        kind: ``"classification"``.
        num_classes: classes in use (K', after ``classes`` and ``drop_small``).
        class_names: their names; ``TaskBatch.classes`` holds positions into this list.
        input_shape: ``(C, H, W)`` or ``(D,)``; ``image_shape`` is the same for images and
            None for vectors.
        dropped: names of the classes ``drop_small`` left out.
        transform: for folder data, the settings that turn an image file into an input
            (``image_size``, ``channels``, ``invert``), else None.

    Raises:
        ValueError: naming the problem: shapes or dtypes, non-finite values in float ``x``,
            ``x`` or ``y`` on the meta device, labels out of range (negative ones included,
            with the remapping above), one string instead of a
            list for ``classes`` or ``class_names``, two ``class_names`` equal in NFC,
            unknown or repeated ``classes`` (two spellings equal in NFC included), fewer
            classes than ``ways``, classes smaller than ``shots + queries`` (listed; a
            ``SmallClassesError``), or a ``drop_small`` that is not True or False (a string
            such as ``"False"`` would read as True).
    """

    kind = "classification"
    report: dict[str, Any]      # set by from_folder only: what the folder held and left out
    # from_folder: class name -> exact copies of its images left out, which the error on a
    # class too small names (8 identical files are a class of 1 image)
    _copies: Mapping[str, int] = MappingProxyType({})

    def __init__(self, x, y, ways: int = 5, shots: int = 1, queries: int = 15,
                 class_names: Sequence[str] | None = None, *,
                 classes: Sequence[str] | None = None, drop_small: bool = False):
        from metaloop.meta._common import check_flag  # (here: metaloop.meta imports tasks)

        ways, shots, queries = check_positive_int("Episodes", ways=ways, shots=shots,
                                                  queries=queries)
        drop_small = check_flag("Episodes drop_small", drop_small)
        if class_names is None:     # labels with gaps (3, 7, 100): classes named by value
            y, class_names = _dense_given_labels(y)
        x, y, names = check_examples(x, y, class_names, "Episodes")
        given = list(names)
        y, names = drop_empty_classes(y, names, "Episodes class_names")
        k = len(names)
        table, counts = class_table(y, k)                              # [K, M], [K]
        use = list(range(k))
        if classes is not None:
            check_name_list("Episodes classes", classes)
            classes = [str(c) for c in classes]           # as the names are: 0 is "0"
            # a name left out for having no example (warned above) is no class of the split
            # either: a split drawn over all the names (a stored one) keeps its other classes
            empty = set(given) - set(names)
            classes = [c for c in classes if c not in empty]
            use, unknown = class_positions(classes, names)
            if unknown:
                raise ValueError(f"Episodes classes names {len(unknown)} unknown class(es): "
                                 f"{list(unknown)[:5]}")
            check_distinct_classes("Episodes classes", classes)
        self._x, self._y = x, y
        self._all_names, self._all_table, self._all_counts = names, table, counts
        self._use = use
        self.ways, self.shots, self.queries = ways, shots, queries
        self.drop_small = drop_small
        self.transform: dict | None = None
        self._select()

    # -- class selection -----------------------------------------------------------------

    def _select(self) -> None:
        """Keep the classes in use with enough examples; build the sampling table."""
        need = self.shots + self.queries
        counts = self._all_counts[self._use]                             # [K']
        small = [(self._all_names[c], int(n)) for c, n in zip(self._use, counts) if n < need]
        if small and not self.drop_small:
            shown = ", ".join(f"{n!r} ({c}{_copies_note(self._copies.get(n, 0))})"
                              for n, c in small[:8])
            more = f" and {len(small) - 8} more" if len(small) > 8 else ""
            raise SmallClassesError(f"Episodes: {len(small)} class(es) have fewer than "
                                    f"shots + queries = {self.shots} + {self.queries} = "
                                    f"{need} examples: {shown}{more}", SMALL_ADVICE,
                                    shots=self.shots)
        small_names = {n for n, _ in small}
        keep = [c for c in self._use if self._all_names[c] not in small_names]
        self.dropped = [n for n, _ in small]
        self._keep = torch.tensor(keep, dtype=torch.int64)
        self.class_names = [self._all_names[c] for c in keep]
        self.num_classes = len(keep)
        if self.num_classes < self.ways:
            why = f" after dropping {len(small)} small class(es)" if small else ""
            raise ValueError(f"Episodes ways={self.ways} exceeds the {self.num_classes} "
                             f"classes available{why}")
        # the table as wide as the largest class in use, not of the whole data: the task
        # stream depends only on the classes in use (a class left out, or added to the
        # folder since, changes nothing)
        self._counts = self._all_counts[self._keep]                      # [K']
        m = max(int(self._counts.max()), 1)
        self._table = self._all_table[self._keep, :m]                    # [K', M']
        self._pad = None if bool((self._counts == m).all()) else self._counts

    def subset(self, classes: Sequence[str]) -> Episodes:
        """The same data restricted to ``classes`` (names), sharing the storage.

        Raises:
            ValueError: one string instead of a list, unknown or repeated names (compared
                in Unicode NFC, as the constructor's ``classes``), or too few classes for
                ``ways``.
        """
        check_name_list("Episodes.subset classes", classes)
        classes = [str(c) for c in classes]               # as the names are: 0 is "0"
        use, unknown = class_positions(classes, self._all_names)
        if unknown:
            raise ValueError(f"Episodes.subset: {len(unknown)} unknown class(es): "
                             f"{list(unknown)[:5]}")
        check_distinct_classes("Episodes.subset classes", classes)
        new = copy.copy(self)
        new._use = use
        new._select()
        return new

    # -- the TaskFamily protocol ---------------------------------------------------------

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self._x.shape[1:])

    @property
    def image_shape(self) -> tuple[int, int, int] | None:
        """``(C, H, W)`` for images, None for feature vectors."""
        return tuple(self._x.shape[1:]) if self._x.dim() == 4 else None

    @property
    def all_class_names(self) -> list[str]:
        """Every class of the data, whether in use or not (``class_names`` are those in use)."""
        return list(self._all_names)

    def describe(self) -> str:
        """One line on what was read: images, classes, and what was ignored, skipped or
        dropped (folder data: ``describe_report``), or examples and classes."""
        r = getattr(self, "report", None)
        if r is None:
            return (f"{self.num_examples} examples in {self.num_classes} classes"
                    + (f"; dropped {len(self.dropped)} class(es) with fewer than "
                       f"{self.shots + self.queries} examples" if self.dropped else ""))
        return describe_report(r, self.num_classes, self.dropped, self.shots + self.queries)

    @property
    def num_examples(self) -> int:
        """Examples of the classes in use."""
        return int(self._counts.sum())

    def episode_store(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """The sampler's data, for ``metaloop.tasks.device.DeviceTasks``: the examples
        ``[N, *input_shape]``, the class table int64 ``[K', M]`` of flat indices, and the
        per-class counts ``[K']`` (None when every class has M examples)."""
        return self._x, self._table, self._pad

    def _gather(self, idx: torch.Tensor) -> torch.Tensor:
        """float32 examples at flat indices ``idx [...]`` -> ``[..., *input_shape]``."""
        x = self._x.index_select(0, idx.flatten())                       # [n, *feature]
        x = x.to(torch.float32).div_(255) if x.dtype == torch.uint8 else x.to(torch.float32)
        return x.view(*idx.shape, *x.shape[1:])

    def sample_indices(self, n: int, generator: torch.Generator | None = None
                       ) -> tuple[torch.Tensor, torch.Tensor]:
        """Class positions int64 ``[n, ways]`` and example indices
        ``[n, ways, shots + queries]``."""
        check_positive_int("Episodes.sample", n=n)
        check_generator("Episodes.sample", generator)
        return episode_indices(self._table, self._pad, n, self.ways, self.shots + self.queries,
                               generator)

    def sample(self, n: int, generator: torch.Generator | None = None) -> TaskBatch:
        """Sample n tasks.

        Returns:
            TaskBatch: support_x float32 ``[n, ways*shots, *input_shape]`` (images in
            [0, 1] when stored as uint8), support_y int64 ``[n, ways*shots]`` with labels
            ``arange(ways).repeat_interleave(shots)``, query likewise with ``queries``,
            classes int64 ``[n, ways]`` (positions into ``class_names``).
        """
        classes, idx = self.sample_indices(n, generator)
        return split_episodes(self._gather(idx), classes, self.shots)  # x [n, ways, S+Q, ...]

    def sample_flat(self, n: int, generator: torch.Generator | None = None
                    ) -> tuple[torch.Tensor, torch.Tensor]:
        """n examples drawn uniformly with replacement from the classes in use.

        Returns:
            x: float32 ``[n, *input_shape]``; y: int64 ``[n]`` positions into
            ``class_names``.
        """
        check_positive_int("Episodes.sample_flat", n=n)
        check_generator("Episodes.sample_flat", generator)
        m = self._table.shape[1]
        real = torch.arange(m) < self._counts[:, None]                     # [K', M]
        at = draw_device(generator)
        pick = torch.randint(int(real.sum()), (n,), generator=generator, device=at)
        pick = pick.to(real.device)                                        # [n]
        flat, y = self._table[real], real.nonzero()[:, 0]                  # [E], [E]
        return self._gather(flat[pick]), y[pick]

    def with_shots(self, shots: int, queries: int | None = None) -> Episodes:
        """The same classes and ways with other shot (and query) counts, sharing the data."""
        new = copy.copy(self)
        new.shots, new.queries = shots, self.queries if queries is None else queries
        new.shots, new.queries = check_positive_int("Episodes", shots=new.shots,
                                                    queries=new.queries)
        new._select()
        return new

    def with_ways(self, ways: int) -> Episodes:
        """The same classes with another number of ways."""
        new = copy.copy(self)
        (new.ways,) = check_positive_int("Episodes", ways=ways)
        new._select()
        return new

    def __repr__(self) -> str:
        return (f"Episodes(num_classes={self.num_classes}, ways={self.ways}, "
                f"shots={self.shots}, queries={self.queries}, "
                f"input_shape={self.input_shape})")

    # -- constructors --------------------------------------------------------------------

    @classmethod
    def from_folder(cls, root: str | os.PathLike, ways: int = 5, shots: int = 1,
                    queries: int = 15, *, image_size: int = 28, channels: int = 1,
                    invert: str = "never", class_depth: int = 1, split: str | None = None,
                    fractions: Sequence[float] = (0.7, 0.1, 0.2), seed: int = 0,
                    split_files: dict[str, str | os.PathLike] | None = None,
                    classes: Sequence[str] | None = None, drop_small: bool = False,
                    skip_corrupt: bool = False, cache_dir: str | os.PathLike | None = None,
                    progress: Callable[[int], None] | None = None) -> Episodes:
        """Tasks from an image folder ``root/<class>/<image>`` (torchvision's layout), or
        ``root/<group>/<class>/<image>`` with ``class_depth = 2``.

        The folder is decoded once into a memory-mapped uint8 cache
        (``metaloop.data.folder.load_folder``); hidden files, non-image files and images
        outside any class folder are left out and counted (``report``, ``describe``).

        Args:
            root: the folder.
            ways: classes per task.
            shots: support examples per class.
            queries: query examples per class.
            image_size: side H = W after padding to a square and an antialiased resize.
            channels: 1 (greyscale) or 3 (RGB).
            invert: ``"never"``, ``"always"`` or ``"auto"`` (see ``load_image``).
            class_depth: 1 or 2.
            split: None (every class), or ``"train"``, ``"val"``, ``"test"``: the classes of
                ``split_files[split]`` if given, else of ``split_classes(names, fractions,
                seed)``.
            fractions: the class split ``(train, val, test)``.
            seed: the seed of the class split.
            split_files: ``{"train": path, "val": path, "test": path}``, one class per
                line.
            classes: use exactly these classes, in place of a split: given with a
                ``split``, ``fractions``, ``seed`` or ``split_files`` of its own, a
                ValueError.
            drop_small: leave out classes with fewer than shots + queries images.
            skip_corrupt: leave out unreadable images instead of raising.
            cache_dir: where the decoded cache lives (default: beside the data, or
                ``~/.cache/metaloop/folders`` when the folder is read-only).
            progress: called with the images decoded so far while the cache is built.

        Returns:
            Episodes with ``transform`` set and ``report`` = ``folder_report(data,
            dropped)``: ``{"images", "classes", "ignored", "hidden", "loose",
            "ignored_files", "empty", "skipped", "dropped", "duplicates", "cache",
            "cache_status"}``, counts of the images and classes read and of the entries left
            out (``ignored``: not images, the first few named in ``ignored_files``;
            ``hidden``), the class folders without images (``empty``), the files left out
            (``loose``: images outside any class folder; ``skipped``: unreadable, with
            ``skip_corrupt``; ``duplicates``: exact copies of an image of the same class),
            the classes ``drop_small`` dropped, and the cache's folder and status.

        Raises:
            ValueError: naming the problem (see ``load_folder``, ``split_classes``,
                ``read_split_file`` and the class); a ``drop_small`` or ``skip_corrupt``
                that is not True or False, or ``classes`` given with a split of its own,
                before the folder is read.
        """
        from metaloop.data.folder import load_folder
        from metaloop.meta._common import check_flag

        # before the folder is decoded: a string such as "False" would read as True
        drop_small = check_flag("Episodes.from_folder drop_small", drop_small)
        skip_corrupt = check_flag("Episodes.from_folder skip_corrupt", skip_corrupt)
        if classes is not None:
            _check_classes_alone("Episodes.from_folder", split, fractions, seed, split_files)
        data = load_folder(root, image_size=image_size, channels=channels, invert=invert,
                           class_depth=class_depth, skip_corrupt=skip_corrupt,
                           cache_dir=cache_dir, progress=progress)
        use = classes if classes is not None else select_split(
            data.class_names, split, fractions, seed, split_files)
        if classes is None:
            _check_split_ways(use, split, len(data.class_names), ways, fractions, split_files)
        fam = cls.__new__(cls)
        fam._copies = copies_per_class(data)            # before the classes are selected
        cls.__init__(fam, data.images, data.labels, ways, shots, queries, data.class_names,
                     classes=use, drop_small=drop_small)
        fam.transform = {"image_size": image_size, "channels": channels, "invert": invert}
        fam.report = folder_report(data, fam.dropped)
        return fam

    @classmethod
    def from_tensors(cls, path: str | os.PathLike, ways: int = 5, shots: int = 1,
                     queries: int = 15, **kw) -> Episodes:
        """Tasks from a ``.npz`` or ``.pt`` file holding ``x`` and ``y`` (and optionally
        ``class_names``); other keyword arguments as the constructor (and ``split``,
        ``fractions``, ``seed``, ``split_files`` as ``from_folder``). Without
        ``class_names``, integer labels with gaps (0, 10, 20, ...) are classes named by
        their value ("0", "10", ...); labels 0..K-1 are classes "0".."K-1". A name of
        ``class_names`` that no row has is left out before any split is drawn, with an
        ``EmptyClassesWarning`` naming it.

        Raises:
            ValueError: a missing, empty or unreadable file, another extension, missing keys,
                a non-numeric ``x`` or ``y``, non-finite values in ``x`` (naming the rows'
                classes), an ``x`` of another dtype than uint8, float or bool, float images
                that look like 0..255 pixels (none negative, some above 1: ``check_pixels``);
                and the constructor's errors (float labels,
                channels-last images, ...), each led by the file's path; a ``path`` that is
                no path (a tensor or array: ``Episodes(x, y, ...)`` takes those in memory).
        """
        check_tensor_path("Episodes.from_tensors", path,
                          "; for tensors or arrays in memory use ml.tasks.Episodes(x, y, "
                          "ways=..., shots=..., queries=...)")
        split = {k: kw.pop(k) for k in ("split", "fractions", "seed", "split_files") if k in kw}
        if kw.get("classes") is not None:
            _check_classes_alone("Episodes.from_tensors", split.get("split"),
                                 split.get("fractions", _FRACTIONS), split.get("seed", 0),
                                 split.get("split_files"))
        x, y, names = read_tensor_file(path)
        assert y is not None                                      # labels=True: read
        listed = names
        y, names = drop_empty_classes(y, names, f"tensor file {path}: class_names")
        # the split is drawn over every name the file lists, empty ones included (as a run's
        # stored split was drawn before they were left out), and they are left out of it
        if split.get("split") is not None and kw.get("classes") is None:
            k = len(listed) if listed is not None else int(y.max()) + 1
            all_names = listed or [str(i) for i in range(k)]
            fractions = split.get("fractions", (0.7, 0.1, 0.2))
            kw["classes"] = select_split(all_names, split["split"], fractions,
                                         split.get("seed", 0), split.get("split_files"))
            _check_split_ways(kw["classes"], split["split"], len(all_names), ways, fractions,
                              split.get("split_files"))
        if kw.get("classes") is not None and listed is not None and names != listed:
            gone = set(listed) - set(names or [])
            kw["classes"] = [c for c in kw["classes"] if str(c) not in gone]
        try:
            return cls(x, y, ways, shots, queries, names, **kw)
        except SmallClassesError as e:            # the same, led by the file
            problem = e.problem.removeprefix("Episodes").lstrip(": ")
            raise SmallClassesError(f"tensor file {path}: {problem}", e.advice,
                                    shots=e.shots) from e
        except ValueError as e:                   # what is wrong, and in which file
            text = str(e).removeprefix("Episodes").lstrip(": ")
            raise ValueError(f"tensor file {path}: {text}") from e

    @classmethod
    def from_dataset(cls, dataset, ways: int = 5, shots: int = 1, queries: int = 15, *,
                     image_column: str = "image", label_column: str = "label",
                     image_size: int | None = None, channels: int | None = None, **kw
                     ) -> Episodes:
        """Tasks from any map-style dataset of ``(x, label)`` pairs (``torch.utils.data.
        Dataset``: ``len`` and integer indexing), or a Hugging Face ``datasets.Dataset``
        (``image_column`` / ``label_column``; its ``ClassLabel`` names become the class
        names; those no example has, as after a ``filter``, are left out with an
        ``EmptyClassesWarning`` naming them). The dataset is read once, in order, into
        memory.

        ``x`` may be a tensor or array (``[C, H, W]``, ``[H, W]`` or ``[D]``), read as it
        is, or a PIL image (converted like ``load_image`` with ``image_size`` and
        ``channels``, default its size and 1 channel; they apply to PIL images only, so a
        dataset of tensors or arrays given either is refused). uint8 examples are pixels,
        scaled to [0, 1] when a task is drawn; other integer and bool examples (counts,
        int16 images) become float32 numbers as they are, unscaled: give uint8 for 0..255
        pixels. Other keyword arguments go to the constructor.

        Raises:
            ValueError: an empty dataset, an item that is not an ``(x, label)`` pair (a
                triple included), a label that is not an integer class index (a string, a
                fractional number, a bool; naming the item and the label), examples of
                different shapes (naming the first two indices), ``image_size`` or
                ``channels`` with an example that is not a PIL image (naming the item), a
                Hugging Face image column given as channels-last arrays (its numpy format;
                ``ds.with_format("torch")`` gives ``[C, H, W]``).
        """
        if not hasattr(dataset, "__len__") or not hasattr(dataset, "__getitem__"):
            raise ValueError(f"from_dataset needs a map-style dataset (len and indexing), got "
                             f"{type(dataset).__name__}")
        n = len(dataset)
        if n == 0:
            raise ValueError("from_dataset: the dataset is empty")
        names = kw.pop("class_names", None)
        hf = hasattr(dataset, "column_names") and hasattr(dataset, "features")
        from_features = hf and names is None
        if from_features:
            feat = dataset.features.get(label_column)
            names = list(getattr(feat, "names", None) or []) or None
        xs: list[torch.Tensor] = []
        ys: list[int] = []
        first_pil = False                        # whether item 0's example is a PIL image
        for i in range(n):
            item = dataset[i]
            if hf:
                item = (item[image_column], item[label_column])
            if not isinstance(item, (tuple, list)):
                raise ValueError(f"from_dataset: item {i} must be (x, label), got "
                                 f"{type(item).__name__}")
            if len(item) != 2:
                raise ValueError(f"from_dataset: item {i} must be an (x, label) pair, got a "
                                 f"{type(item).__name__} of {len(item)} element(s); map the "
                                 f"dataset to pairs first (extra fields are not dropped "
                                 f"silently)")
            if i == 0 and hf:
                _check_hf_channels_last(dataset, image_column, item[0])
            x = _as_array(item[0], image_size, channels, i)
            if xs and x.shape != xs[0].shape:
                raise ValueError(f"from_dataset: item 0 has shape {list(xs[0].shape)} but item "
                                 f"{i} has {list(x.shape)}; "
                                 + _one_shape_hint(first_pil, _is_pil(item[0])))
            if not xs:
                first_pil = _is_pil(item[0])
            xs.append(x)
            ys.append(_label(item[1], i))
        y, names = _dense_labels(torch.tensor(ys), names)
        y, names = drop_empty_classes(
            y, names, f"from_dataset: the ClassLabel of column {label_column!r}"
            if from_features else "from_dataset: class_names")
        return cls(torch.stack(xs), y, ways, shots, queries, names, **kw)


def copies_per_class(data) -> dict[str, int]:
    """How many exact copies of an image of its class a decoded image folder
    (``metaloop.data.folder.FolderData``) left out, by class name (classes without copies
    are not listed)."""
    label = dict(zip(data.files, data.labels.tolist()))
    counts: dict[str, int] = {}
    for _, first in data.duplicates:
        if first in label:
            name = data.class_names[label[first]]
            counts[name] = counts.get(name, 0) + 1
    return counts


def _copies_note(k: int) -> str:
    """What a class's size in an error adds about its exact copies left out."""
    return f"; {k} exact cop{'y' if k == 1 else 'ies'} left out" if k else ""


def describe_folder(data) -> str:
    """One line on a decoded image folder (``metaloop.data.folder.FolderData``): the images
    and classes read, the cache, and what was ignored (non-images, hidden entries), left out
    (class folders without images, images outside any class folder, exact copies of an
    image of the same class) and skipped (unreadable), in the words of ``metaloop train``
    (``describe_report``); every class with images counts as used."""
    in_use = int(torch.unique(data.labels).numel())   # a class all skipped has no images
    return describe_report(folder_report(data), in_use)


def folder_report(data, dropped: Sequence[str] = ()) -> dict[str, Any]:
    """What a decoded image folder held and what of it was not read: the ``report`` of
    ``Episodes.from_folder``, which ``describe_report`` words.

    Args:
        data: a ``metaloop.data.folder.FolderData`` (``load_folder``).
        dropped: the classes left out as too small (``Episodes.dropped``).

    Returns:
        ``{"images", "classes", "ignored", "hidden", "loose", "ignored_files", "empty",
        "skipped", "dropped", "duplicates", "cache", "cache_status"}``: the images and
        classes read; the non-image entries (the first few named in ``ignored_files``) and
        hidden entries left out; the class folders without images; the images outside any
        class folder, the unreadable ones skipped and the exact copies of an image of the
        same class left out (their files); ``dropped``; the cache's folder and status.
    """
    return {"images": len(data.files), "classes": len(data.class_names),
            "ignored": data.ignored, "hidden": data.hidden, "loose": list(data.loose),
            "ignored_files": list(data.ignored_files), "empty": list(data.empty),
            "skipped": [f for f, _ in data.skipped], "dropped": list(dropped),
            "duplicates": [f for f, _ in data.duplicates],
            "cache": str(data.cache_dir), "cache_status": data.cache_status}


def describe_report(report: Mapping[str, Any], num_classes: int,
                    dropped: Sequence[str] = (), need: int = 0) -> str:
    """One line on what an image folder held and what of it was not read, as ``metaloop
    train``, ``metaloop forgetting`` and ``metaloop vae`` print it (``Episodes.describe``
    of folder data): the images, classes and cache, then each kind of entry left out,
    counted with an example.

    Args:
        report: the folder's report (``folder_report``; ``Episodes.report``).
        num_classes: the classes in use.
        dropped: the classes left out for having fewer than ``need`` images.
        need: the images a class needs (``shots + queries``); read only with ``dropped``.

    Returns:
        ``"<images> images in <classes> classes (cache <status>: <folder>); <num_classes>
        classes in use"``, then ``"; "`` and a clause for each of: ignored non-image and
        hidden entries, class folders without images, images outside any class folder,
        unreadable images skipped, exact copies left out, classes dropped.
    """
    r = report
    parts = [f"{r['images']} images in {r['classes']} classes (cache {r['cache_status']}: "
             f"{r['cache']}); {num_classes} classes in use"]
    if r["ignored"] or r["hidden"]:
        shown = r.get("ignored_files") or []
        eg = f" (by suffix, e.g. {shown[0]})" if shown else ""
        parts.append(f"ignored {r['ignored']} non-image{eg} and {r['hidden']} hidden "
                     f"entries")
    if r.get("empty"):
        e = r["empty"]
        parts.append(f"left out {len(e)} class folder(s) without images, e.g. {e[0]!r}")
    if r.get("loose"):
        parts.append(f"left out {len(r['loose'])} image(s) outside any class folder, e.g. "
                     f"{r['loose'][0]} (a class's images go in a folder named after it)")
    if r["skipped"]:
        parts.append(f"skipped {len(r['skipped'])} unreadable image(s), e.g. "
                     f"{r['skipped'][0]}")
    if r.get("duplicates"):
        parts.append(f"left out {len(r['duplicates'])} exact copy(ies) of an image of "
                     f"the same class, e.g. {r['duplicates'][0]}")
    if dropped:
        parts.append(f"dropped {len(dropped)} class(es) with fewer than {need} images, e.g. "
                     f"{dropped[0]!r}")
    return "; ".join(parts)


def class_positions(classes: Sequence[str], names: Sequence[str]
                    ) -> tuple[list[int], list[str]]:
    """Where the class names asked for are among the data's, compared in Unicode NFC: a
    name typed composed (``"caf\\xe9"``) is the class a macOS folder, a tensor file or a
    table spells decomposed (``"cafe\\u0301"``), and the other way round.

    Args:
        classes: the names asked for (strings; a config's or a split's list).
        names: the data's class names, distinct in NFC (``check_examples`` refuses two
            that are not).

    Returns:
        The positions in ``names`` of the names of ``classes`` found, in the order of
        ``classes`` (so the data's spelling is ``names[i]``), and the names of
        ``classes`` found nowhere, as given.
    """
    index = {nfc(n): i for i, n in enumerate(names)}
    at = [index.get(nfc(c)) for c in classes]
    return [i for i in at if i is not None], [c for c, i in zip(classes, at) if i is None]


def check_distinct_classes(what: str, classes: Sequence[str]) -> None:
    """Refuse a class listed twice, also as two spellings equal in Unicode NFC: it would be
    two labels of one task, and the same example could then be in the support set under one
    label and in the query set under the other.

    Raises:
        ValueError: naming ``what`` and the duplicated names (the first few), or the two
            spellings of one name (with their code points).
    """
    names = list(classes)
    if len(set(names)) != len(names):
        dup = sorted({n for n in names if names.count(n) > 1})
        raise ValueError(f"{what} lists {len(dup)} class(es) more than once: {dup[:5]}")
    forms = same_in_nfc(names)
    if forms:
        a, b = forms[0]
        raise ValueError(f"{what} lists the class {nfc(a)!r} twice, spelled in two Unicode "
                         f"forms ({ascii(a)} and {ascii(b)}); list each class once")


def check_examples(x, y, class_names: Sequence[str] | None = None, what: str = "Episodes"
                   ) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
    """Labelled examples as a tensor ``x`` (``[N, H, W]`` greyscale images given their
    channel: ``[N, 1, H, W]``; a read-only numpy array, or one in the other byte order,
    copied; bool images as float32 0/1), int64 labels ``y`` ``[N]`` and the K class names
    (default ``"0"``, ``"1"``, ...).

    Raises:
        ValueError: led by ``what``: ``x`` of another shape or dtype (uint8 images, floats or
            bool: ``check_image_dtype``), labels that are not ints ``[N]`` (strings
            included) or lie outside ``[0, K)``,
            no examples, NaN or inf in float ``x`` (naming the rows and their classes),
            ``class_names`` given as one string, repeated class names (two names that differ
            only in their Unicode form included, naming both), square images given
            channels-last (``[N, H, H, 1 or 3]``), tensors on the meta device (no values).
    """
    if isinstance(x, np.ndarray):
        x = _from_numpy(check_image_dtype(x, what))
    if not isinstance(y, torch.Tensor):
        a = np.asarray(y)
        if a.dtype.kind not in "biuf":
            raise ValueError(f"{what} y must be int labels [N], got numpy {a.dtype} "
                             f"{list(a.shape)}; for named classes give each name an int label "
                             f"0..K-1 and pass class_names=[...] (the names in label order)")
        y = _from_numpy(a)
    if not isinstance(x, torch.Tensor):
        raise ValueError(f"{what} x must be a tensor or numpy array, got {type(x).__name__}")
    meta = [n for n, t in (("x", x), ("y", y)) if t.is_meta]
    if meta:
        raise ValueError(f"{what} {' and '.join(meta)} {'is' if len(meta) == 1 else 'are'} on "
                         f"the meta device: shapes without values, which no task can be drawn "
                         f"from; give the data itself (e.g. on the CPU)")
    if x.dim() == 3:
        x = x.unsqueeze(1)                                             # [N, 1, H, W]
    if x.dim() not in (2, 4):
        raise ValueError(f"{what} x must be [N, C, H, W] images, [N, H, W] greyscale images "
                         f"or [N, D] vectors, got shape {list(x.shape)}")
    if x.dim() == 4 and x.shape[1] == x.shape[2] and x.shape[1] not in (1, 3) \
            and x.shape[3] in (1, 3):
        raise ValueError(f"{what} x of shape {list(x.shape)} looks channels-last [N, H, W, C]; "
                         f"give [N, C, H, W] (x.permute(0, 3, 1, 2), or x.transpose(0, 3, 1, "
                         f"2) for numpy)")
    x = check_image_dtype(x, what)
    if y.dim() != 1 or len(y) != len(x) or y.is_floating_point() or y.dtype == torch.bool:
        raise ValueError(f"{what} y must be int labels [N] with N = {len(x)} (as x), got "
                         f"{y.dtype} {list(y.shape)}{_float_label_hint(y)}")
    if len(y) == 0:
        raise ValueError(f"{what} got no examples (N = 0)")
    y = y.to(torch.int64)
    check_name_list(f"{what} class_names", class_names)
    k = len(class_names) if class_names is not None else int(y.max()) + 1
    source = 'len(class_names)' if class_names is not None else 'max + 1'
    if int(y.min()) < 0:                # no class: -1 often marks an unlabelled example
        bounds = f"in [0, {k}) ({source}): non-negative ints" if k > 0 else "non-negative ints"
        remap = "" if class_names is not None else (
            "; to use the values as classes, remap them: values, y = torch.unique(y, "
            "return_inverse=True), with class_names=[str(v) for v in values.tolist()]")
        raise ValueError(f"{what} labels must be {bounds}, found {int(y.min())}..{int(y.max())}"
                         f"; a negative label is no class (-1 often marks an unlabelled "
                         f"example: leave those rows out){remap}")
    if int(y.max()) >= k:
        raise ValueError(f"{what} labels must be in [0, {k}) ({source}), "
                         f"found {int(y.min())}..{int(y.max())}")
    names = [str(n) for n in class_names] if class_names is not None \
        else [str(i) for i in range(k)]
    if x.is_floating_point():
        bad = ~torch.isfinite(x.reshape(len(x), -1)).all(1)                   # [N]
        if bool(bad.any()):
            rows = bad.nonzero().flatten().tolist()
            labels = y[bad].unique().tolist()
            raise ValueError(f"{what} x has non-finite values (NaN or inf) in {len(rows)} "
                             f"row(s) {rows[:5]} of {len(labels)} class(es) "
                             f"{[names[i] for i in labels][:5]}")
    if len(set(names)) != len(names):
        raise ValueError(f"{what} class_names has duplicates: "
                         f"{sorted({n for n in names if names.count(n) > 1})[:5]}")
    check_one_spelling(f"{what} class_names", names)
    return x, y, names


def _float_label_hint(y: torch.Tensor) -> str:
    """How to give float labels ``y`` as ints: whole numbers (``0.0, 1.0``) converted
    (``y.astype(int)``, ``y.long()``), others named as no class index."""
    if not y.is_floating_point() or y.is_meta or not y.numel():
        return ""
    whole = bool(torch.isfinite(y).all()) and bool((y == y.round()).all())
    if whole:
        return ("; these float labels are whole numbers: convert them before saving or "
                "passing them, y.astype(int) in numpy or y.long() in torch (float labels "
                "are not taken as they are)")
    return "; some of these float labels are not whole numbers, which are no class index"


@overload
def check_image_dtype(x: np.ndarray, what: str) -> np.ndarray: ...
@overload
def check_image_dtype(x: torch.Tensor, what: str) -> torch.Tensor: ...
def check_image_dtype(x, what: str):
    """The dtype check of ``x`` that ``Episodes`` and every command reading a tensor file
    (``check_pixels``) share: uint8 images (0..255) or floating point; bool images are read
    as float 0/1 pixels (as a uint8 0/255 image is read).

    Args:
        x: a tensor, or a numpy array (checked, not converted: non-numeric dtypes refused).
        what: the words that lead a refusal (e.g. ``"tensor file d.npz:"``).

    Returns:
        ``x`` as it is, or float32 ``x`` of the same shape where it was a bool tensor.

    Raises:
        ValueError: led by ``what``: a non-numeric numpy array (strings, dates, objects), or
            a tensor of another dtype, with how to convert it: uint16 scaled (``x / 65535``)
            or its high byte kept, never ``astype('uint8')``, which wraps modulo 256.
    """
    if isinstance(x, np.ndarray):
        if x.dtype.kind not in "biuf":
            raise ValueError(f"{what} x must be uint8 images (0..255) or floating point, got "
                             f"numpy {x.dtype}")
        return x
    if x.dtype == torch.bool:
        return x.to(torch.float32)                           # 0/1 pixels, as 0/255 uint8
    if x.dtype != torch.uint8 and not x.is_floating_point():
        if x.dtype == torch.uint16:
            how = ("scale 16-bit pixels to floats in [0, 1] (x / 65535) or keep their high "
                   "byte ((x >> 8).astype('uint8')); astype('uint8') alone wraps them modulo "
                   "256")
        else:
            how = ("store 0..255 pixels as uint8 (x.astype('uint8'), which wraps values "
                   "outside 0..255 modulo 256) or other values as floats (x.astype('float32'))")
        raise ValueError(f"{what} x must be uint8 images (0..255) or floating point, got "
                         f"{x.dtype}; {how}")
    return x


def check_pixels(x: torch.Tensor, what: str) -> torch.Tensor:
    """The check of a tensor file's ``x`` that every command applies as it reads it
    (``read_tensor_file``): the dtype (``check_image_dtype``: uint8 images, floats, or bool
    images read as float 0/1), and float images (``[N, H, W]`` or ``[N, C, H, W]``) that look
    like 0..255 pixels: no negative value and one above 1. Float images with a negative value
    (standardised images, log-mel spectrograms) are taken as they are, as ``Episodes`` takes
    them; feature vectors ``[N, D]`` may take any finite value.

    Returns:
        ``x``, float32 where it was bool.

    Raises:
        ValueError: led by ``what``: another dtype (uint16, int64, ...: training reads neither
            as pixels), or float images in [0, m] with m > 1 (naming the range and how many
            pixels lie above 1: 0..255 floats would train a network on inputs 255 times
            those a folder's images give it).
    """
    x = check_image_dtype(x, what)
    if x.dim() not in (3, 4) or not x.is_floating_point() or x.numel() == 0:
        return x
    lo, hi = float(x.min()), float(x.max())
    if lo >= 0 and hi > 1:                   # digits enough to show 1.0000001 above 1
        out = int((x > 1).sum())
        raise ValueError(f"{what} float pixels x must lie in [0, 1], got range "
                         f"[{lo:.9g}, {hi:.9g}] ({out:,} pixel(s) above 1): 0..255 pixels? "
                         f"scale them (e.g. x / 255) or store uint8 (standardised images, "
                         f"with negative values, are taken as they are; feature vectors "
                         f"[N, D] may take any value)")
    return x


def check_tensor_path(who: str, path, advice: str = "") -> None:
    """ValueError, led by ``who``, unless ``path`` is a ``str`` or ``os.PathLike``: a tensor
    or an array given for the file (``Episodes.from_tensors(x, y)``) would otherwise fail
    inside ``pathlib`` with a TypeError that names neither the argument nor the way on
    (``advice``, appended)."""
    if isinstance(path, (str, os.PathLike)):
        return
    got = (f"a {type(path).__name__} {list(path.shape)}"
           if isinstance(path, (torch.Tensor, np.ndarray)) else repr(path)[:80])
    raise ValueError(f"{who} reads a .npz or .pt file holding x and y: its path must be a "
                     f"str or os.PathLike, got {got}{advice}")


def read_tensor_file(path: str | os.PathLike, labels: bool = True
                     ) -> tuple[torch.Tensor, torch.Tensor | None, list[str] | None]:
    """``(x, y, class_names)`` of a ``.npz`` or ``.pt`` file holding ``x`` and ``y`` (and
    optionally ``class_names``), as ``Episodes.from_tensors`` reads it: integer labels with
    gaps and no names become classes named by their value. With ``labels=False`` only ``x``
    is needed and read (``y`` and the names are None): the examples to classify.

    Raises:
        ValueError: a missing, empty or unreadable file, another extension, missing keys, a
            non-numeric ``x`` or ``y``, no examples, non-finite values in ``x`` (naming
            the file, and the rows' classes), or an ``x`` that ``check_pixels`` refuses (a
            dtype other than uint8, float or bool; float images in [0, m] with m > 1, as
            0..255 pixels are). Bool images come back as float32 0/1; a ``path`` that is
            no ``str`` or ``os.PathLike`` (``check_tensor_path``).
    """
    check_tensor_path("read_tensor_file", path)
    path = Path(path)
    if path.is_dir():
        raise ValueError(f"tensor file {path} is a folder; a tensor file is a .npz or .pt "
                         f"file with x and y")
    if path.exists() and not path.is_file():
        raise ValueError(f"tensor file {path} exists but is not a regular file (a device, a "
                         f"pipe or a socket)")
    if not path.exists():
        raise ValueError(f"tensor file {path} does not exist")
    if path.suffix not in (".npz", ".pt"):
        raise ValueError(f"tensor file {path} must be .npz or .pt, got {path.suffix!r}"
                         + _npz_advice(path, labels))
    if path.stat().st_size == 0:
        raise ValueError(f"tensor file {path} is empty (0 bytes)")
    got = _load_npz(path) if path.suffix == ".npz" else _load_pt(path)
    missing = [k for k in (("x", "y") if labels else ("x",)) if k not in got]
    if missing:
        raise ValueError(f"tensor file {path} lacks {missing} (it has {sorted(got)})")
    x = _numeric(path, "x", got["x"])
    if not labels:
        if x.numel() == 0:
            raise ValueError(f"tensor file {path} holds no examples (x {list(x.shape)})")
        if x.is_floating_point() and x.dim() >= 2:
            bad = ~torch.isfinite(x.reshape(len(x), -1)).all(1)              # [N]
            if bool(bad.any()):
                rows = bad.nonzero().flatten().tolist()
                raise ValueError(f"tensor file {path}: x has non-finite values (NaN or inf) "
                                 f"in {len(rows)} row(s) {rows[:5]}")
        x = check_pixels(x, f"tensor file {path}:")
        return x, None, None
    names = got.get("class_names")
    names = [str(n) for n in names] if names is not None else None
    y = _numeric(path, "y", got["y"])
    if y.dtype in (torch.uint16, torch.uint32, torch.uint64):   # torch has no min() for them
        y = y.to(torch.int64)
    if x.numel() == 0 or y.numel() == 0:
        raise ValueError(f"tensor file {path} holds no examples (x {list(x.shape)}, "
                         f"y {list(y.shape)})")
    y, names = _dense_labels(y, names)
    _check_finite(path, x, y, names)
    x = check_pixels(x, f"tensor file {path}:")
    return x, y, names


def _npz_advice(path: Path, labels: bool) -> str:
    """How to write a numeric table as the ``.npz`` ``read_tensor_file`` reads (the tail of
    its message for another suffix); for a CSV, TSV or JSONL file also that those are read
    as text tables."""
    x = ("x = the examples, float32 [N, D] feature vectors (one row per example; images "
         "[N, H, W] or [N, C, H, W])")
    if labels:
        how = (f"np.savez('{path.stem}.npz', x=features, y=labels), with {x} and y = their "
               f"integer class labels [N] (add class_names=[K names], indexed by label, to "
               f"name the classes)")
        csv = (f"np.savez('{path.stem}.npz', x=d[:, :-1].astype('float32'), "
               f"y=d[:, -1].astype('int64'))")
    else:
        how = f"np.savez('{path.stem}.npz', x=features), with {x}"
        csv = f"np.savez('{path.stem}.npz', x=d.astype('float32'))"
    text = f"; to make one from a numeric table, in Python: {how}"
    if path.suffix.lower() in (".jsonl", ".ndjson"):
        text += (". JSONL files are read as tables of texts, not numbers (family.name = "
                 "\"table\", a text column and a label column)")
    elif path.suffix.lower() in (".csv", ".tsv", ".tab", ".txt"):
        delim = "'\\t'" if path.suffix.lower() in (".tsv", ".tab") else "','"
        text += (f" (a table of numbers{', the label in its last column' if labels else ''}"
                 f", no header line: d = np.loadtxt('{path.name}', delimiter={delim}); "
                 f"{csv}; skiprows=1 skips a header). CSV, TSV and "
                 f"JSONL files are read as tables of texts, not numbers (family.name = "
                 f"\"table\", a text column and a label column)")
    return text


def _dense_given_labels(y) -> tuple[Any, list[str] | None]:
    """``Episodes(x, y)``'s labels without class names, as ``from_dataset`` and
    ``from_tensors`` read theirs (``_dense_labels``): labels with gaps (3, 7, 100) are that
    many classes named by their values and labelled 0..K-1, with their names; anything else
    (labels 0..K-1, or what ``check_examples`` refuses: floats, bools, wrong shapes, the meta
    device) is returned as it is, with no names."""
    t = y
    if not isinstance(y, torch.Tensor):
        try:
            a = np.asarray(y)
        except Exception:                               # noqa: BLE001 - check_examples says
            return y, None
        if a.dtype.kind not in "iu" or a.dtype == np.uint64 or a.ndim != 1 or a.size == 0:
            return y, None
        t = torch.from_numpy(a.astype(np.int64))
    if t.is_meta or t.dim() != 1 or t.numel() == 0 or t.is_floating_point() \
            or t.is_complex() or t.dtype == torch.bool:
        return y, None
    if t.dtype in (torch.uint16, torch.uint32, torch.uint64):   # torch has no min() for them
        t = t.to(torch.int64)
    dense, names = _dense_labels(t, None)
    return (dense, names) if names is not None else (y, None)


def _dense_labels(y: torch.Tensor, names: list[str] | None
                  ) -> tuple[torch.Tensor, list[str] | None]:
    """Integer labels with gaps (0, 10, 20, ...) and no class names: the classes named by their
    value and labelled 0..K-1 (``[N]``), rather than 0..max with empty classes between."""
    if names is None and not y.is_floating_point() and y.dim() == 1 and y.numel() \
            and int(y.min()) >= 0 and len(torch.unique(y)) != int(y.max()) + 1:
        values = torch.unique(y)                                              # sorted [K]
        return torch.searchsorted(values, y), [str(int(v)) for v in values]
    return y, names


def _load_npz(path: Path) -> dict[str, np.ndarray]:
    """The arrays of an ``.npz`` file (no pickles).

    Each member's ``.npy`` header (shape and dtype) is read first: an array larger than the
    memory available (a few compressed KB can declare any size) is refused before it is
    decoded.

    Raises:
        ValueError: a file that is not a zip archive, or a corrupt one, or an array larger
            than the memory available (naming the file, the key and the shape).
    """
    with open(path, "rb") as f:            # np.load(path) leaks the file if the zip is bad
        head = f.read(4)
        if head not in (b"PK\x03\x04", b"PK\x05\x06"):
            raise ValueError(f"tensor file {path} is not an .npz archive (np.savez writes a "
                             f"zip file; this one starts with {head!r})")
        f.seek(0)
        _check_npz_sizes(path, f)
        f.seek(0)
        try:
            with np.load(f, allow_pickle=False) as d:
                return {k: d[k] for k in d.files}
        except (OSError, EOFError, ValueError, zipfile.BadZipFile, zlib.error) as e:
            raise ValueError(f"tensor file {path} is a corrupt .npz archive: {e}") from e


def _check_npz_sizes(path: Path, f) -> None:
    """Refuse an ``.npz`` (open as ``f``) with an array of Python objects, or whose arrays,
    as their ``.npy`` headers declare them, exceed the memory available
    (``metaloop.data.folder._available_memory``; no check where it is unknown), one array or
    all together, before any is decoded."""
    from metaloop.data import folder

    headers = _npz_headers(path, f)
    for key, _, dtype in headers:
        if dtype.hasobject:       # np.load would say "Object arrays cannot be loaded ..."
            fix = ("save the names as a string array: class_names=np.array([str(n) for n "
                   "in names]) (dtype <U..., not object)" if key == "class_names" else
                   "save x as numeric arrays (uint8 images or floats) and y as int labels "
                   "0..K-1, with the class names, if any, as a string array: "
                   "class_names=np.array([str(n) for n in names])")
            raise ValueError(f"tensor file {path}: its array {key!r} holds Python objects "
                             f"(dtype {dtype}), which loading would unpickle; it is refused: "
                             f"{fix}")
    have = folder._available_memory()
    if have is None:
        return
    total = 0
    for key, shape, dtype in headers:
        need = math.prod(shape) * dtype.itemsize
        total += need
        if need > have or total > have:
            what = (f"its array {key!r} of shape {tuple(shape)} ({dtype}) takes "
                    f"{folder._bytes(need)}" if need > have else
                    f"its arrays up to {key!r} (shape {tuple(shape)}, {dtype}) take "
                    f"{folder._bytes(total)}")
            raise ValueError(f"tensor file {path}: {what}, more than the "
                             f"{folder._bytes(have)} of memory available; it is refused "
                             f"unread (free memory, or save a smaller array)")


def _npz_headers(path: Path, f) -> list[tuple[str, tuple, np.dtype]]:
    """(key, shape, dtype) of each ``.npy`` member of the ``.npz`` open as ``f``, from the
    headers alone (format versions 1.0 to 3.0; another is refused).

    Raises:
        ValueError: a corrupt archive or header (naming the file).
    """
    out = []
    try:
        with zipfile.ZipFile(f) as z:
            for info in z.infolist():
                if not info.filename.endswith(".npy"):
                    continue
                with z.open(info) as member:
                    version = np.lib.format.read_magic(member)
                    if version == (1, 0):
                        shape, _, dtype = np.lib.format.read_array_header_1_0(member)
                    elif version in ((2, 0), (3, 0)):     # 3.0: 2.0's layout, UTF-8 text
                        shape, _, dtype = np.lib.format.read_array_header_2_0(member)
                    else:
                        raise ValueError(f"member {info.filename} has .npy format version "
                                         f"{version[0]}.{version[1]}, which this reader "
                                         f"does not know")
                out.append((info.filename.removesuffix(".npy"), shape, dtype))
    except (OSError, EOFError, ValueError, zipfile.BadZipFile, zlib.error) as e:
        raise ValueError(f"tensor file {path} is a corrupt .npz archive: {e}") from e
    return out


def _load_pt(path: Path) -> dict:
    """The dict of a ``torch.save`` file, loaded with ``weights_only=True``.

    A file whose pickle names code to run (a ``__reduce__`` payload: any global that is not
    a tensor type) is refused with torch's reason, none of it run.

    Raises:
        ValueError: a file ``torch.load`` cannot read or refuses, or that holds no dict
            (naming the file).
    """
    try:
        with warnings.catch_warnings():
            # a plain pickle (not torch's zip format) draws this warning before the refusal
            warnings.filterwarnings("ignore", message="Detected pickle protocol",
                                    category=UserWarning)
            got = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, KeyError, ValueError,
            OSError) as e:
        lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
        if lines and lines[0].startswith("Weights only load failed"):
            # torch's advice (load with weights_only=False) is what would run the code
            # (and to allow-list the global): dropped, torch's reason kept
            why = next((ln.removeprefix("WeightsUnpickler error:").strip() for ln in lines
                        if ln.startswith("WeightsUnpickler error")), None) or next(
                (ln for ln in lines[1:] if not ln.startswith("Check the documentation")
                 and "weights_only" not in ln), "it names a global that is not a tensor type")
            why = why.split(" Please use ")[0]
            held = _numpy_scalar_keys(path) if "GLOBAL numpy" in why else None
            if held:                                   # class_names of numpy strings ...
                key, kind = held[0]
                fix = ("save the names as plain str: class_names=[str(n) for n in names]"
                       if key == "class_names" else
                       f"save {key!r} as a tensor or as plain Python values "
                       f"(torch.as_tensor(...), or [str(v) for v in ...] for names)")
                raise ValueError(f"tensor file {path}: its {key!r} holds numpy scalars "
                                 f"({kind}), which torch.load reads only by unpickling; it "
                                 f"is refused: {fix}, then torch.save again") from None
            if re.search(r"GLOBAL (numpy|torch)\.", why):  # a numpy array, a TensorDataset
                raise ValueError(f"tensor file {path} holds numpy arrays or torch objects "
                                 f"other than tensors ({why}), which torch.load reads only by "
                                 f"unpickling; it is refused: save a dict of torch tensors "
                                 f"(torch.save({{'x': torch.from_numpy(x), 'y': "
                                 f"torch.from_numpy(y)}}, path)) or an .npz "
                                 f"(np.savez(path, x=x, y=y))") from None
            if "GLOBAL" in why:
                raise ValueError(f"tensor file {path} is not a torch save of tensors alone "
                                 f"and is refused: loading it would run code its pickle names "
                                 f"({why}); a tensor file holds a dict of torch tensors only "
                                 f"(torch.save({{'x': x, 'y': y}}, path))") from None
            raise ValueError(f"tensor file {path} is not a torch save of tensors (torch.load "
                             f"with weights_only=True refused it: {why}); a tensor file holds "
                             f"a dict of tensors only (torch.save({{'x': x, 'y': y}}, path))"
                             ) from None
        why = next((ln for ln in lines if ln.startswith("WeightsUnpickler error")),
                   lines[0] if lines else "")
        raise ValueError(f"tensor file {path} is not a torch save of tensors (torch.load with "
                         f"weights_only=True failed: {type(e).__name__}: {why})") from e
    if not isinstance(got, dict):
        raise ValueError(f"{path} must hold a dict with 'x' and 'y', got "
                         f"{type(got).__name__}")
    return got


def _numpy_scalar_keys(path: Path) -> list[tuple[str, str]] | None:
    """The keys of a ``torch.save`` dict that hold numpy scalars (``numpy.str_`` class
    names, ``numpy.int64`` labels ...), alone or in a list or tuple, with their types, as
    ``torch.load`` with ``weights_only=True`` reads them when it is allowed numpy's scalar
    and plain dtypes alone (no arrays, no objects: nothing else is unpickled); None where
    the file needs more than that or holds no dict."""
    core = getattr(np, "_core", None) or np.core
    kinds = [getattr(np.dtypes, n) for n in (
        "StrDType", "BytesDType", "BoolDType", "Int8DType", "Int16DType", "Int32DType",
        "Int64DType", "UInt8DType", "UInt16DType", "UInt32DType", "UInt64DType",
        "Float16DType", "Float32DType", "Float64DType") if hasattr(np.dtypes, n)]
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with torch.serialization.safe_globals([core.multiarray.scalar, np.dtype, *kinds]):
                got = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:                           # noqa: BLE001 - the caller's message stands
        return None
    if not isinstance(got, dict):
        return None
    out = []
    for key, v in got.items():
        items = list(v) if isinstance(v, (list, tuple)) else [v]
        kinds_held = sorted({f"numpy.{type(i).__name__}" for i in items
                             if isinstance(i, np.generic)})
        if kinds_held:
            out.append((str(key), ", ".join(kinds_held)))
    out.sort(key=lambda kv: kv[0] != "class_names")
    return out or None


def _numeric(path: Path, key: str, v) -> torch.Tensor:
    """``x`` or ``y`` of a tensor file as a tensor.

    Raises:
        ValueError: a dtype that is not numeric (strings, dates, records), naming the file.
    """
    if isinstance(v, torch.Tensor):
        return v
    a = np.asarray(v)
    if a.dtype.kind not in "biuf" and key == "y":
        raise ValueError(f"tensor file {path}: y must be int labels [N], got dtype {a.dtype}; "
                         f"for named classes save int labels and the names in label order: "
                         f"names, y = numpy.unique(y, return_inverse=True), then "
                         f"numpy.savez(..., x=x, y=y, class_names=names)")
    if a.dtype.kind not in "biuf":
        raise ValueError(f"tensor file {path}: {key} must be numeric (uint8 images or "
                         f"floats), got dtype {a.dtype}")
    return _from_numpy(a)


def _from_numpy(a: np.ndarray) -> torch.Tensor:
    """A numeric numpy array as a tensor, sharing its memory where torch can: a read-only
    array (``np.load``) or one in the other byte order (``>f4`` on a little-endian machine)
    is copied, as native numbers."""
    if not a.dtype.isnative:
        return torch.from_numpy(a.astype(a.dtype.newbyteorder("=")))
    return torch.from_numpy(a if a.flags.writeable else a.copy())


def _check_finite(path: Path, x: torch.Tensor, y: torch.Tensor, names: list[str] | None
                  ) -> None:
    """Refuse NaN or inf in floating-point ``x`` [N, ...] (a shape mismatch with ``y`` [N] is
    left to the constructor).

    Raises:
        ValueError: naming the file, the rows and their classes (the first few).
    """
    if not x.is_floating_point() or x.dim() < 2 or y.shape != x.shape[:1] \
            or y.is_floating_point():
        return
    bad = ~torch.isfinite(x.reshape(len(x), -1)).all(1)                      # [N]
    if bad.any():
        rows = bad.nonzero().flatten().tolist()
        labels = y[bad].unique().tolist()
        classes = [names[i] if names and 0 <= i < len(names) else str(i) for i in labels]
        raise ValueError(f"tensor file {path}: x has non-finite values (NaN or inf) in "
                         f"{len(rows)} row(s) {rows[:5]} of {len(classes)} class(es) "
                         f"{classes[:5]}")


def _label(value, i: int) -> int:
    """A dataset item's label as an int: a Python, numpy or one-element tensor / array
    integer, or a whole float (``3.0``).

    Raises:
        ValueError: a string, a bool, a fractional or non-finite number, or anything else,
            naming item ``i`` and the value.
    """
    v = value
    if isinstance(v, (torch.Tensor, np.ndarray)) and math.prod(v.shape) == 1:
        v = v.reshape(()).item()
    elif isinstance(v, np.generic):
        v = v.item()
    if isinstance(v, int) and not isinstance(v, bool):
        return v
    if isinstance(v, float) and v.is_integer():
        return int(v)
    hint = ("; for named classes give each name an int label 0..K-1 and pass "
            "class_names=[...] (the names in label order)" if isinstance(v, (str, bytes)) else "")
    raise ValueError(f"from_dataset: item {i}'s label must be an integer class index, got "
                     f"{type(value).__name__} {value!r}{hint}")


def _check_hf_channels_last(dataset, column: str, x) -> None:
    """Refuse a Hugging Face dataset whose image column (a ``datasets.Image`` feature) gives
    channels-last arrays ``[H, W, C]``, as its numpy format does: read as they are they would
    be images of H channels. ``ds.with_format("torch")`` gives them as ``[C, H, W]``
    tensors.

    Raises:
        ValueError: naming the column, the shape and the format, with that fix.
    """
    feat = getattr(dataset, "features", {}).get(column)
    if type(feat).__name__ != "Image" or not isinstance(x, np.ndarray) or x.ndim != 3 \
            or x.shape[-1] not in (1, 3, 4):
        return
    fmt = (getattr(dataset, "format", None) or {}).get("type")
    raise ValueError(f"from_dataset: column {column!r} gives its images as numpy arrays "
                     f"[H, W, C] = {list(x.shape)} (channels last, the dataset's "
                     f"{fmt or 'numpy'} format), which would be read as images of "
                     f"{x.shape[0]} channels; read the dataset with ds.with_format(\"torch\"), "
                     f"which gives [C, H, W] tensors, or with no format, which gives PIL "
                     f"images (image_size= and channels= convert those)")


def _is_pil(x) -> bool:
    from PIL import Image
    return isinstance(x, Image.Image)


def _one_shape_hint(first_pil: bool, this_pil: bool) -> str:
    """How to give ``from_dataset`` examples of one shape, for examples that are PIL images
    or not (tensors, arrays) as item 0 and the item of another shape are."""
    if first_pil and this_pil:
        return "give image_size=... to resize every PIL image to one square size"
    if first_pil or this_pil:
        return ("they are a PIL image and a tensor or array: give every example as one "
                "kind (image_size= and channels= convert PIL images only)")
    return ("bring the tensors or arrays to one shape first (torch.nn.functional.interpolate "
            "resizes images; image_size= and channels= convert PIL images only)")


def _as_array(x, image_size: int | None, channels: int | None, i: int) -> torch.Tensor:
    """One dataset example as a tensor (PIL images converted as ``load_image`` does).

    Raises:
        ValueError: ``image_size`` or ``channels`` given for an example that is not a PIL
            image (they would be ignored), naming item ``i``.
    """
    if _is_pil(x):
        from metaloop.data.images import image_to_input

        t = image_to_input(x, image_size or max(x.size), "never", channels or 1)  # [C, S, S]
        return t.mul_(255).round_().to(torch.uint8)
    given = [f"{k}={v}" for k, v in (("image_size", image_size), ("channels", channels))
             if v is not None]
    if given:
        shape = list(getattr(x, "shape", ()))
        names = " and ".join(g.split("=")[0] for g in given)
        raise ValueError(f"from_dataset: {' and '.join(given)} appl"
                         f"{'y' if len(given) > 1 else 'ies'} to PIL images only, but item "
                         f"{i}'s example is not one ({type(x).__name__} of shape {shape}) and "
                         f"is read as it is: leave {names} out (tensors of other sizes: "
                         f"resize them first, e.g. with torch.nn.functional.interpolate)")
    if not isinstance(x, torch.Tensor):
        a = np.asarray(x)
        t = torch.as_tensor(a if a.flags.writeable else a.copy())
    else:
        t = x
    if t.dtype == torch.bool or (not t.is_floating_point() and t.dtype != torch.uint8):
        t = t.to(torch.float32)
    return t


def _check_split_ways(use: Sequence[str] | None, split: str | None, total: int, ways: int,
                      fractions: Sequence[float], split_files) -> None:
    """A split with fewer classes than ``ways``, named with how it was made and the fix."""
    if use is None or split is None or len(use) >= ways:
        return
    how = ("its split file" if split_files else
           f"split fractions {[float(f) for f in fractions]} (train, val, test)")
    raise ValueError(f"Episodes ways={ways} exceeds the {len(use)} classes of split {split!r} "
                     f"({len(use)} of the {total} classes, by {how}): lower ways, or give "
                     f"that split more classes (fractions= / split_files=; config "
                     f"family.split_fractions / family.split_files), or bring more classes")


def select_split(class_names: Sequence[str], split: str | None,
                 fractions: Sequence[float] = (0.7, 0.1, 0.2), seed: int = 0,
                 split_files: dict[str, str | os.PathLike] | None = None) -> list[str] | None:
    """The class names of one split: from ``split_files[split]`` if given, else from
    ``split_classes``; None for ``split=None`` (every class).

    Raises:
        ValueError: an unknown split name, a split file naming unknown classes, split
            files that share classes, or a split missing from ``split_files``.
    """
    if split is None:
        return None
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; expected one of {SPLITS} (or None for "
                         f"every class)")
    if split_files:
        if split not in split_files:
            raise ValueError(f"split_files has no {split!r} entry (it has {sorted(split_files)})")
        return read_split_files(split_files, known=class_names)[split]
    return split_classes(class_names, fractions, seed)[SPLITS.index(split)]


_FRACTIONS = (0.7, 0.1, 0.2)


def _check_classes_alone(owner: str, split, fractions, seed, split_files) -> None:
    """``classes=`` replaces the class split: refuse a ``split``, ``fractions``, ``seed`` or
    ``split_files`` other than the default beside it, which it would silently override."""
    try:
        same_fractions = tuple(float(f) for f in fractions) == _FRACTIONS
    except (TypeError, ValueError):
        same_fractions = False
    given = [f"{name}={value!r}" for name, value, same in (
        ("split", split, split is None), ("fractions", fractions, same_fractions),
        ("seed", seed, seed == 0), ("split_files", split_files, split_files is None))
        if not same]
    if given:
        raise ValueError(f"{owner} got classes= and {', '.join(given)}: give a split or "
                         f"classes, not both (classes replaces the split)")
