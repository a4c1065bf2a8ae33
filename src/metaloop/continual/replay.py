"""Replay: the buffer of earlier data, and batches that mix it into fine-tuning.

The buffer holds either all the earlier experiences' training data (``buffer_size=None``) or a
fixed-size uniform sample of them drawn by reservoir sampling (Vitter's Algorithm R), which
sees the earlier data once, as a stream, and keeps every example with the same probability.

A mixed batch of ``B`` examples holds ``replay_count(step, B, ratio)`` earlier examples and
new ones for the rest. That count is ``floor((t + 1) r B) - floor(t r B)`` for batch ``t``:
exactly ``r B`` in every batch when ``r B`` is a whole number, otherwise ``floor(r B)`` or
``ceil(r B)``, with the running total never more than one example away from ``r`` of all.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Iterator, Sequence
from typing import NamedTuple

import torch

from metaloop._random import draw_device


class ReplayBuffer(NamedTuple):
    """Earlier examples kept for replay.

    Attributes:
        x: inputs ``[M, *shape]``.
        y: labels int64 ``[M]``.
        source: int64 ``[M]``: index of the earlier experience each example came from.
        seen: how many stream examples were offered to the buffer (for reservoir updates).
    """

    x: torch.Tensor
    y: torch.Tensor
    source: torch.Tensor
    seen: int


class Batch(NamedTuple):
    """One training batch: ``x [B, *shape]``, ``y [B]``, and ``source [B]`` int64 (-1 for the
    new experience, else the index of the earlier experience in the buffer).

    Attributes:
        x: inputs ``[B, *shape]``.
        y: int64 labels ``[B]``.
        source: int64 ``[B]``: -1 for the new experience, else the earlier experience's index.
    """

    x: torch.Tensor
    y: torch.Tensor
    source: torch.Tensor


def check_replay_ratio(replay_ratio: float) -> float:
    """Return ``replay_ratio`` as a float, or raise ValueError if it is not a number (a
    Python or NumPy real, as the API's other numbers; not a bool, not a tensor) in ``[0, 1)``.
    """
    if torch.is_tensor(replay_ratio):
        raise ValueError(f"replay_ratio must be a number (a Python or NumPy float) in "
                         f"[0, 1), got a tensor {replay_ratio!r}; pass float(replay_ratio)")
    if isinstance(replay_ratio, bool) or not isinstance(replay_ratio, numbers.Real) or \
            not 0.0 <= float(replay_ratio) < 1.0:
        raise ValueError(f"replay_ratio must be in [0, 1) (the fraction of each batch drawn "
                         f"from earlier data), got {replay_ratio!r}")
    return float(replay_ratio)


def replay_count(step: int, batch_size: int, replay_ratio: float) -> int:
    """Number of earlier examples in batch ``step``: ``floor((t+1) r B) - floor(t r B)``.

    Args:
        step: t, the batch's index, an int >= 0.
        batch_size: B, a positive int.
        replay_ratio: r, in ``[0, 1)``.

    Raises:
        ValueError: a ``step`` that is not an int >= 0, a ``batch_size`` that is not a
            positive int, or a ``replay_ratio`` outside ``[0, 1)``.
    """
    if not _is_int(step) or step < 0:
        raise ValueError(f"step must be an int >= 0 (the batch index), got {step!r}")
    _check_batch_size(batch_size)
    replay_ratio = check_replay_ratio(replay_ratio)
    return _count(step, batch_size, replay_ratio)


def _is_int(v) -> bool:
    return isinstance(v, numbers.Integral) and not isinstance(v, bool)


def _check_batch_size(batch_size) -> None:
    if not _is_int(batch_size) or batch_size <= 0:
        raise ValueError(f"batch_size must be a positive int, got {batch_size!r} (an empty "
                         f"batch would repeat forever)")


def _count(step: int, batch_size: int, replay_ratio: float) -> int:
    """``replay_count`` without the checks (the training loop's per-batch call)."""
    per_batch = replay_ratio * batch_size
    return math.floor((step + 1) * per_batch + 1e-9) - math.floor(step * per_batch + 1e-9)


def _check_pair(what: str, x: torch.Tensor, y: torch.Tensor) -> None:
    """One label per input: a buffer of misaligned examples would replay wrong labels."""
    if x.dim() == 0 or y.dim() != 1 or x.shape[0] != y.shape[0]:
        raise ValueError(f"{what} has inputs {list(x.shape)} and labels {list(y.shape)}: they "
                         f"must be [N, *shape] and [N], one label per input")


def _check_labels(what: str, y: torch.Tensor) -> None:
    """int64 class indices: the buffer's labels are replayed to cross-entropy as they are,
    and ``torch.cat`` would silently promote int32 to int64 or the whole buffer to float."""
    if y.dtype != torch.int64:
        raise ValueError(f"{what} has labels of dtype {y.dtype}; replay needs int64 class "
                         f"indices [N] (y.long() for whole-number labels)")


def _check_like_buffer(what: str, buffer: ReplayBuffer, x: torch.Tensor,
                       y: torch.Tensor) -> None:
    """Inputs ``x [N, *shape]`` and labels ``y [N]`` of the buffer's per-example shape and
    dtypes, so that they can join it (torch.cat would fail without naming either, or
    silently promote the whole buffer to another dtype)."""
    if x.shape[1:] != buffer.x.shape[1:] or x.dtype != buffer.x.dtype:
        raise ValueError(f"{what} has inputs {list(x.shape)} of dtype {x.dtype} but the replay "
                         f"buffer holds {list(buffer.x.shape)} of dtype {buffer.x.dtype}: "
                         f"replayed and new examples need one shape [*shape] and one dtype")
    if buffer.y.numel() and y.dtype != buffer.y.dtype:
        raise ValueError(f"{what} has labels of dtype {y.dtype} but the replay buffer's are "
                         f"{buffer.y.dtype}")


def empty_buffer(like: torch.Tensor) -> ReplayBuffer:
    """A buffer with no examples, for inputs shaped like ``like [N, *shape]``."""
    return ReplayBuffer(like.new_empty((0, *like.shape[1:])), torch.empty(0, dtype=torch.int64),
                        torch.empty(0, dtype=torch.int64), 0)


def full_buffer(earlier: Sequence) -> ReplayBuffer:
    """All the training data of the earlier experiences.

    Args:
        earlier: experiences (anything with ``train = (x [N, *shape], y [N])``).

    Raises:
        ValueError: if there are no earlier examples, an experience whose inputs and labels
            differ in length, labels that are not int64 (naming the experience), or
            experiences whose inputs differ in per-example shape or dtype.
    """
    for i, e in enumerate(earlier):
        what = f"earlier experience {i} ({getattr(e, 'name', '?')!r})"
        _check_pair(what, *e.train)
        _check_labels(what, e.train[1])
        x0 = earlier[0].train[0]
        if e.train[0].shape[1:] != x0.shape[1:] or e.train[0].dtype != x0.dtype:
            raise ValueError(f"{what} has training inputs {list(e.train[0].shape)} of dtype "
                             f"{e.train[0].dtype} but earlier experience 0 has "
                             f"{list(x0.shape)} of dtype {x0.dtype}: the buffer needs inputs "
                             f"of one shape [N, *shape] and one dtype")
    if not earlier or sum(e.train[1].numel() for e in earlier) == 0:
        raise ValueError("replay needs earlier data, but no earlier experience (or only empty "
                         "ones) was given")
    x = torch.cat([e.train[0] for e in earlier])
    y = torch.cat([e.train[1] for e in earlier])
    source = torch.cat([torch.full((e.train[1].numel(),), i, dtype=torch.int64)
                        for i, e in enumerate(earlier)])
    return ReplayBuffer(x, y, source, y.numel())


def reservoir_update(buffer: ReplayBuffer, x: torch.Tensor, y: torch.Tensor, source: int,
                     size: int, generator: torch.Generator | None = None) -> ReplayBuffer:
    """Offer a stream of examples to a reservoir of ``size`` (Algorithm R); return the new one.

    The ``n``-th example of the whole stream (0-based, counting ``buffer.seen`` earlier
    ones) fills a free slot while ``n < size``; after that it replaces slot ``j`` when a
    uniform draw ``j`` in ``0..n`` falls below ``size``. Every example seen so far is then in
    the buffer with probability ``size / seen``. Nothing is mutated.

    Args:
        buffer: the current reservoir.
        x: inputs ``[N, *shape]``.
        y: int64 labels ``[N]``.
        source: the experience index to record for these examples.
        size: capacity of the reservoir.
        generator: random source.

    Raises:
        ValueError: a ``size`` that is not a positive int or is smaller than the buffer,
            ``x`` and ``y`` of different lengths, labels that are not int64, or inputs of
            another per-example shape or dtype than the buffer's.
    """
    if not isinstance(size, int) or isinstance(size, bool) or size <= 0:
        raise ValueError(f"buffer_size must be a positive int or None, got {size!r}")
    if buffer.y.numel() > size:
        raise ValueError(f"the reservoir holds {buffer.y.numel()} examples, more than "
                         f"size={size}; a reservoir keeps one size: pass the size it was "
                         f"filled with (a smaller one would keep every example it holds)")
    _check_pair("the stream offered to the reservoir", x, y)
    _check_labels("the stream offered to the reservoir", y)
    _check_like_buffer("the stream offered to the reservoir", buffer, x, y)
    n, seen = y.numel(), buffer.seen
    fill = max(0, min(size - buffer.y.numel(), n))
    keep_x, keep_y = torch.cat([buffer.x, x[:fill]]), torch.cat([buffer.y, y[:fill]])
    keep_s = torch.cat([buffer.source, torch.full((fill,), source, dtype=torch.int64)])
    position = torch.arange(seen + fill, seen + n, dtype=torch.float64)  # stream index n
    u = torch.rand(position.numel(), generator=generator, dtype=torch.float64,
                   device=draw_device(generator)).cpu()                  # [n - fill]
    draw = (u * (position + 1)).floor().long()                            # uniform in 0..n
    slot_of = {}
    for i, j in zip((draw < size).nonzero().squeeze(1).tolist(), draw[draw < size].tolist()):
        slot_of[j] = fill + i                     # later examples overwrite earlier ones
    if slot_of:
        slots, items = torch.tensor(list(slot_of)), torch.tensor(list(slot_of.values()))
        keep_x, keep_y, keep_s = keep_x.clone(), keep_y.clone(), keep_s.clone()
        keep_x[slots], keep_y[slots], keep_s[slots] = x[items], y[items], source
    return ReplayBuffer(keep_x, keep_y, keep_s, seen + n)


def replay_buffer(earlier: Sequence, buffer_size: int | None = None,
                  generator: torch.Generator | None = None) -> ReplayBuffer:
    """The buffer fine-tuning replays from: all earlier data, or a reservoir sample of it.

    Args:
        earlier: the earlier experiences, in the order they were learned.
        buffer_size: None for all their training data, else the reservoir capacity.
        generator: random source of the reservoir draws.

    Raises:
        ValueError: no earlier data, or a bad ``buffer_size``.
    """
    full = full_buffer(earlier)
    if buffer_size is None:
        return full
    buffer = empty_buffer(full.x)
    for i, e in enumerate(earlier):
        buffer = reservoir_update(buffer, e.train[0], e.train[1], i, buffer_size, generator)
    return buffer


class IndexStream:
    """Epoch-wise shuffled indices ``0..n-1``: ``take(m)`` continues into a fresh permutation
    when one runs out, so every example is seen once per epoch."""

    def __init__(self, n: int, generator: torch.Generator | None = None):
        if n <= 0:
            raise ValueError("cannot draw batches from an experience with no training data")
        self.n, self.generator = n, generator
        self._perm, self._pos = torch.empty(0, dtype=torch.int64), 0

    def take(self, m: int) -> torch.Tensor:
        parts = []
        while m > 0:
            if self._pos == self._perm.numel():
                perm = torch.randperm(self.n, generator=self.generator,
                                      device=draw_device(self.generator))
                self._perm, self._pos = perm.cpu(), 0
            part = self._perm[self._pos:self._pos + m]
            self._pos += part.numel()
            m -= part.numel()
            parts.append(part)
        return torch.cat(parts) if parts else torch.empty(0, dtype=torch.int64)


def mixed_batches(new_x: torch.Tensor, new_y: torch.Tensor, buffer: ReplayBuffer | None,
                  batch_size: int, replay_ratio: float,
                  generator: torch.Generator | None = None) -> Iterator[Batch]:
    """Endless training batches: new examples first, then ``replay_count`` earlier ones.

    New examples are taken epoch by epoch in shuffled order. Earlier examples are drawn
    uniformly (with replacement) from the buffer. With ``replay_ratio = 0`` the buffer is not
    touched and no random numbers are drawn for it.

    Args:
        new_x: the new experience's inputs ``[N, *shape]``.
        new_y: its int64 labels ``[N]``.
        buffer: the earlier examples (required when ``replay_ratio > 0``).
        batch_size: B.
        replay_ratio: the fraction of each batch drawn from the buffer, in ``[0, 1)``.
        generator: random source.

    Yields:
        ``Batch`` with ``x [B, *shape]``, ``y [B]``, ``source [B]``.

    Raises:
        ValueError: a replay ratio outside ``[0, 1)``, a batch size that is not a positive
            int, ``new_x`` and ``new_y`` of different lengths, replay without earlier
            data, or new examples of another per-example shape or dtype than the buffer's.
    """
    replay_ratio = check_replay_ratio(replay_ratio)
    _check_batch_size(batch_size)
    _check_pair("the new experience's training data", new_x, new_y)
    if replay_ratio > 0 and (buffer is None or buffer.y.numel() == 0):
        raise ValueError(f"replay_ratio={replay_ratio} but there is no earlier data to replay")
    if replay_ratio > 0:
        assert buffer is not None                               # refused above
        _check_like_buffer("the new experience's training data", buffer, new_x, new_y)
    stream = IndexStream(new_y.numel(), generator)
    step = 0
    while True:
        k = _count(step, batch_size, replay_ratio)
        idx = stream.take(batch_size - k)
        if k == 0:
            yield Batch(new_x[idx], new_y[idx], torch.full((idx.numel(),), -1))
        else:
            assert buffer is not None                   # k > 0: replay_ratio > 0, checked
            old = torch.randint(buffer.y.numel(), (k,), generator=generator,
                                device=draw_device(generator)).to(buffer.y.device)
            yield Batch(torch.cat([new_x[idx], buffer.x[old]]),
                        torch.cat([new_y[idx], buffer.y[old]]),
                        torch.cat([torch.full((idx.numel(),), -1), buffer.source[old]]))
        step += 1
