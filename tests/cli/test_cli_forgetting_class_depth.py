"""``metaloop forgetting --class-depth 2``: an image folder of groups of classes,
``root/<group>/<class>/<image>``, read as the nested-folder warning advises; the depth is a
data option (results.json's data_options, and a resume with another depth is refused by
name); it is refused where it would change nothing. The record file names the help gives
are those written."""

from __future__ import annotations

import json

import numpy as np
import pytest

from metaloop.cli.main import build_parser, main
from metaloop.data.folder import NestedClassFoldersWarning
from metaloop.recipes import forgetting as recipe

TINY = ["--scenario", "split-data-class", "--classes-per-experience", "1", "--steps", "2",
        "--eval-every", "2", "--hidden", "8", "--batch-size", "4", "--seeds", "1",
        "--strategies", "naive", "--image-size", "8", "--no-progress"]
GROUPS = {"insects": ["ant", "bee"], "pets": ["cat", "dog"]}


@pytest.fixture(scope="module")
def nested(tmp_path_factory):
    from PIL import Image

    root = tmp_path_factory.mktemp("depth") / "nested"
    for k, (group, classes) in enumerate(GROUPS.items()):
        for c, name in enumerate(classes):
            d = root / group / name
            d.mkdir(parents=True)
            for i in range(8):
                a = np.zeros((8, 8), np.uint8)
                a[2 * k + c] = 255
                a[7, i] = 100
                Image.fromarray(a).save(d / f"{i:02d}.png")
    return root


def test_class_depth_2_reads_the_classes_in_the_groups_and_is_kept(nested, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["forgetting", *TINY, "--data", str(nested), "--class-depth", "2",
                 "--out", str(out)]) == 0
    captured = capsys.readouterr()
    assert "warning" not in captured.err
    r = json.loads((out / "results.json").read_text())
    assert [e["name"] for e in r["experiences"]] == ["insects/ant", "insects/bee",
                                                     "pets/cat", "pets/dog"]
    assert r["data_options"]["class_depth"] == 2
    assert json.loads((out / "runs.json").read_text())["identity"]["class_depth"] == 2
    # more seeds with another depth: refused by name, nothing changed
    before = (out / "results.json").read_bytes()
    with pytest.warns(NestedClassFoldersWarning):      # depth 1 on this folder
        assert main(["forgetting", *TINY, "--data", str(nested), "--class-depth", "1",
                     "--seeds", "2", "--out", str(out), "--resume"]) == 2
    err = capsys.readouterr().err
    assert "refusing to resume" in err and "--class-depth (2 != 1)" in err
    assert (out / "results.json").read_bytes() == before


def test_the_nested_folder_warning_names_the_flag(nested, tmp_path):
    """(The command line prints it as "metaloop forgetting: warning: ...".)"""
    with pytest.warns(NestedClassFoldersWarning, match=r"set family.class_depth = 2 "
                      r"\(class_depth=2 in Python\); here: add --class-depth 2$"):
        assert main(["forgetting", *TINY, "--data", str(nested), "--out",
                     str(tmp_path / "run")]) == 0


def test_class_depth_where_it_would_change_nothing_is_refused(tmp_path, capsys):
    np.savez(tmp_path / "d.npz", x=np.zeros((16, 3), np.float32), y=np.arange(16) % 4)
    for argv, words in ((["--scenario", "two-task"], "--class-depth 2 applies to the "
                         "scenarios split-data-task, split-data-class"),
                        (["--scenario", "split-data-task", "--data", str(tmp_path / "d.npz")],
                         "class_depth=2 (--class-depth) only decodes image folders")):
        out = tmp_path / "run"
        assert main(["forgetting", *argv, "--class-depth", "2", "--out", str(out),
                     "--no-progress"]) == 2
        err = capsys.readouterr().err
        assert words in err and not out.exists(), err


def test_the_record_names_in_the_help_are_those_written(tmp_path):
    sub = build_parser()._subparsers._group_actions[0].choices        # type: ignore[union-attr]
    text = " ".join((sub["forgetting"].description + sub["forgetting"].format_help()).split())
    s = recipe.settings("split-fmnist-class", strategies="replay+heads")
    written = recipe.record_path(tmp_path, s, "replay+heads").name
    assert written == "continual_split_fmnist_class_replay_heads.json"
    assert written in text
    two = recipe.record_path(tmp_path, recipe.settings("two-task"), "replay+heads").name
    assert two in text
