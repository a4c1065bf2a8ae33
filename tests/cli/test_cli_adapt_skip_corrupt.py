"""``metaloop adapt --family folder``: the data a run was trained on with
``family.skip_corrupt = true`` is read so again; other data leaves unreadable images out with
``--skip-corrupt``, and an error names that flag; what a folder held that was not read is
printed, as ``metaloop train`` prints it, and kept in results.json."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from metaloop.cli.main import main

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from conftest import (  # noqa: E402
    folder_config,
    refused,
    train_run,
    write_image_folder,
    write_tensor_file,
)


@pytest.fixture(scope="module")
def skipping_run(tmp_path_factory):
    """(a ProtoNet run trained with family.skip_corrupt = true on a folder of 8 classes
    whose last class holds broken.png, that folder)."""
    d = tmp_path_factory.mktemp("skip_corrupt")
    photos = write_image_folder(d / "photos", classes=8, per_class=6, mixed=False,
                                corrupt=True)
    config = folder_config(photos).replace("[family]\n", "[family]\nskip_corrupt = true\n")
    return train_run(d, config), photos


def _adapt(run, data, out=None, *extra, family="folder"):
    """The command; without ``out`` no --out (``refused`` adds its own)."""
    return ["adapt", "--model", str(run), "--family", family, "--data", str(data), "--ways",
            "2", "--queries", "2", "--tasks", "2", "--approaches", "probe-ridge",
            "--no-progress", *(["--out", str(out)] if out is not None else []), *extra]


def test_the_runs_own_data_is_read_with_its_skip_corrupt(skipping_run, tmp_path, capsys):
    run, photos = skipping_run
    out = tmp_path / "out"
    assert main(_adapt(run, photos, out)) == 0
    printed = capsys.readouterr().out
    assert f"folder {photos}: " in printed and "skipped 1 unreadable image(s)" in printed
    res = json.loads((out / "results.json").read_text())
    assert res["data"]["heldout"] == f"the test classes of {run}"
    assert res["data"]["left_out"]["skipped"] == ["class_07/broken.png"]


def test_other_data_needs_the_flag_which_the_error_names(skipping_run, tmp_path, capsys):
    run, _ = skipping_run
    other = write_image_folder(tmp_path / "other", classes=4, per_class=6, seed=3,
                               mixed=False, corrupt=True)
    err = refused(_adapt(run, other), capsys, tmp_path, "class_03/broken.png",
                  "give --skip-corrupt")
    assert "skip_corrupt=True" not in err
    out = tmp_path / "flag"
    assert main(_adapt(run, other, out, "--skip-corrupt")) == 0
    res = json.loads((out / "results.json").read_text())
    assert res["data"]["left_out"]["skipped"] == ["class_03/broken.png"]
    assert res["data"]["heldout"] == "every class (no meta-training)"


def test_an_unreadable_image_names_the_flag_for_a_run_without_skip_corrupt(tmp_path, capsys):
    """The error gave Python's advice ("pass skip_corrupt=True (load_folder,
    Episodes.from_folder)"), which the command has no way to follow."""
    d = tmp_path / "plain"
    photos = write_image_folder(d / "photos", classes=4, per_class=6, mixed=False)
    run = train_run(d, folder_config(photos))
    other = write_image_folder(tmp_path / "other", classes=4, per_class=6, seed=3,
                               mixed=False, corrupt=True)
    err = refused(_adapt(run, other), capsys, tmp_path, f"image folder {other}",
                  "broken.png", "give --skip-corrupt")
    assert "skip_corrupt=True" not in err


def test_what_a_folder_held_that_was_not_read_is_printed_and_kept(skipping_run, tmp_path,
                                                                   capsys):
    run, _ = skipping_run
    other = write_image_folder(tmp_path / "other", classes=4, per_class=6, seed=3)  # mixed
    (other / "no_images").mkdir()
    (other / "no_images" / "readme.md").write_text("nothing to see")
    (other / "loose.png").write_bytes((other / "class_00" / "000.png").read_bytes())
    out = tmp_path / "out"
    assert main(_adapt(run, other, out)) == 0
    printed = capsys.readouterr().out
    assert "ignored 2 non-image (by suffix, e.g. class_00/notes.txt) and 1 hidden" in printed
    assert "left out 1 class folder(s) without images, e.g. 'no_images'" in printed
    assert "left out 1 image(s) outside any class folder, e.g. loose.png" in printed
    left = json.loads((out / "results.json").read_text())["data"]["left_out"]
    assert left == {"ignored": 2, "ignored_files": ["class_00/notes.txt",
                                                    "no_images/readme.md"],
                    "hidden": 1, "loose": ["loose.png"], "empty": ["no_images"],
                    "skipped": []}


def test_skip_corrupt_is_refused_where_nothing_reads_it(skipping_run, tmp_path, capsys):
    run, _ = skipping_run
    data = write_tensor_file(tmp_path / "t.npz")
    refused(_adapt(run, data, None, "--skip-corrupt", family="tensors"), capsys, tmp_path,
            "--skip-corrupt applies to --family folder", "drop --skip-corrupt")
