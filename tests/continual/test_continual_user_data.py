"""Continual-learning streams from your own data (``split_classes_of``, ``user_experiences``):
the classes are partitioned as asked, test / validation / training images are disjoint and
chosen by the seed, the labels follow ``fashion_mnist_experiences``' conventions, and bad
data is a named error."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from metaloop.continual import scenarios
from metaloop.continual.finetune import evaluate_experiences
from metaloop.continual.heads import init_params
from metaloop.continual.scenarios import (
    SCENARIOS,
    fashion_mnist_experiences,
    load_labelled,
    split_classes_of,
    user_experiences,
)
from metaloop.continual.sequence import run_sequence
from metaloop.models import MLP

NAMES = ["ant", "bee", "cat", "dog", "eel", "fox"]
SIZES = [12, 12, 12, 12, 15, 20]                 # unequal classes


def indexed_data(sizes=SIZES, d: int = 4) -> tuple[torch.Tensor, torch.Tensor]:
    """Feature vectors ``[N, d]`` whose first entry is the example's index, so every split
    says which examples it took; labels interleaved (not sorted by class)."""
    y = torch.cat([torch.full((n,), c) for c, n in enumerate(sizes)])
    y = y[torch.randperm(len(y), generator=torch.Generator().manual_seed(5))]
    x = torch.zeros(len(y), d)
    x[:, 0] = torch.arange(len(y), dtype=torch.float32)
    x[:, 1] = y.float()
    return x, y


def taken(split) -> list[int]:
    return split[0][:, 0].long().tolist()


def write_folder(root, sizes=SIZES, side: int = 16):
    """``root/<name>/<i>.png``: class c a bright band in rows 2c..2c+1, image i one more
    pixel at its own place, so every image differs from every other."""
    from PIL import Image

    for c, n in enumerate(sizes):
        d = root / NAMES[c]
        d.mkdir(parents=True)
        for i in range(n):
            a = np.zeros((side, side), np.uint8)
            a[2 * c:2 * c + 2] = 255
            a[side - 2 + i // side, i % side] = 200
            Image.fromarray(a).save(d / f"{i:02d}.png")
    return root


def test_task_setting_partitions_the_classes_and_relabels_them():
    x, y = indexed_data()
    exps = split_classes_of(x, y, NAMES, classes_per_experience=2, setting="task")
    assert [e.name for e in exps] == ["ant, bee", "cat, dog", "eel, fox"]
    assert [e.head for e in exps] == ["task0", "task1", "task2"]
    assert all(e.num_outputs == 2 and e.classes == (0, 1) for e in exps)
    for i, e in enumerate(exps):
        for split in (e.train, e.val, e.test):
            original = y[split[0][:, 0].long()]
            assert original.tolist() == (2 * i + split[1]).tolist()   # head output = position
            assert split[1].dtype == torch.int64 and split[0].dtype == torch.float32
    # three per experience with a last, smaller one
    three = split_classes_of(x, y, NAMES, classes_per_experience=4, setting="class")
    assert [e.classes for e in three] == [(0, 1, 2, 3), (4, 5)]


def test_class_setting_shares_one_head_over_all_classes():
    x, y = indexed_data()
    exps = split_classes_of(x, y, NAMES, classes_per_experience=3, setting="class")
    assert [(e.head, e.num_outputs, e.classes) for e in exps] == [
        ("all", 6, (0, 1, 2)), ("all", 6, (3, 4, 5))]
    for e in exps:
        for split in (e.train, e.val, e.test):
            assert split[1].tolist() == y[split[0][:, 0].long()].tolist()  # original labels
            assert set(split[1].tolist()) == set(e.classes)


def test_the_label_conventions_match_fashion_mnist_experiences(monkeypatch):
    """The same data through ``fashion_mnist_experiences`` and ``split_classes_of``: the same
    heads, outputs, classes and label sets in both settings."""
    g = torch.Generator().manual_seed(0)
    y = torch.arange(10).repeat(8)                                           # [80]
    x = torch.randint(0, 256, (80, 28, 28), generator=g, dtype=torch.uint8)
    monkeypatch.setattr(scenarios, "load_fashion_mnist", lambda root, split: (x, y))
    groups = [(0, 1), (2, 3), (4, 5), (6, 7), (8, 9)]
    for setting in ("task", "class"):
        ours = split_classes_of(x, y, classes_per_experience=2, setting=setting,
                                val_per_class=1, test_per_class=2)
        theirs = fashion_mnist_experiences(groups, setting=setting, val_per_class=1,
                                           test_per_class=2)
        assert [(e.head, e.num_outputs, e.classes) for e in ours] == \
            [(e.head, e.num_outputs, e.classes) for e in theirs]
        for a, b in zip(ours, theirs):
            for part in ("train", "val", "test"):
                sa, sb = getattr(a, part), getattr(b, part)
                assert sorted(set(sa[1].tolist())) == sorted(set(sb[1].tolist()))
                assert sa[0].shape[1:] == sb[0].shape[1:] == (784,)
                assert 0 <= float(sa[0].min()) and float(sa[0].max()) <= 1
    assert ours[0].val[0].shape == (2, 784) and ours[0].test[0].shape == (4, 784)


def test_train_val_and_test_are_disjoint_and_cover_each_class():
    x, y = indexed_data()
    exps = split_classes_of(x, y, NAMES, classes_per_experience=2)
    seen = []
    for e in exps:
        parts = [set(taken(s)) for s in (e.train, e.val, e.test)]
        assert not (parts[0] & parts[1] or parts[0] & parts[2] or parts[1] & parts[2])
        seen += [i for p in parts for i in p]
    assert sorted(seen) == list(range(len(y)))          # every example in exactly one split
    # per class: 20% test and 10% validation, rounded, at least one
    for c, n in enumerate(SIZES):
        e = exps[c // 2]
        count = [int((y[torch.tensor(taken(s))] == c).sum()) for s in (e.train, e.val, e.test)]
        assert count[2] == max(1, round(0.2 * n)) and count[1] == max(1, round(0.1 * n))
        assert sum(count) == n


def test_the_seed_fixes_the_split_and_the_grouping_does_not_change_it():
    x, y = indexed_data()
    a = split_classes_of(x, y, NAMES, seed=3)
    b = split_classes_of(x, y, NAMES, seed=3)
    c = split_classes_of(x, y, NAMES, seed=4)
    assert [taken(e.test) for e in a] == [taken(e.test) for e in b]
    assert [taken(e.train) for e in a] == [taken(e.train) for e in b]
    assert [taken(e.test) for e in a] != [taken(e.test) for e in c]
    # the same test images whatever the grouping
    other = split_classes_of(x, y, NAMES, classes_per_experience=3, seed=3, setting="class")
    assert sorted(i for e in a for i in taken(e.test)) == \
        sorted(i for e in other for i in taken(e.test))


def test_counts_fractions_and_groups():
    x, y = indexed_data()
    exps = split_classes_of(x, y, NAMES, test_per_class=3, val_per_class=0,
                            train_per_class=5)
    assert all(len(e.test[1]) == 6 and len(e.val[1]) == 0 and len(e.train[1]) == 10
               for e in exps)
    exps = split_classes_of(x, y, NAMES, test_fraction=0.5, val_fraction=0.25)
    assert len(exps[2].test[1]) == round(0.5 * 15) + round(0.5 * 20)
    named = split_classes_of(x, y, NAMES, groups=[["fox", "ant"], [2, "dog"]])
    assert [e.name for e in named] == ["fox, ant", "cat, dog"]
    assert set(y[torch.tensor(taken(named[0].train))].tolist()) == {5, 0}
    fox = torch.tensor(taken(named[0].test))
    assert (named[0].test[1] == (y[fox] == 0).long()).all()      # fox -> 0, ant -> 1


def test_images_are_flattened_or_kept(tmp_path):
    x = torch.randint(0, 256, (60, 3, 8, 8), dtype=torch.uint8)
    y = torch.arange(6).repeat(10)
    flat = split_classes_of(x, y, classes_per_experience=3)
    assert flat[0].train[0].shape[1:] == (3 * 8 * 8,)
    kept = split_classes_of(x, y, classes_per_experience=3, flatten=False)
    assert kept[0].train[0].shape[1:] == (3, 8, 8)
    scaled = x.float() / 255                                           # [60, 3, 8, 8]
    assert all(bool((scaled == row).flatten(1).all(1).any()) for row in kept[1].test[0])
    frozen = x[:, 0].numpy()
    frozen.setflags(write=False)                           # as np.load's memory maps are
    grey = split_classes_of(frozen, y.numpy(), classes_per_experience=3,
                            flatten=False)                           # [N, H, W] numpy
    assert grey[0].test[0].shape[1:] == (1, 8, 8)


def test_an_image_folder(tmp_path):
    root = write_folder(tmp_path / "pets")
    exps = user_experiences(root, image_size=16, classes_per_experience=2)
    assert [e.name for e in exps] == ["ant, bee", "cat, dog", "eel, fox"]
    assert exps[0].train[0].shape[1:] == (16 * 16,)
    rows = [r for e in exps for s in (e.train, e.val, e.test) for r in s[0].tolist()]
    assert len(rows) == sum(SIZES) and len({tuple(r) for r in rows}) == len(rows)
    # class c's band is in rows 2c..2c+1: the labels really are the folders' classes
    for e, grp in zip(exps, [(0, 1), (2, 3), (4, 5)]):
        img = e.test[0].view(-1, 16, 16)
        for k, label in enumerate(e.test[1].tolist()):
            assert float(img[k, 2 * grp[label]].mean()) == 1.0
    rgb = SCENARIOS["split-data-class"](root, image_size=8, channels=3, flatten=False)
    assert rgb[0].train[0].shape[1:] == (3, 8, 8) and rgb[0].head == "all"
    x, y, names = load_labelled(root, image_size=8)
    assert x.dtype == torch.uint8 and x.shape == (sum(SIZES), 1, 8, 8) and names == NAMES


def test_a_user_stream_trains():
    """A few steps on a separable stream: the accuracy matrix is well-formed and the first
    experience is learned."""
    x, y = indexed_data([30] * 4, d=6)
    x[:, :] = torch.nn.functional.one_hot(y, 6).float() * 3 + 0.1 * torch.randn(len(y), 6)
    exps = split_classes_of(x, y, classes_per_experience=2)
    model = MLP(6, (16,), 1)
    params = init_params(model, exps, torch.Generator().manual_seed(0))
    r = run_sequence(model, params, exps, "replay", steps=60, batch_size=16, eval_every=30,
                     generator=torch.Generator().manual_seed(0))
    assert r.matrix.shape == (2, 2) and float(r.matrix[0, 0]) > 0.9
    assert len(evaluate_experiences(model, params, exps)) == 2


def test_tensor_files(tmp_path):
    x, y = indexed_data()
    np.savez(tmp_path / "d.npz", x=x.numpy(), y=(y * 10).numpy())           # labels with gaps
    exps = user_experiences(tmp_path / "d.npz", classes_per_experience=3)
    assert [e.name for e in exps] == ["0, 10, 20", "30, 40, 50"]
    torch.save({"x": x, "y": y, "class_names": NAMES}, tmp_path / "d.pt")
    exps = user_experiences(tmp_path / "d.pt", setting="class")
    assert exps[2].name == "eel, fox" and exps[2].num_outputs == 6
    assert exps[0].train[0].shape[1:] == (4,)                             # vectors as given
    with pytest.raises(ValueError, match=r"image_size=8 \(--image-size\) only decodes image "
                                         r"folders; .*would change nothing"):
        user_experiences(tmp_path / "d.pt", image_size=8)
    with pytest.raises(ValueError, match="channels=3, invert='auto'"):
        load_labelled(tmp_path / "d.npz", channels=3, invert="auto")


@pytest.mark.parametrize("kwargs, match", [
    ({"classes_per_experience": 6}, r"at least two experiences, but the 6 classes .* make 1"),
    ({"classes_per_experience": 5}, r"single class\(es\) \['fox'\] would get a one-way head"),
    ({"classes_per_experience": 0}, "classes_per_experience must be a positive int"),
    ({"test_per_class": 6, "val_per_class": 6},
     r"4 class\(es\) have too few images .*'ant' \(12: needs 6 test \+ 6 val \+ 1 train\)"),
    ({"test_per_class": 0}, "test_per_class must be a positive int"),
    ({"test_per_class": 2, "test_fraction": 0.3}, "test_per_class or test_fraction, not both"),
    ({"test_fraction": 0.7, "val_fraction": 0.3}, "leaves no training images"),
    ({"val_fraction": 1.5}, r"val_fraction must be a number in \[0, 1\)"),
    ({"groups": [["ant", "bee"], ["bee", "cat"]]}, "disjoint sets of classes"),
    ({"groups": [["ant", "bee"], ["yak"]]}, "unknown class 'yak'"),
    ({"groups": [["ant", "bee"], ["cat", "dog"]], "classes_per_experience": 2},
     "groups or classes_per_experience, not both"),
    ({"setting": "domain"}, "unknown setting 'domain'"),
])
def test_bad_settings_are_named(kwargs, match):
    x, y = indexed_data()
    with pytest.raises(ValueError, match=match):
        split_classes_of(x, y, NAMES, **kwargs)


def test_bad_data_is_named(tmp_path):
    x, y = indexed_data()
    with pytest.raises(ValueError, match="x must be uint8 images .* got torch.int64"):
        split_classes_of(x.long(), y, NAMES)
    with pytest.raises(ValueError, match=r"y must be int labels \[N\] with N = 83"):
        split_classes_of(x, y[:-1], NAMES)
    with pytest.raises(ValueError, match=r"labels must be in \[0, 3\)"):
        split_classes_of(x, y, NAMES[:3])
    bad = x.clone()
    bad[7, 2] = float("nan")
    with pytest.raises(ValueError, match=r"non-finite values \(NaN or inf\) in 1 row"):
        split_classes_of(bad, y, NAMES)
    with pytest.raises(ValueError, match="does not exist"):
        user_experiences(tmp_path / "missing")
    (tmp_path / "d.csv").write_text("x,y\n")
    with pytest.raises(ValueError, match=r"neither a folder nor a .npz/.pt file \(got '.csv'\)"):
        user_experiences(tmp_path / "d.csv")
    (tmp_path / "e.npz").write_bytes(b"")
    with pytest.raises(ValueError, match="is empty"):
        user_experiences(tmp_path / "e.npz")
    np.savez(tmp_path / "f.npz", x=x.numpy(), y=y.double().numpy())      # float labels
    with pytest.raises(ValueError, match=r"^tensor file .*f\.npz: y must be int labels"):
        user_experiences(tmp_path / "f.npz")
    with pytest.raises(ValueError, match=r"^tensor file .*f\.npz: y must be int labels"):
        load_labelled(tmp_path / "f.npz")
    np.savez(tmp_path / "k.npz", inputs=x.numpy())
    with pytest.raises(ValueError, match=r"lacks \['x', 'y'\]"):
        user_experiences(tmp_path / "k.npz")
    notes = tmp_path / "notes" / "a"
    notes.mkdir(parents=True)
    (notes / "readme.txt").write_text("not an image")
    with pytest.raises(ValueError, match="holds no images in the layout root/<class>/<image>"):
        user_experiences(tmp_path / "notes")
    root = write_folder(tmp_path / "pets", sizes=[4, 4, 4, 4])
    (root / "ant" / "broken.png").write_bytes(b"not a png")
    with pytest.raises(ValueError, match="broken.png"):
        user_experiences(root)


@pytest.mark.parametrize("as_array", [
    lambda g: np.array(g),                         # np.unique(y).reshape(...) gives these
    lambda g: torch.tensor(g),                     # torch.unique(y).reshape(...) these
    lambda g: [[np.int64(c) for c in grp] for grp in g],
])
def test_groups_of_numpy_or_torch_integer_labels_are_the_plain_int_groups(as_array):
    x, y = indexed_data()
    want = split_classes_of(x, y, NAMES, groups=[[0, 1], [4, 5]])
    got = split_classes_of(x, y, NAMES, groups=as_array([[0, 1], [4, 5]]))
    assert [e.name for e in got] == ["ant, bee", "eel, fox"]
    for a, b in zip(got, want):
        assert a.classes == b.classes
        for split in ("train", "val", "test"):
            assert taken(getattr(a, split)) == taken(getattr(b, split))


def test_groups_refuse_bools_and_floats_as_labels():
    x, y = indexed_data()
    for bad in ([[True, 1], [2, 3]], [[0, 1.0], [2, 3]], np.array([[0.0, 1.0], [2.0, 3.0]])):
        with pytest.raises(ValueError, match="groups names unknown class"):
            split_classes_of(x, y, NAMES, groups=bad)
