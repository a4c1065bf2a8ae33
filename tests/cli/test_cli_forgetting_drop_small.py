"""``metaloop forgetting --drop-small``: a class of your own data too small to hold out a test
and a validation image and keep one for training is refused naming ``--drop-small``, which
leaves it out (named on stderr, as ``metaloop train`` names the classes it drops), before the
classes are grouped; the flag is a data option (results.json's data_options, runs.json's
identity; a resume with the other choice is refused by name)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from metaloop.cli.main import main
from metaloop.continual.scenarios import split_classes_of

TINY = ["--scenario", "split-data-class", "--classes-per-experience", "1", "--steps", "2",
        "--eval-every", "2", "--hidden", "8", "--batch-size", "4", "--seeds", "1",
        "--strategies", "naive", "--image-size", "8", "--no-progress"]


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """Classes ant, bee, cat of 8 images and tiny of 1."""
    from PIL import Image

    root = tmp_path_factory.mktemp("small") / "imgs"
    for k, (name, n) in enumerate({"ant": 8, "bee": 8, "cat": 8, "tiny": 1}.items()):
        d = root / name
        d.mkdir(parents=True)
        for i in range(n):
            a = np.zeros((8, 8), np.uint8)
            a[2 * k] = 255
            a[7, i] = 100
            Image.fromarray(a).save(d / f"{i:02d}.png")
    return root


def test_a_tiny_class_is_refused_naming_drop_small(folder, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["forgetting", *TINY, "--data", str(folder), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "'tiny' (1: needs 1 test + 1 val + 1 train)" in err and "--drop-small" in err
    assert not out.exists()


def test_drop_small_leaves_it_out_says_so_and_is_kept(folder, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["forgetting", *TINY, "--data", str(folder), "--drop-small",
                 "--out", str(out)]) == 0
    err = capsys.readouterr().err
    line = next(ln for ln in err.splitlines() if ln.startswith(f"data {folder}: "))
    assert "25 images in 4 classes" in line and "3 classes in use" in line
    assert "dropped 1 class(es) too small" in line and "'tiny'" in line
    r = json.loads((out / "results.json").read_text())
    assert [e["name"] for e in r["experiences"]] == ["ant", "bee", "cat"]
    assert r["data_options"]["drop_small"] is True
    assert json.loads((out / "runs.json").read_text())["identity"]["drop_small"] is True
    # more seeds without the flag: refused by name, nothing changed
    before = (out / "results.json").read_bytes()
    assert main(["forgetting", *TINY, "--data", str(folder), "--seeds", "2",
                 "--out", str(out), "--resume"]) == 2
    err = capsys.readouterr().err
    assert "--drop-small" in err and (out / "results.json").read_bytes() == before


def test_drop_small_on_a_tensor_file_and_on_built_in_data(tmp_path, capsys):
    x = torch.rand(25, 4)
    y = torch.tensor([0] * 8 + [1] * 8 + [2] * 8 + [3])
    path = tmp_path / "d.pt"
    torch.save({"x": x, "y": y, "class_names": ["ant", "bee", "cat", "tiny"]}, path)
    argv = TINY[:-3] + TINY[-1:]                          # no --image-size on a file
    assert TINY[-3:-1] == ["--image-size", "8"]
    assert main(["forgetting", *argv, "--data", str(path), "--drop-small",
                 "--out", str(tmp_path / "run")]) == 0
    assert "dropped 1 class(es) too small" in capsys.readouterr().err
    assert main(["forgetting", "--scenario", "two-task", "--drop-small", "--out",
                 str(tmp_path / "run2"), "--no-progress"]) == 2
    assert "drop --drop-small" in capsys.readouterr().err


def test_split_classes_of_drops_before_grouping():
    y = torch.tensor([0] * 8 + [1] + [2] * 8 + [3] * 8 + [4] * 8 + [5] * 2)
    x = torch.rand(len(y), 3)
    names = ["a", "tiny", "b", "c", "d", "tiny2"]
    dropped: list[str] = []
    exps = split_classes_of(x, y, names, classes_per_experience=2, drop_small=True,
                            dropped=dropped)
    assert dropped == ["tiny", "tiny2"] and [e.name for e in exps] == ["a, b", "c, d"]
    exps = split_classes_of(x, y, names, groups=[["a", "tiny"], ["tiny2"], ["b", "c"]],
                            drop_small=True, setting="class")
    assert [e.name for e in exps] == ["a", "b, c"] and exps[0].num_outputs == 4
    with pytest.raises(ValueError, match="--drop-small"):
        split_classes_of(x, y, names)


def test_a_one_class_experience_after_drop_small_names_the_dropped_class():
    y = torch.cat([torch.full((n,), i) for i, n in enumerate([10, 10, 2, 10, 10, 10])])
    x = torch.rand(len(y), 4)
    names = [f"c{i}" for i in range(6)]
    with pytest.raises(ValueError, match=r"single class\(es\) \['c5'\] \(the 5 classes left "
                                         r"after dropping 1 .*\['c2'\]"):
        split_classes_of(x, y, names, classes_per_experience=2, setting="task",
                         drop_small=True)
