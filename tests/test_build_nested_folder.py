"""``metaloop train`` on an image folder whose classes sit one level too deep (an unzipped
archive, ``root/my_images/<class>/<image>``) or that holds one class folder: the class
split's error names the folder and its class folders, and for the nested one says the images
sit a level deeper and gives ``family.class_depth = 2``; it said only "split_classes: 1
class(es) cannot fill 2 non-empty splits"."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from metaloop import build
from metaloop.cli.main import main

sys.path.insert(0, str(Path(__file__).resolve().parent))
from conftest import folder_config, write_image_folder  # noqa: E402


def _train(tmp_path, root: Path, capsys) -> str:
    (tmp_path / "c.toml").write_text(folder_config(root))
    out = tmp_path / "run"
    assert main(["train", "--config", str(tmp_path / "c.toml"), "--out", str(out),
                 "--no-progress"]) == 2
    assert not out.exists()
    return capsys.readouterr().err


def test_class_folders_one_level_too_deep_are_named_with_the_fix(tmp_path, capsys):
    root = tmp_path / "unzipped"
    write_image_folder(root / "my_images", classes=4, per_class=3, mixed=False)
    err = _train(tmp_path, root, capsys)
    assert f"image folder {root} holds 1 class folder(s) with images ('my_images')" in err
    assert "one level deeper" in err and "family.class_depth = 2" in err
    assert repr(str(root / "my_images")) in err            # or family.root one level down
    assert "family.split_fractions = [0.5, 0.0, 0.5]" in err


def test_a_folder_of_one_class_is_told_it_has_one(tmp_path, capsys):
    root = tmp_path / "one"
    write_image_folder(root, classes=1, per_class=3, mixed=False)
    err = _train(tmp_path, root, capsys)
    assert f"image folder {root} holds 1 class folder(s) with images ('class_00')" in err
    assert "class_depth" not in err and "one folder per class" in err


def test_resolve_split_names_a_tensor_file_and_table_too(tmp_path):
    import numpy as np

    path = tmp_path / "t.npz"
    np.savez(path, x=np.zeros((4, 3), np.float32), y=np.zeros(4, np.int64))
    fam = {"name": "tensors", "root": str(path), "split_fractions": [0.5, 0.0, 0.5],
           "split_seed": 0, "split_files": [], "class_depth": 1,
           **{f"{s}_classes": [] for s in ("train", "val", "test")}}
    with pytest.raises(ValueError, match=rf"tensor file {path} holds 1 class\(es\)"):
        build.resolve_split({"family": fam})
