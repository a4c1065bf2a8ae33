"""``metaloop forgetting --data FOLDER``: an unreadable image is refused with the flag that
leaves it out (``--skip-corrupt``), which is recorded with the data options; one line on
stderr says what was read of the folder and what was left out, as ``metaloop train`` says it."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

from metaloop.cli.main import main

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from conftest import write_image_folder  # noqa: E402

TINY = ["--scenario", "split-data-task", "--image-size", "12", "--steps", "2",
        "--eval-every", "1", "--hidden", "8", "--batch-size", "8", "--seeds", "1",
        "--strategies", "naive", "--no-progress"]


@pytest.fixture(scope="module")
def corrupt(tmp_path_factory):
    """4 classes of 5 images, ``notes.txt`` and ``.DS_Store`` in the first, ``broken.png``
    in the last, a class folder without images and an image outside any class folder."""
    root = write_image_folder(tmp_path_factory.mktemp("data") / "imgs", classes=4,
                              per_class=5, side=12, corrupt=True)
    (root / "no_images").mkdir()
    (root / "no_images" / "readme.txt").write_text("nothing here")
    from PIL import Image

    Image.fromarray(np.zeros((12, 12), np.uint8)).save(root / "loose.png")
    return root


def test_an_unreadable_image_is_refused_naming_the_flag(corrupt, tmp_path, capsys):
    out = tmp_path / "run"
    code = main(["forgetting", "--data", str(corrupt), "--out", str(out), *TINY])
    err = capsys.readouterr().err
    assert code == 2 and not out.exists(), err
    assert "broken.png" in err and "add --skip-corrupt" in err
    assert "skip_corrupt=True" not in err              # not the Python API's advice


def test_skip_corrupt_leaves_it_out_says_so_and_records_it(corrupt, tmp_path, capsys):
    out = tmp_path / "run"
    code = main(["forgetting", "--data", str(corrupt), "--out", str(out), "--skip-corrupt",
                 *TINY])
    err = capsys.readouterr().err
    assert code == 0, err
    line = next(ln for ln in err.splitlines() if ln.startswith(f"data {corrupt}: "))
    assert "20 images in 4 classes" in line and "4 classes in use" in line
    assert "ignored 2 non-image" in line and "1 hidden" in line
    assert "left out 1 class folder(s) without images, e.g. 'no_images'" in line
    assert "left out 1 image(s) outside any class folder, e.g. loose.png" in line
    assert "skipped 1 unreadable image(s), e.g. class_03/broken.png" in line
    r = json.loads((out / "results.json").read_text())
    assert r["data_options"] == {"data": str(corrupt.resolve()), "image_size": 12,
                                 "skip_corrupt": True}
    assert sum(e["train"] + e["val"] + e["test"] for e in r["experiences"]) == 20
    kept = json.loads((out / "runs.json").read_text())["identity"]
    assert kept["skip_corrupt"] is True


def test_a_clean_folder_is_described_too(tmp_path, capsys):
    root = write_image_folder(tmp_path / "clean", classes=4, per_class=5, side=12,
                              mixed=False)
    code = main(["forgetting", "--data", str(root), "--out", str(tmp_path / "run"), *TINY])
    err = capsys.readouterr().err
    assert code == 0, err
    assert f"data {root}: 20 images in 4 classes (cache " in err
    assert "skipped" not in err and "ignored" not in err
    r = json.loads((tmp_path / "run" / "results.json").read_text())
    assert "skip_corrupt" not in r["data_options"]


def test_a_record_of_the_folder_without_skipping_is_not_replaced(corrupt, tmp_path, capsys):
    records = tmp_path / "records"
    code = main(["forgetting", "--data", str(corrupt), "--out", str(tmp_path / "a"),
                 "--skip-corrupt", "--record", str(records), *TINY])
    assert code == 0, capsys.readouterr().err
    written = json.loads((records / "continual_split_data_task_naive.json").read_text())
    assert written["setting"]["skip_corrupt"] is True
    assert "--skip-corrupt" in written["command"]
    # checked before any data is read: the record was measured without the broken image
    code = main(["forgetting", "--data", str(corrupt), "--out", str(tmp_path / "b"),
                 "--record", str(records), *TINY])
    err = capsys.readouterr().err
    assert code == 2 and not (tmp_path / "b").exists(), err
    assert "differs in --skip-corrupt (the record's: True; none in this run)" in err


@pytest.mark.parametrize("argv, why", [
    (["--scenario", "two-task"], "applies to the scenarios split-data-task"),
    (["--scenario", "split-data-task", "--data", "TENSORS"], "is a tensor file"),
])
def test_skip_corrupt_where_it_changes_nothing_is_refused(argv, why, tmp_path, capsys):
    path = tmp_path / "x.npz"
    np.savez(path, x=np.random.default_rng(0).random((40, 6), np.float32),
             y=np.arange(4).repeat(10))
    argv = [str(path) if a == "TENSORS" else a for a in argv]
    out = tmp_path / "run"
    code = main(["forgetting", *argv, "--skip-corrupt", "--out", str(out), "--no-progress"])
    err = capsys.readouterr().err
    assert code == 2 and not out.exists(), err
    assert why in err and "drop --skip-corrupt" in err


@pytest.mark.parametrize("scenario", ["split-data-task", "split-data-class"])
def test_a_readable_folder_gives_the_scenarios_own_experiences(scenario, tmp_path):
    from metaloop.continual.scenarios import SCENARIOS
    from metaloop.recipes import forgetting

    root = write_image_folder(tmp_path / "imgs", classes=4, per_class=6, side=12)
    lines: list[str] = []
    mine = forgetting.experiences(scenario, data=str(root), image_size=12, channels=3,
                                  classes_per_experience=2, log=lines.append)
    theirs = SCENARIOS[scenario](root, image_size=12, channels=3, classes_per_experience=2)
    assert [(e.name, e.head, list(e.classes)) for e in mine] == \
        [(e.name, e.head, list(e.classes)) for e in theirs]
    for a, b in zip(mine, theirs):
        for (xa, ya), (xb, yb) in zip((a.train, a.val, a.test), (b.train, b.val, b.test)):
            assert xa.equal(xb) and ya.equal(yb)
    assert len(lines) == 1 and lines[0].startswith(f"data {root}: 24 images in 4 classes")
