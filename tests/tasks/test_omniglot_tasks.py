"""Omniglot task family on the real data: layout, determinism, sampling without repeats."""

from __future__ import annotations

import pytest
import torch

import metaloop as ml
from metaloop.tasks.omniglot import Omniglot, episode_indices


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


@pytest.fixture(scope="module")
def train(omniglot_root) -> Omniglot:
    return Omniglot(omniglot_root, split="train", ways=5, shots=1, queries=15)


def test_shapes_dtypes_and_labels(train):
    b = train.sample(4, generator=_gen(0))
    assert isinstance(b, ml.TaskBatch) and b.num_tasks == 4 and b.ways == 5
    assert b.support_x.shape == (4, 5, 1, 28, 28) and b.query_x.shape == (4, 75, 1, 28, 28)
    assert b.support_x.dtype == b.query_x.dtype == torch.float32
    assert float(b.support_x.min()) >= 0 and float(b.support_x.max()) == 1.0
    assert torch.equal(b.support_y, torch.arange(5).expand(4, 5))
    assert torch.equal(b.query_y, torch.arange(5).repeat_interleave(15).expand(4, 75))
    assert b.classes.shape == (4, 5) and b.classes.dtype == torch.int64
    assert int(b.classes.max()) < train.num_classes == 4112
    assert train.kind == "classification" and train.image_shape == (1, 28, 28)
    assert (train.ways, train.shots, train.queries) == (5, 1, 15)


def test_images_are_the_sampled_drawings(train):
    classes, idx = train.sample_indices(3, generator=_gen(5))
    b = train.sample(3, generator=_gen(5))
    assert torch.equal(b.classes, classes)
    flat = train.images.flatten(0, 1)                                  # [C*20, H, W] uint8
    assert torch.equal(b.support_x[:, :, 0], flat[idx[:, :, :1].flatten(1)].float() / 255)
    assert torch.equal(b.query_x[:, :, 0], flat[idx[:, :, 1:].flatten(1)].float() / 255)
    assert torch.equal(idx // 20, classes.unsqueeze(-1).expand_as(idx))


def test_same_seed_same_batch(train):
    a, b = train.sample(8, generator=_gen(3)), train.sample(8, generator=_gen(3))
    c = train.sample(8, generator=_gen(4))
    for f in ("support_x", "support_y", "query_x", "query_y", "classes"):
        assert torch.equal(getattr(a, f), getattr(b, f)), f
    assert not torch.equal(a.classes, c.classes)
    torch.manual_seed(1)
    d = train.sample(2)
    torch.manual_seed(1)
    assert torch.equal(d.query_x, train.sample(2).query_x)


def test_no_repeated_class_or_drawing(train):
    fam = train.with_shots(5, queries=15)                   # all 20 drawings of each class
    classes, idx = fam.sample_indices(200, generator=_gen(1))
    assert idx.shape == (200, 5, 20)
    assert (classes.sort(dim=1).values.diff(dim=1) > 0).all()
    assert torch.equal(idx.sort(dim=-1).values % 20, torch.arange(20).expand_as(idx))
    classes, idx = episode_indices(torch.arange(40).view(4, 10), None, 500, 4, 3, _gen(2))
    assert torch.equal(classes.sort(dim=1).values, torch.arange(4).expand(500, 4))
    assert (idx.sort(dim=-1).values.diff(dim=-1) > 0).all()
    assert torch.equal(idx // 10, classes.unsqueeze(-1).expand_as(idx))
    # every class and every drawing is reachable, roughly uniformly
    counts = torch.bincount(idx.flatten(), minlength=40).float()
    assert counts.min() > 0.7 * counts.mean()


def test_lake_splits_and_20_way(omniglot_root):
    bg = Omniglot(omniglot_root, split="background", ways=20, shots=5, queries=5)
    ev = Omniglot(omniglot_root, split="evaluation", ways=20, shots=1, queries=19)
    assert (bg.num_classes, ev.num_classes) == (964, 659)
    b = ev.sample(2, generator=_gen(0))
    assert b.support_x.shape == (2, 20, 1, 28, 28) and b.query_x.shape == (2, 380, 1, 28, 28)
    assert bg.sample(1).support_y.shape == (1, 100)
    assert bg.class_names[0] == "Alphabet_of_the_Magi/character01"


def test_families_share_the_cached_images(omniglot_root, train):
    again = Omniglot(omniglot_root, split="train", ways=20, shots=5, queries=5)
    assert again.images.data_ptr() == train.images.data_ptr()
    fewer = train.with_shots(5)
    assert fewer.images.data_ptr() == train.images.data_ptr()
    assert (fewer.shots, fewer.queries, train.shots) == (5, 15, 1)
    assert fewer.sample(1).support_x.shape == (1, 25, 1, 28, 28)


@pytest.mark.parametrize("kwargs, match", [
    ({"ways": 965, "split": "background"}, "ways=965 exceeds the 964"),
    ({"shots": 6, "queries": 15}, "shots \\+ queries = 6 \\+ 15"),
    ({"ways": 0}, "ways must be a positive int"),
    ({"shots": -1}, "shots must be a positive int"),
    ({"queries": 1.5}, "queries must be a positive int"),
])
def test_validation(omniglot_root, kwargs, match):
    with pytest.raises(ValueError, match=match):
        Omniglot(omniglot_root, **{"split": "train", **kwargs})


def test_with_shots_and_sample_validation(train):
    with pytest.raises(ValueError, match="shots \\+ queries"):
        train.with_shots(10, 11)
    with pytest.raises(ValueError, match="n must be a positive int"):
        train.sample(0)


def test_sample_flat(train):
    x, y = train.sample_flat(64, generator=_gen(0))
    assert x.shape == (64, 1, 28, 28) and x.dtype == torch.float32
    assert y.shape == (64,) and y.dtype == torch.int64 and int(y.max()) < 4112
    idx = torch.randint(4112 * 20, (64,), generator=_gen(0))
    assert torch.equal(y, idx // 20)
    assert torch.equal(x[:, 0], train.images.flatten(0, 1)[idx].float() / 255)
