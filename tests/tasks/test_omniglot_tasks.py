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
    # rotations with a split that is not a string failed: AttributeError on .startswith
    ({"split": None, "rotations": True}, "unknown Omniglot split None"),
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


# ----------------------------------------------------------------------------- the challenge


@pytest.fixture(scope="module")
def evaluation(omniglot_root) -> Omniglot:
    return Omniglot(omniglot_root, split="evaluation", ways=20, shots=1, queries=1,
                    within_alphabet=True)


def _alphabet(fam, classes):
    """Alphabet names of class ids ``[n, ways]``, from the class names."""
    return [[fam.class_names[c].split("/")[0] for c in row] for row in classes.tolist()]


def test_within_alphabet_tasks_share_an_alphabet(evaluation):
    b = evaluation.sample(300, generator=_gen(0))
    assert b.support_x.shape == (300, 20, 1, 28, 28) and b.query_x.shape == (300, 20, 1, 28, 28)
    alphabets = _alphabet(evaluation, b.classes)
    assert all(len(set(row)) == 1 for row in alphabets)
    assert (b.classes.sort(dim=1).values.diff(dim=1) > 0).all()     # 20 distinct characters
    # the alphabet is uniform over the 20 evaluation alphabets (all have >= 20 characters)
    counts = torch.bincount(evaluation.class_alphabet[b.classes[:, 0]], minlength=20)
    assert len(evaluation.alphabets) == 20 and counts.min() > 0 and counts.max() < 35
    # the images are the drawings of the named classes
    classes, idx = evaluation.sample_indices(300, generator=_gen(0))
    assert torch.equal(classes, b.classes)
    assert torch.equal(idx // 20, classes.unsqueeze(-1).expand_as(idx))


def test_within_alphabet_is_seeded_and_skips_small_alphabets(omniglot_root):
    bg = Omniglot(omniglot_root, split="background", ways=20, shots=1, queries=1,
                  within_alphabet=1.0)
    a, b = bg.sample_indices(500, _gen(7)), bg.sample_indices(500, _gen(7))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert not torch.equal(a[0], bg.sample_indices(500, _gen(8))[0])
    used = {row[0] for row in _alphabet(bg, a[0])}
    # Blackfoot (14), Inuktitut (16), Ojibwe (14) and Tagalog (17) have < 20 characters
    small = {"Blackfoot_(Canadian_Aboriginal_Syllabics)", "Ojibwe_(Canadian_Aboriginal_Syllabics)",
             "Inuktitut_(Canadian_Aboriginal_Syllabics)", "Tagalog"}
    assert not used & small and len(used) == 26
    # 5-way tasks use every alphabet
    five = Omniglot(omniglot_root, split="background", ways=5, within_alphabet=True)
    assert {row[0] for row in _alphabet(five, five.sample_indices(2000, _gen(1))[0])} \
        == set(five.alphabets)


@pytest.mark.parametrize("rate", [0.0, 0.3, 0.8])
def test_within_alphabet_rate_mixes_as_asked(omniglot_root, rate):
    fam = Omniglot(omniglot_root, split="background", ways=5, shots=1, queries=1,
                   within_alphabet=rate)
    classes, idx = fam.sample_indices(4000, _gen(3))
    a = fam.class_alphabet[classes]                                          # [n, 5]
    same = (a == a[:, :1]).all(dim=1).float().mean()
    # random 5-way tasks from 30 alphabets share one alphabet with probability ~1e-5
    assert abs(float(same) - rate) < 0.03, float(same)
    if rate == 0.0:   # rate 0 (and drawers="any") is the plain random stream, unchanged
        plain = Omniglot(omniglot_root, split="background", ways=5, shots=1, queries=1)
        for fam0 in (fam, Omniglot(omniglot_root, split="background", ways=5, shots=1,
                                   queries=1, within_alphabet=False, drawers="any")):
            got = fam0.sample(50, _gen(3))
            want = plain.sample(50, _gen(3))
            assert torch.equal(got.classes, want.classes)
            assert torch.equal(got.support_x, want.support_x)
            assert torch.equal(got.query_x, want.query_x)
        assert torch.equal(idx, plain.sample_indices(4000, _gen(3))[1])


def test_rotations_give_four_times_the_classes(omniglot_root):
    plain = Omniglot(omniglot_root, split="evaluation", ways=5)
    rot = Omniglot(omniglot_root, split="evaluation", ways=5, rotations=True,
                   within_alphabet=True)
    c = plain.num_classes
    assert rot.num_classes == 4 * c == 2636 and len(rot.class_names) == 4 * c
    assert rot.class_names[c + 3] == plain.class_names[3] + "/rot090"
    # class r * C + k is class k turned 90 r degrees counter-clockwise (PIL's rotate)
    for r in range(4):
        assert torch.equal(rot.images[r * c + 3], torch.rot90(plain.images[3], r, dims=(-2, -1)))
    classes, _ = rot.sample_indices(200, _gen(0))
    a = rot.class_alphabet[classes]
    assert (a == a[:, :1]).all()               # rotations belong to their character's alphabet
    assert int(classes.max()) >= c             # rotated classes are drawn
    x, y = rot.sample_flat(16, _gen(2))
    assert int(y.max()) < 4 * c


def test_reflections_add_each_class_mirrored(omniglot_root):
    plain = Omniglot(omniglot_root, split="evaluation", ways=5)
    both = Omniglot(omniglot_root, split="evaluation", ways=5, rotations=True, reflections=True,
                    within_alphabet=True)
    c = plain.num_classes
    assert both.num_classes == 8 * c and len(both.class_names) == 8 * c
    assert "reflections=True" in repr(both) and both.reflections
    # class 4C + r * C + k is class k turned 90 r degrees, then flipped left to right
    for r in range(4):
        want = torch.rot90(plain.images[3], r, dims=(-2, -1)).flip(-1)
        assert torch.equal(both.images[4 * c + r * c + 3], want)
    assert both.class_names[4 * c + 3] == plain.class_names[3] + "/rot000/mirror"
    mirrored = Omniglot(omniglot_root, split="background_val", ways=5, reflections=True)
    assert mirrored.num_classes == 2 * 189 and mirrored.class_names[189].endswith("/mirror")
    classes, _ = both.sample_indices(200, _gen(0))
    a = both.class_alphabet[classes]
    assert (a == a[:, :1]).all()               # mirror images belong to their alphabet
    assert int(classes.max()) >= 4 * c         # mirrored classes are drawn
    vinyals = Omniglot(omniglot_root, split="val", ways=5, reflections=True)
    assert vinyals.num_classes == 2 * 688


def test_held_out_background_alphabets(omniglot_root):
    tr = Omniglot(omniglot_root, split="background_train", ways=20, within_alphabet=1.0)
    va = Omniglot(omniglot_root, split="background_val", ways=20, within_alphabet=1.0)
    bg = Omniglot(omniglot_root, split="background", ways=5)
    assert (tr.num_classes, va.num_classes) == (775, 189)
    assert len(tr.alphabets) == 25 and len(va.alphabets) == 5
    assert not set(tr.alphabets) & set(va.alphabets)
    assert sorted(tr.class_names + va.class_names) == sorted(bg.class_names)
    i = bg.class_names.index(va.class_names[0])
    assert torch.equal(va.images[0], bg.images[i])
    ev = Omniglot(omniglot_root, split="evaluation", ways=5)
    assert not set(ev.alphabets) & set(bg.alphabets)


@pytest.mark.parametrize("kwargs, match", [
    ({"within_alphabet": 1.5}, "within_alphabet must be a bool or a rate in \\[0, 1\\]"),
    ({"within_alphabet": -0.1}, "within_alphabet must be a bool or a rate"),
    ({"within_alphabet": "yes"}, "within_alphabet must be a bool or a rate"),
    ({"within_alphabet": 0.5, "ways": 56},
     "within_alphabet=0.5: no alphabet of split 'background' has ways=56 characters \\(the "
     "largest has 55\\)"),
    ({"rotations": True, "split": "train"}, "rotations=True applies to the Lake splits"),
    ({"rotations": 1}, "rotations must be a bool"),
    ({"reflections": "yes"}, "reflections must be a bool, got 'yes'"),
    ({"drawers": "same"}, "drawers must be one of \\['any', 'shared'\\], got 'same'"),
])
def test_challenge_validation(omniglot_root, kwargs, match):
    with pytest.raises(ValueError, match=match):
        Omniglot(omniglot_root, **{"split": "background", **kwargs})


@pytest.mark.parametrize("within", [1.0, 0.5, 0.0])
def test_shared_drawers_draw_every_class_by_the_same_people(omniglot_root, within):
    """drawers="shared": image j of every class of a task is by the task's drawer j (the
    official runs' construction); the classes are drawn as with any drawers."""
    fam = Omniglot(omniglot_root, split="evaluation", ways=20, shots=2, queries=3,
                   within_alphabet=within, drawers="shared")
    classes, idx = fam.sample_indices(400, _gen(4))
    assert torch.equal(idx // 20, classes.unsqueeze(-1).expand_as(idx))       # their drawings
    drawer = idx % 20                                                         # [n, ways, 5]
    assert (drawer == drawer[:, :1]).all()                    # the same 5 drawers per class
    assert (drawer[:, 0].sort(dim=1).values.diff(dim=1) > 0).all()           # 5 distinct ones
    assert len(torch.unique(drawer)) == 20                    # every drawer is drawn somewhere
    a = fam.class_alphabet[classes]
    same = float((a == a[:, :1]).all(dim=1).float().mean())
    assert abs(same - within) < 0.1 and (classes.sort(dim=1).values.diff(dim=1) > 0).all()
    b = fam.sample(400, _gen(4))                              # the images are those drawings
    want = fam.images[classes.unsqueeze(-1), drawer].float().div(255)         # [n, 20, 5, H, W]
    assert torch.equal(b.support_x[:, :, 0], want[:, :, :2].reshape(400, 40, 28, 28))
    assert torch.equal(b.query_x[:, :, 0], want[:, :, 2:].reshape(400, 60, 28, 28))
    again = fam.sample_indices(400, _gen(4))
    assert torch.equal(again[0], classes) and torch.equal(again[1], idx)
    assert "drawers='shared'" in repr(fam) and fam.with_shots(1, 1).drawers == "shared"
    any_ = Omniglot(omniglot_root, split="evaluation", ways=20, shots=2, queries=3,
                    within_alphabet=within)
    any_classes, any_idx = any_.sample_indices(400, _gen(4))
    assert not (any_idx % 20 == drawer[:, :1]).all()
    # the same classes task by task (records on the two streams pair on them)
    assert torch.equal(any_classes, classes)


def test_within_classes_errors_and_padding():
    from metaloop.tasks.omniglot import within_classes
    groups = torch.tensor([[0, 1, 2, 2], [3, 4, 5, 6]])       # group 0 padded past 3 classes
    sizes = torch.tensor([3, 4])
    out = within_classes(groups, sizes, 2000, 3, _gen(0))
    g0 = out.max(dim=1).values <= 2
    assert (out[g0] <= 2).all() and (out[~g0] >= 3).all()    # one group per task
    assert (out.sort(dim=1).values.diff(dim=1) > 0).all()    # padding (a repeated 2) never drawn
    assert 0.4 < float(g0.float().mean()) < 0.6              # groups equally likely
    assert (within_classes(groups, sizes, 100, 4, _gen(0)) >= 3).all()   # only group 1 fits
    with pytest.raises(ValueError, match="ways=5 characters, but the largest has 4"):
        within_classes(groups, sizes, 10, 5, _gen(0))
