"""``metaloop adapt`` on a folder run: whether ``--data`` is the data the run was trained on
is told by its images (the class digests the run stores), not by its path; of other data, a
class holding exactly the images of one of the run's training classes is never held out."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import pytest

from metaloop.cli.main import main
from metaloop.recipes import adapt as recipe
from metaloop.runs import load_run

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from conftest import folder_config, train_run, write_image_folder  # noqa: E402

GIVEN = {"model", "family", "data", "ways", "tasks"}


@pytest.fixture(scope="module")
def relative_run(tmp_path_factory):
    """(a ProtoNet run trained from its folder on ``root = "photos"``, a relative path; the
    absolute path of that image folder of 8 classes, 4 of them training classes)."""
    d = tmp_path_factory.mktemp("own_data")
    photos = write_image_folder(d / "photos", classes=8, per_class=6, mixed=False)
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(d)                               # family.root is read from the working folder
        run = train_run(d, folder_config(Path("photos")))
    assert load_run(run).config["family"]["root"] == "photos"
    return run, photos


def _prepare(run: Path, data: Path, **extra) -> recipe.Prepared:
    s = recipe.AdaptSettings(model=str(run), family="folder", data=str(data), ways=2, tasks=2,
                             **extra)
    return recipe.prepare(s, given=GIVEN | set(extra))


def test_the_runs_data_seen_from_another_folder_or_copied_keeps_its_split(
        relative_run, tmp_path, monkeypatch):
    """From another working folder the relative root names nothing, and a copy lies
    elsewhere: both were scored as new data, every class held out, the run's training
    classes included."""
    run, photos = relative_run
    split = load_run(run).config["family"]
    copy = Path(shutil.copytree(photos, tmp_path / "copy"))
    monkeypatch.chdir(tmp_path)
    for data in (photos, copy):
        p = _prepare(run, data)
        assert p.data["heldout"] == f"the test classes of {run}"
        assert p.heldout.class_names == split["test_classes"]
        assert not set(p.heldout.class_names) & set(split["train_classes"])
        assert p.data["trained_classes_left_out"] == []
        assert f"held-out classes, the test classes of {run}: 4" in p.description
    # its own split: --split-fractions would change nothing there, and is refused
    with pytest.raises(ValueError, match="is the data .* was trained on"):
        _prepare(run, copy, meta="fomaml", split_fractions="0.5,0,0.5")


def _mixed_folder(tmp_path: Path, photos: Path, train: list[str]) -> Path:
    """A folder of 4 new classes and copies of the run's first two training classes under
    other names."""
    mixed = write_image_folder(tmp_path / "mixed", classes=4, per_class=6, seed=7, mixed=False)
    for i, name in enumerate(train[:2]):
        shutil.copytree(photos / name, mixed / f"renamed_{i}")
    return mixed


def test_the_runs_training_classes_in_other_data_are_left_out_and_named(relative_run,
                                                                        tmp_path, capsys):
    run, photos = relative_run
    train = load_run(run).config["family"]["train_classes"]
    mixed = _mixed_folder(tmp_path, photos, train)
    p = _prepare(run, mixed)
    assert p.data["trained_classes_left_out"] == ["renamed_0", "renamed_1"]
    assert p.heldout.class_names == ["class_00", "class_01", "class_02", "class_03"]
    assert p.data["heldout"] == f"every class {run} did not meta-train on (no meta-training)"
    assert (f"left out 2 class(es) holding the same images as classes {run} meta-trained on: "
            f"renamed_0, renamed_1") in p.description
    # with --meta the other classes are split; neither side holds a training class
    p = _prepare(run, mixed, meta="fomaml", split_fractions="0.5,0,0.5")
    held, meta_train = p.heldout.class_names, p.data["train_classes"]
    assert sorted(held + meta_train) == ["class_00", "class_01", "class_02", "class_03"]
    assert not set(held) & set(meta_train)
    # the command says so, and keeps it in results.json
    out = tmp_path / "out"
    assert main(["adapt", "--model", str(run), "--family", "folder", "--data", str(mixed),
                 "--ways", "2", "--queries", "2", "--tasks", "2", "--approaches",
                 "probe-ridge", "--out", str(out), "--no-progress"]) == 0
    assert "renamed_0, renamed_1" in capsys.readouterr().out
    res = json.loads((out / "results.json").read_text())
    assert res["data"]["trained_classes_left_out"] == ["renamed_0", "renamed_1"]
    assert "renamed_0" not in res["data"]["heldout_classes"]


def test_too_few_classes_besides_the_runs_training_classes_are_refused(relative_run,
                                                                       tmp_path):
    run, photos = relative_run
    train = load_run(run).config["family"]["train_classes"]
    only = tmp_path / "only"
    for name in train[:3]:
        shutil.copytree(photos / name, only / name)
    fresh = write_image_folder(tmp_path / "fresh", classes=1, per_class=6, seed=9, mixed=False)
    shutil.copytree(fresh / "class_00", only / "fresh")
    with pytest.raises(ValueError, match=r"3 of its classes hold the same images as classes "
                       r".* the 1 other class\(es\) are fewer than --ways 2"):
        _prepare(run, only)
