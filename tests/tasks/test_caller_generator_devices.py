"""A caller's generator on another device than the CPU: every draw made with it is made on
its device, then moved to the CPU data it indexes or initialises.

A CUDA ``torch.Generator`` cannot draw a CPU tensor (torch raises "Expected a 'cpu' device
type for generator but found 'cuda'"). Without a GPU this is checked with ``OnMeta``, a CPU
generator that says it lives on ``meta``, and a function mode that fails any draw it makes
elsewhere than on ``meta`` and makes the draws requested there on the CPU. So a draw left on
the CPU fails, and a draw moved to the CPU afterwards gives the numbers of a plain CPU
generator with the same seed: with a CPU generator nothing moves and the numbers (every
committed result depends on them) are the draws made in place, as before.
"""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn
from torch.overrides import TorchFunctionMode

import metaloop as ml
from metaloop.adapt.heads import init_head
from metaloop.continual.heads import init_heads
from metaloop.continual.replay import (
    IndexStream,
    ReplayBuffer,
    mixed_batches,
    replay_buffer,
    reservoir_update,
)
from metaloop.continual.scenarios import Experience
from metaloop.continual.sequence import with_lora
from metaloop.tasks.batch import TaskBatch
from metaloop.tasks.device import DeviceTasks


class OnMeta(torch.Generator):
    """A CPU generator that reports the ``meta`` device: a stand-in for a CUDA generator."""

    @property
    def device(self) -> torch.device:
        return torch.device("meta")


class DrawsOnTheGeneratorsDevice(TorchFunctionMode):
    """Fail a draw given an ``OnMeta`` generator unless it is made on ``meta`` (as CUDA fails
    a draw elsewhere than on its generator's device); make the draws made there on the CPU,
    with the generator's own numbers. Counts the draws checked."""

    def __init__(self) -> None:
        super().__init__()
        self.draws = 0

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = dict(kwargs or {})
        g = kwargs.get("generator")
        if not isinstance(g, OnMeta):
            return func(*args, **kwargs)
        in_place = bool(args) and isinstance(args[0], torch.Tensor)     # x.uniform_(...)
        where = args[0].device if in_place else torch.device(kwargs.get("device") or "cpu")
        assert where.type == "meta", (
            f"{getattr(func, '__name__', func)} drew on {where} with a generator on meta")
        self.draws += 1
        if in_place:
            return func(torch.empty(args[0].shape, dtype=args[0].dtype), *args[1:], **kwargs)
        return func(*args, **{**kwargs, "device": "cpu"})


def _on_meta(seed: int) -> OnMeta:
    g = OnMeta()
    g.manual_seed(seed)
    return g


def _cpu(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _fields(b: TaskBatch) -> tuple:
    return b.support_x, b.support_y, b.query_x, b.query_y, b.classes


def _equal(a, b) -> bool:
    """Tensors, or task batches, (nested) tuples and dicts of them, equal and on the CPU."""
    if a is None or b is None:
        return a is b
    if isinstance(a, TaskBatch):
        return _equal(_fields(a), _fields(b))
    if isinstance(a, torch.Tensor):
        return a.device.type == "cpu" and a.dtype == b.dtype and torch.equal(a, b)
    if isinstance(a, int):
        return a == b
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_equal(a[k], b[k]) for k in a)
    return len(a) == len(b) and all(_equal(x, y) for x, y in zip(a, b))


@pytest.fixture(scope="module")
def omniglot():
    return ml.tasks.Omniglot(split="val", ways=5, shots=1, queries=2, image_size=14)


def _stream(n: int = 12) -> list[Experience]:
    def exp(name, marker):
        x, y = torch.full((n, 3), marker) + torch.arange(n)[:, None], torch.arange(n) % 2
        return Experience(name, "h", 2, (0, 1), (x, y), (x[:0], y[:0]), (x, y))
    return [exp("a", 0.0), exp("b", 100.0)]


def _batches(g, steps: int = 5):
    old = replay_buffer(_stream(), None, g)
    x, y = torch.arange(20.0)[:, None].expand(20, 3), torch.arange(20) % 2
    it = mixed_batches(x, y, old, batch_size=6, replay_ratio=0.5, generator=g)
    return [tuple(next(it)) for _ in range(steps)]


SITES = {
    "Sinusoid.sample_with_params": lambda g, fam: ml.tasks.Sinusoid(3, 4).sample_with_params(
        5, g),
    "Sinusoid.sample_params": lambda g, fam: ml.tasks.Sinusoid(3, 4).sample_params(5, g),
    "Omniglot.sample_flat": lambda g, fam: fam.sample_flat(7, g),
    "Omniglot.sample": lambda g, fam: fam.sample(3, g),
    "Omniglot.sample within an alphabet, shared drawers": lambda g, fam: (
        ml.tasks.Omniglot(split="background_val", ways=3, shots=1, queries=1, image_size=14,
                          within_alphabet=0.5, drawers="shared").sample(4, g)),
    "Omniglot.sample all within an alphabet": lambda g, fam: (
        ml.tasks.Omniglot(split="background_val", ways=3, shots=1, queries=1, image_size=14,
                          within_alphabet=1.0).sample(4, g)),
    "Episodes.sample_flat": lambda g, fam: ml.tasks.Episodes(
        torch.arange(40.0)[:, None], torch.arange(40) % 4, ways=2, shots=1,
        queries=1).sample_flat(6, g),
    "init_head random": lambda g, fam: init_head(
        {"w": torch.zeros(2, 6), "b": torch.zeros(2)}, ("w", "b"), 3, "random", g),
    "init_heads": lambda g, fam: init_heads({"a": 2, "b": 3}, 4, g, dtype=torch.float64),
    "with_lora": lambda g, fam: with_lora(_lora_model(), dict(_lora_model().named_parameters()),
                                          rank=2, generator=g)[1],
    "reservoir": lambda g, fam: tuple(replay_buffer(_stream(), 5, g)),
    "IndexStream": lambda g, fam: tuple(IndexStream(7, g).take(n) for n in (3, 9)),
    "mixed_batches": lambda g, fam: _batches(g),
}


def _lora_model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(3, 5), nn.ReLU(), nn.Linear(5, 2))


@pytest.mark.parametrize("site", SITES)
def test_a_generator_on_another_device_draws_there(site, omniglot):
    """Each draw is made on the generator's device; moved to the CPU, its numbers are the
    ones a CPU generator of the same seed gives."""
    with DrawsOnTheGeneratorsDevice() as check:
        out = SITES[site](_on_meta(3), omniglot)
    assert check.draws >= 1
    assert _equal(out, SITES[site](_cpu(3), omniglot))


def test_the_cpu_draws_are_the_draws_made_in_place(omniglot):
    """With a CPU generator the numbers are the draws made on the CPU as they always were."""
    g = _cpu(4)
    a, p = ml.tasks.Sinusoid(3, 4).sample_params(5, _cpu(4))
    assert torch.equal(a, torch.empty(5, dtype=torch.float64).uniform_(0.1, 5.0, generator=g))
    assert torch.equal(p, torch.empty(5, dtype=torch.float64).uniform_(0, math.pi,
                                                                      generator=g))
    b = ml.tasks.Sinusoid(3, 4).sample(5, _cpu(4))
    g = _cpu(4)
    torch.empty(10, dtype=torch.float64).uniform_(generator=g)      # amplitude, phase
    x = torch.empty(5, 7, 1, dtype=torch.float64).uniform_(-5, 5, generator=g)
    assert torch.equal(torch.cat([b.support_x, b.query_x], 1), x.float())
    _, y = omniglot.sample_flat(6, _cpu(5))
    assert torch.equal(y, torch.randint(omniglot._images.shape[0], (6,), generator=_cpu(5))
                       // 20)
    head = init_head({"w": torch.zeros(2, 4), "b": torch.zeros(2)}, ("w", "b"), 3, "random",
                     _cpu(6))
    g = _cpu(6)
    assert torch.equal(head["w"], (torch.rand(3, 4, generator=g) * 2 - 1) * 0.5)
    assert torch.equal(head["b"], (torch.rand(3, generator=g) * 2 - 1) * 0.5)
    heads = init_heads({"h": 3}, 4, _cpu(6))
    assert torch.equal(heads["heads.h.weight"], head["w"])
    assert torch.equal(heads["heads.h.bias"], head["b"])
    start = with_lora(_lora_model(), dict(_lora_model().named_parameters()), 2, _cpu(8))[1]
    g = _cpu(8)
    assert torch.equal(start["0.lora_A.default.weight"],
                       (torch.rand(2, 3, generator=g) * 2 - 1) * (1 / math.sqrt(3)))
    assert torch.equal(IndexStream(7, _cpu(9)).take(7), torch.randperm(7, generator=_cpu(9)))


def test_the_reservoir_and_replay_draws_are_the_draws_made_in_place():
    x, y = torch.arange(10.0)[:, None].expand(10, 3), torch.arange(10) % 2
    empty = ReplayBuffer(x[:0], y[:0], y[:0], 0)
    buf = reservoir_update(empty, x, y, 0, 4, _cpu(2))
    g = _cpu(2)
    u = torch.rand(6, generator=g, dtype=torch.float64)
    draw = (u * (torch.arange(4, 10, dtype=torch.float64) + 1)).floor().long()
    keep = list(range(4))
    for i, j in enumerate(draw.tolist()):
        if j < 4:
            keep[j] = 4 + i
    assert buf.x[:, 0].long().tolist() == keep and buf.seen == 10
    old = replay_buffer(_stream(), None)
    it = mixed_batches(x, y, old, batch_size=4, replay_ratio=0.5, generator=_cpu(3))
    g = _cpu(3)
    new, replayed = torch.randperm(10, generator=g)[:2], torch.randint(24, (2,), generator=g)
    b = next(it)
    assert torch.equal(b.x, torch.cat([x[new], old.x[replayed]]))


def test_device_tasks_with_a_cpu_generator_are_the_host_tasks(omniglot):
    """The device sampler draws on its own device with a generator there: on the CPU its
    tasks stay the host family's, draw for draw."""
    dev = DeviceTasks(omniglot, "cpu")
    a, b = dev.sample(4, _cpu(1)), omniglot.sample(4, _cpu(1))
    assert _equal(a, b)


def test_fashion_mnist_flat_draws_on_the_generators_device(fashion_mnist_root):
    fam = ml.tasks.FashionMNIST(fashion_mnist_root, classes=range(3), ways=2, shots=1,
                                queries=1)
    with DrawsOnTheGeneratorsDevice() as check:
        out = fam.sample_flat(5, _on_meta(2))
    assert check.draws == 1 and _equal(out, fam.sample_flat(5, _cpu(2)))
    pick = torch.randint(fam._all.shape[0], (5,), generator=_cpu(2))
    assert torch.equal(out[1], fam._all_y[pick])
