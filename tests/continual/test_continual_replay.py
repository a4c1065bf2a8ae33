"""Replay buffers and mixed batches: the ratio per batch, reservoir sampling, errors."""

from __future__ import annotations

import math

import pytest
import torch

from metaloop.continual.replay import (
    IndexStream,
    ReplayBuffer,
    check_replay_ratio,
    empty_buffer,
    full_buffer,
    mixed_batches,
    replay_buffer,
    replay_count,
    reservoir_update,
)
from metaloop.continual.scenarios import Experience


def _exp(name: str, n: int, marker: float, head: str = "h") -> Experience:
    x = torch.full((n, 3), marker)
    y = torch.arange(n) % 2
    empty = (x[:0], y[:0])
    return Experience(name, head, 2, (0, 1), (x, y), empty, (x, y))


@pytest.mark.parametrize("batch_size,ratio", [(50, 0.1), (128, 0.1), (10, 0.15), (7, 0.5),
                                              (32, 0.0), (64, 0.99)])
def test_replay_count_per_batch_and_in_total(batch_size, ratio):
    counts = [replay_count(t, batch_size, ratio) for t in range(200)]
    lo, hi = math.floor(ratio * batch_size + 1e-9), math.ceil(ratio * batch_size - 1e-9)
    assert all(lo <= c <= hi for c in counts)
    for t in range(1, 201):                       # the running total tracks r * B * t
        assert abs(sum(counts[:t]) - ratio * batch_size * t) < 1.0 + 1e-6
    if float(ratio * batch_size).is_integer():
        assert set(counts) == {int(ratio * batch_size)}


def test_mixed_batches_honour_the_ratio_batch_by_batch():
    new, old = _exp("new", 37, -1.0), _exp("old", 20, 1.0)
    buffer = full_buffer([old])
    g = torch.Generator().manual_seed(0)
    batches = mixed_batches(*new.train, buffer, 20, 0.15, g)
    for t in range(40):
        b = next(batches)
        k = replay_count(t, 20, 0.15)
        assert b.x.shape == (20, 3) and b.y.shape == (20,) and b.source.shape == (20,)
        assert int((b.x[:, 0] == 1.0).sum()) == k == int((b.source == 0).sum())
        assert torch.equal(b.source[:20 - k], torch.full((20 - k,), -1))


def test_new_examples_are_seen_once_per_epoch():
    stream = IndexStream(10, torch.Generator().manual_seed(0))
    first = torch.cat([stream.take(3) for _ in range(10)])     # 3 epochs
    for e in range(3):
        assert sorted(first[10 * e:10 * e + 10].tolist()) == list(range(10))


def test_zero_ratio_draws_nothing_for_the_buffer():
    new, old = _exp("new", 16, -1.0), _exp("old", 8, 1.0)
    g1, g2 = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    with_buffer = mixed_batches(*new.train, full_buffer([old]), 8, 0.0, g1)
    without = mixed_batches(*new.train, None, 8, 0.0, g2)
    for _ in range(5):
        a, b = next(with_buffer), next(without)
        assert torch.equal(a.x, b.x) and torch.equal(a.source, torch.full((8,), -1))


def test_full_buffer_holds_every_earlier_example_with_its_source():
    a, b = _exp("a", 5, 1.0), _exp("b", 3, 2.0)
    buf = full_buffer([a, b])
    assert buf.x.shape == (8, 3) and buf.seen == 8
    assert buf.source.tolist() == [0] * 5 + [1] * 3
    assert torch.equal(buf.x[5:], b.train[0])


def test_reservoir_fills_then_caps_and_records_sources():
    a, b = _exp("a", 4, 1.0), _exp("b", 30, 2.0)
    g = torch.Generator().manual_seed(0)
    buf = replay_buffer([a, b], buffer_size=6, generator=g)
    assert buf.x.shape == (6, 3) and buf.seen == 34
    assert torch.equal(buf.x[buf.source == 0], torch.ones(int((buf.source == 0).sum()), 3))
    assert torch.equal(buf.x[buf.source == 1], torch.full((int((buf.source == 1).sum()), 3),
                                                          2.0))
    small = replay_buffer([a], buffer_size=10, generator=g)
    assert small.x.shape == (4, 3)                   # not full yet: everything kept


def test_reservoir_sample_is_uniform():
    x, y = torch.arange(10.0)[:, None], torch.zeros(10, dtype=torch.int64)
    g = torch.Generator().manual_seed(0)
    hits = torch.zeros(10)
    trials = 800
    for _ in range(trials):
        buf = empty_buffer(x)
        buf = reservoir_update(buf, x[:4], y[:4], 0, 3, g)    # offered in two pieces
        buf = reservoir_update(buf, x[4:], y[4:], 0, 3, g)
        assert buf.x.shape == (3, 1) and len(set(buf.x[:, 0].tolist())) == 3
        hits[buf.x[:, 0].long()] += 1
    p = hits / trials                                          # each 3 / 10
    assert torch.allclose(p, torch.full((10,), 0.3), atol=0.06), p


@pytest.mark.parametrize("ratio", [-0.1, 1.0, 1.5, float("nan"), True, "0.1"])
def test_replay_ratio_outside_0_1_is_an_error(ratio):
    with pytest.raises(ValueError, match=r"replay_ratio must be in \[0, 1\)"):
        check_replay_ratio(ratio)


def test_replay_with_no_earlier_data_is_an_error():
    new = _exp("new", 8, -1.0)
    with pytest.raises(ValueError, match="no earlier"):
        full_buffer([])
    with pytest.raises(ValueError, match="no earlier data to replay"):
        next(mixed_batches(*new.train, None, 8, 0.1))
    with pytest.raises(ValueError, match="buffer_size must be a positive int"):
        replay_buffer([_exp("a", 4, 1.0)], buffer_size=0)


@pytest.mark.parametrize("args, match", [
    ((0, 10, 2.0), "replay_ratio must be in"),
    ((0, 10, -0.1), "replay_ratio must be in"),
    ((-1, 10, 0.1), "step must be an int >= 0"),
    ((1.5, 10, 0.1), "step must be an int >= 0"),
    ((0, 0, 0.1), "batch_size must be a positive int"),
])
def test_replay_count_refuses_bad_arguments(args, match):
    with pytest.raises(ValueError, match=match):
        replay_count(*args)


def test_mixed_batches_refuses_misaligned_new_data():
    batches = mixed_batches(torch.zeros(3, 4), torch.zeros(72, dtype=torch.long), None, 20, 0.0)
    with pytest.raises(ValueError, match=r"inputs \[3, 4\] and labels \[72\]"):
        next(batches)


def test_full_buffer_names_an_experience_with_other_inputs():
    a, b = _exp("a", 4, 0.0), _exp("b", 4, 1.0)
    b = b._replace(train=(b.train[0][:, :2], b.train[1]))
    with pytest.raises(ValueError, match=r"earlier experience 1 \('b'\) has training inputs "
                                         r"\[4, 2\]"):
        full_buffer([a, b])
    c = _exp("c", 4, 1.0)
    c = c._replace(train=(c.train[0].double(), c.train[1]))
    with pytest.raises(ValueError, match="'c'.*float64"):
        replay_buffer([a, c], buffer_size=3)


@pytest.mark.parametrize("change", ["shape", "dtype", "labels"])
def test_examples_unlike_the_buffer_are_named_not_concatenated(change):
    buffer = ReplayBuffer(torch.randn(5, 4), torch.arange(5) % 2,
                          torch.zeros(5, dtype=torch.int64), 5)
    x, y = torch.randn(8, 4), torch.arange(8) % 2
    if change == "shape":
        x = torch.randn(8, 3)
    elif change == "dtype":
        x = x.double()                # torch.cat would promote the whole buffer silently
    else:
        y = y.float()
    match = "labels of dtype" if change == "labels" else "but the replay buffer"
    with pytest.raises(ValueError, match=f"the stream offered to the reservoir .*{match}"):
        reservoir_update(buffer, x, y, source=1, size=10)
    with pytest.raises(ValueError, match=f"the new experience's training data .*{match}"):
        next(mixed_batches(x, y, buffer, batch_size=4, replay_ratio=0.5))


def test_a_reservoir_offered_a_size_below_what_it_holds_is_refused():
    """size=2 on a 5-example reservoir kept all 5 (no slot was ever free, and every draw
    fell outside 0..1 or replaced one of the first two)."""
    buffer = ReplayBuffer(torch.randn(5, 4), torch.arange(5) % 2,
                          torch.zeros(5, dtype=torch.int64), 5)
    with pytest.raises(ValueError, match=r"holds 5 examples, more than size=2"):
        reservoir_update(buffer, torch.randn(3, 4), torch.arange(3) % 2, source=1, size=2)
    same = reservoir_update(buffer, torch.randn(3, 4), torch.arange(3) % 2, source=1, size=5)
    assert same.y.numel() == 5 and same.seen == 8
