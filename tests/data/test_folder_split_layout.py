"""torchvision's ``root/{train,val,test}/<class>/<image>`` layout: its top-level folders
are splits of the same classes, not groups of classes. Read at ``class_depth=1`` the
warning told the user to set ``class_depth = 2``, which makes ``train/c1`` and ``test/c1``
two classes (one class on both sides of the class split, a task pairing a class with
itself); the warning names the splits and a few shared class names and gives one split's
folder as the root, and ``class_depth = 2`` on such a folder is warned of. A genuinely
nested folder (Omniglot's ``<alphabet>/characterNN``) keeps its ``class_depth = 2`` advice."""

import warnings

import numpy as np
import pytest
from PIL import Image

from metaloop.data import folder as folder_mod
from metaloop.data.folder import load_folder, scan_folder


def _image(path, seed: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    a = np.random.default_rng(seed).integers(0, 256, (8, 8), dtype=np.uint8)
    Image.fromarray(a).save(path)


def _splits(root, tops=("train", "val", "test"), classes=("cat", "dog", "owl", "fox")):
    n = 0
    for t in tops:
        for c in classes:
            for i in range(2):
                n += 1
                _image(root / t / c / f"{i}.png", n)
    return root


def _warnings(root, **kw):
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        data = load_folder(root, image_size=8, **kw)
    return data, [w for w in seen if issubclass(w.category, UserWarning)]


def test_split_folders_read_at_depth_one_advise_one_split_as_the_root(tmp_path):
    root = _splits(tmp_path / "data")
    data, seen = _warnings(root)
    assert data.class_names == ["test", "train", "val"]                # read as before
    assert len(seen) == 1 and seen[0].category is folder_mod.SplitFoldersWarning
    text = str(seen[0].message)
    assert "top-level folders 'test', 'train', 'val' look like splits of the same classes" \
        in text
    assert "'cat', 'dog', 'fox'" in text and "4 of the 4 folder names" in text
    assert f"family.root = {str(root / 'train')!r}" in text
    assert "set family.class_depth = 2" not in text
    assert not issubclass(seen[0].category, folder_mod.NestedClassFoldersWarning)
    assert scan_folder(root).nested == scan_folder(root).splits == data.splits


def test_split_folders_read_at_depth_two_warn_that_one_class_is_counted_several_times(
        tmp_path):
    root = _splits(tmp_path / "data")
    data, seen = _warnings(root, class_depth=2)
    assert len(data.class_names) == 12                                   # read as asked
    assert [w.category for w in seen] == [folder_mod.SplitFoldersWarning]
    text = str(seen[0].message)
    assert "classes of the same name under different top-level folders are counted as " \
           "different classes ('test/cat' and 'train/cat' are two)" in text
    assert f"family.root = {str(root / 'train')!r}" in text


def test_years_as_top_level_folders_are_said_to_be_splits_if_they_are(tmp_path):
    root = _splits(tmp_path / "data", tops=("2019", "2020"))
    _, seen = _warnings(root, class_depth=2)
    assert [w.category for w in seen] == [folder_mod.SplitFoldersWarning]
    assert "if those top-level folders are splits of the same classes" in str(seen[0].message)
    _, seen = _warnings(root)                     # depth 1: both readings, as a question
    assert [w.category for w in seen] == [folder_mod.NestedClassFoldersWarning]
    assert "set family.class_depth = 2" in str(seen[0].message)
    assert "; but 4 of the 4 folder names below its top-level folders" in str(seen[0].message)


def test_an_omniglot_like_tree_keeps_its_class_depth_two_advice(tmp_path):
    root = tmp_path / "omniglot"
    n = 0
    for a in ("Greek", "Latin", "Korean"):                   # characterNN in every alphabet
        for k in range(1, 5):
            for i in range(2):
                n += 1
                _image(root / a / f"character{k:02d}" / f"{i}.png", n)
    data, seen = _warnings(root)
    assert [w.category for w in seen] == [folder_mod.NestedClassFoldersWarning]
    assert "set family.class_depth = 2" in str(seen[0].message)
    assert data.splits == ""
    _, seen = _warnings(root, class_depth=2)
    assert seen == []


def test_distinct_classes_under_split_named_folders_say_nothing_of_splits(tmp_path):
    root = tmp_path / "data"
    for t, classes in (("train", ("cat", "dog")), ("test", ("owl", "fox"))):
        for k, c in enumerate(classes):
            for i in range(2):
                _image(root / t / c / f"{i}.png", 100 * len(t) + 10 * k + i)
    assert scan_folder(root, class_depth=2).splits == ""
    assert "class_depth = 2" in scan_folder(root).nested


@pytest.mark.parametrize("name,words", [("train", {"train"}), ("val2017", {"val"}),
                                        ("meta_test", {"test"}), ("Greek", set())])
def test_split_words(name, words):
    assert folder_mod._split_words(name) == words
