"""Your own image folder of groups of classes, ``root/<group>/<class>/<image>``: read with
``class_depth=2`` by ``user_experiences`` and ``load_labelled`` (classes named
``group/class``), as the nested-folder warning advises; a tensor file refuses it."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from metaloop.continual import load_labelled, user_experiences
from metaloop.data.folder import NestedClassFoldersWarning

GROUPS = {"insects": ["ant", "bee"], "pets": ["cat", "dog"]}


def write_nested(root, per_class: int = 8, side: int = 8):
    from PIL import Image

    for k, (group, classes) in enumerate(GROUPS.items()):
        for c, name in enumerate(classes):
            d = root / group / name
            d.mkdir(parents=True)
            for i in range(per_class):
                a = np.zeros((side, side), np.uint8)
                a[2 * k + c] = 255
                a[side - 1, i % side] = 100
                Image.fromarray(a).save(d / f"{i:02d}.png")
    return root


def test_class_depth_2_reads_the_classes_inside_the_groups(tmp_path):
    root = write_nested(tmp_path / "nested")
    with warnings.catch_warnings():
        warnings.simplefilter("error", NestedClassFoldersWarning)   # none at depth 2
        exps = user_experiences(root, class_depth=2, image_size=8, cache_dir=tmp_path / "c")
        x, y, names = load_labelled(root, class_depth=2, image_size=8,
                                    cache_dir=tmp_path / "c")
    assert names == ["insects/ant", "insects/bee", "pets/cat", "pets/dog"]
    assert [e.name for e in exps] == ["insects/ant, insects/bee", "pets/cat, pets/dog"]
    assert x.shape == (32, 1, 8, 8) and sorted(set(y.tolist())) == [0, 1, 2, 3]


def test_depth_1_warns_and_names_class_depth_2(tmp_path):
    root = write_nested(tmp_path / "nested")
    with pytest.warns(NestedClassFoldersWarning, match="class_depth=2"):
        _, _, names = load_labelled(root, image_size=8, cache_dir=tmp_path / "c")
    assert names == ["insects", "pets"]


def test_a_tensor_file_refuses_class_depth(tmp_path):
    np.savez(tmp_path / "d.npz", x=np.zeros((8, 3), np.float32), y=np.arange(8) % 4)
    with pytest.raises(ValueError, match=r"class_depth=2 \(--class-depth\) only decodes "
                                         r"image folders"):
        user_experiences(tmp_path / "d.npz", class_depth=2)
