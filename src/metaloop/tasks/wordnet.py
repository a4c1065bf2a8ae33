"""Few-shot text classification over WordNet noun categories (N-way K-shot).

A class is a WordNet hypernym category and an example is the gloss of one of its hyponyms,
with the hyponym's own lemmas hidden (see ``metaloop.data.wordnet``). Meta-train, validation
and test categories are disjoint.

Text inputs in a TaskBatch: TaskBatch inputs are floating point, so examples travel as
numbers. With a ``tokenizer`` (such as ``TextEncoder.tokenize``) they are padded token ids
stored as float32, ``[n, S, L]`` (exact for ids below 2**24); without one they are the
example's index into ``family.texts``, ``[n, S, 1]``.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence

import torch

from metaloop.data.wordnet import load_wordnet
from metaloop.tasks.batch import TaskBatch
from metaloop.tasks.omniglot import (
    check_generator,
    check_positive_int,
    episode_indices,
    split_episodes,
)
from metaloop.tasks.text_table import check_ways, class_ids, text_inputs, texts_of

Tokenizer = Callable[[Sequence[str]], torch.Tensor]


class WordNet:
    """N-way K-shot tasks over the WordNet noun categories of one split.

    Args:
        root: folder with WordNet's ``data.noun``, or None (see ``load_wordnet``).
        split: ``"train"``, ``"val"``, ``"test"`` or ``"trainval"`` (disjoint categories).
        ways: classes per task.
        shots: support examples per class.
        queries: query examples per class.
        tokenizer: optional ``texts -> [N, L]`` token ids (e.g. ``TextEncoder.tokenize``);
            applied once to every example of the split.
        min_hyponyms: fewest examples a category needs (20 by default).

    Attributes:
        kind: ``"classification"``.
        categories: the split's categories (``metaloop.data.wordnet.Category``), indexed by
            the ids in ``TaskBatch.classes``.
        class_names: their names.
        num_classes: their number.
        texts: every example text of the split; ``labels`` int64 ``[N]`` their class ids.

    Raises:
        ValueError: an unknown split, non-positive counts, ``ways`` below 2 or greater than
            the split's categories, or ``shots + queries`` greater than the smallest category.
    """

    kind = "classification"

    def __init__(self, root=None, split: str = "train", ways: int = 5, shots: int = 1,
                 queries: int = 15, tokenizer: Tokenizer | None = None, min_hyponyms: int = 20):
        ways, shots, queries = check_positive_int("WordNet", ways=ways, shots=shots,
                                                  queries=queries)
        check_ways("WordNet", ways)
        nouns = load_wordnet(root, min_hyponyms)
        self.split, self.categories = split, nouns.split(split)
        self.class_names = [c.name for c in self.categories]
        self.num_classes = len(self.categories)
        members = [c.members for c in self.categories]
        self.texts = [nouns.texts[m] for ms in members for m in ms]
        counts = torch.tensor([len(ms) for ms in members])                # [K]
        self.labels = torch.repeat_interleave(torch.arange(self.num_classes), counts)  # [N]
        starts = torch.cumsum(counts, 0) - counts                           # [K]
        m = int(counts.max())
        pos = torch.arange(m)                                               # [M]
        self._table = (starts[:, None] + pos).masked_fill(pos >= counts[:, None], 0)  # [K, M]
        self._counts = counts
        self._pad = None if bool((counts == m).all()) else counts
        self.tokenizer = tokenizer
        self._inputs = text_inputs(tokenizer, self.texts, "WordNet")       # [N, L or 1]
        self.ways, self.shots, self.queries = ways, shots, queries
        self._validate()

    def _validate(self) -> None:
        self.ways, self.shots, self.queries = check_positive_int(
            "WordNet", ways=self.ways, shots=self.shots, queries=self.queries)
        check_ways("WordNet", self.ways)
        if self.ways > self.num_classes:
            raise ValueError(f"WordNet ways={self.ways} exceeds the {self.num_classes} "
                             f"categories of split {self.split!r}")
        fewest = int(self._counts.min())
        if self.shots + self.queries > fewest:
            raise ValueError(f"WordNet shots + queries = {self.shots} + {self.queries} exceeds "
                             f"the {fewest} examples of the smallest category")

    def sample_indices(self, n: int, generator: torch.Generator | None = None
                       ) -> tuple[torch.Tensor, torch.Tensor]:
        """Class ids int64 ``[n, ways]`` and example ids ``[n, ways, shots+queries]``
        (positions in ``texts``)."""
        check_positive_int("WordNet.sample", n=n)
        check_generator("WordNet.sample", generator)
        return episode_indices(self._table, self._pad, n, self.ways, self.shots + self.queries,
                               generator)

    def sample(self, n: int, generator: torch.Generator | None = None) -> TaskBatch:
        """Sample n tasks.

        Returns:
            TaskBatch: support_x float32 ``[n, ways*shots, L]`` (token ids, or ``L = 1``
            example ids without a tokenizer), support_y int64 ``[n, ways*shots]`` with labels
            ``arange(ways).repeat_interleave(shots)``, query likewise with ``queries``, and
            classes int64 ``[n, ways]`` (ids into ``categories``).
        """
        classes, idx = self.sample_indices(n, generator)
        return split_episodes(self._inputs[idx], classes, self.shots)  # [n, ways, S+Q, L]

    @property
    def input_shape(self) -> tuple[int, ...]:
        """``(L,)`` token ids, or ``(1,)`` example ids without a tokenizer."""
        return tuple(self._inputs.shape[1:])

    def wordings(self, classes: torch.Tensor | Sequence[int]) -> list[dict[str, str]]:
        """Candidate label wordings (``name``, ``synonyms``, ``gloss``) of each class id.

        Raises:
            ValueError: a class id that is not an int in ``[0, num_classes)``.
        """
        return [self.categories[c].wordings()
                for c in class_ids("WordNet.wordings", classes, self.num_classes)]

    def text_of(self, x: torch.Tensor) -> list[str]:
        """The texts of one task's example-id inputs ``[N, 1]`` (families without a
        tokenizer), e.g. ``fam.text_of(batch.support_x[0])``; see ``texts_of``."""
        return texts_of(self.texts, self.tokenizer, x, "example")

    def with_shots(self, shots: int, queries: int | None = None) -> WordNet:
        """The same split and ways with other shot (and query) counts, sharing the data."""
        new = copy.copy(self)
        new.shots, new.queries = shots, self.queries if queries is None else queries
        new._validate()
        return new

    def __repr__(self) -> str:
        return (f"WordNet(split={self.split!r}, ways={self.ways}, shots={self.shots}, "
                f"queries={self.queries}, num_classes={self.num_classes})")
