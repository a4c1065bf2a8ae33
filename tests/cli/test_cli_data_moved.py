"""``metaloop eval --data-root PATH`` (``ml.load_run(..., data_root=PATH)``): a run whose image
folder or tensor file moved is evaluated on its data at PATH, with the numbers it had before
the move; results.json and the record name the path read and the stored one it replaced;
other data there is refused naming the classes that differ, and a built-in family refuses
the option."""

import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import metaloop as ml
from metaloop.cli.main import main
from metaloop.recipes.evaluation import evaluate_run

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from conftest import (  # noqa: E402
    folder_config,
    refused,
    tensor_config,
    train_run,
    write_image_folder,
    write_tensor_file,
)


def _run(tmp_path: Path, kind: str) -> tuple[Path, Path]:
    """(a trained run, its data root) on a folder of 6 classes or a tensor file of 12."""
    if kind == "folder":
        root = write_image_folder(tmp_path / "data" / "images", classes=6, per_class=6,
                                  mixed=False)
        return train_run(tmp_path / "r", folder_config(root)), root
    (tmp_path / "data").mkdir()
    root = write_tensor_file(tmp_path / "data" / "feats.npz")
    return train_run(tmp_path / "r", tensor_config(root)), root


def _moved(tmp_path: Path, root: Path) -> Path:
    moved = tmp_path / "elsewhere" / root.name
    moved.parent.mkdir()
    shutil.move(root, moved)
    return moved


def _results(out: Path) -> dict:
    return json.loads((out / "results.json").read_text())


@pytest.mark.parametrize("kind", ["folder", "tensors"])
def test_eval_of_moved_data_gives_the_numbers_of_before(tmp_path, capsys, kind):
    run, root = _run(tmp_path, kind)
    assert main(["eval", "--checkpoint", str(run), "--out", str(tmp_path / "before"),
                 "--no-progress"]) == 0
    moved = _moved(tmp_path, root)
    refused(["eval", "--checkpoint", str(run), "--no-progress"], capsys, tmp_path,
            str(root), "--data-root PATH")                     # gone from family.root
    capsys.readouterr()
    out, rec = tmp_path / "after", tmp_path / "rec.json"
    assert main(["eval", "--checkpoint", str(run), "--data-root", str(moved), "--out",
                 str(out), "--record", str(rec), "--no-progress"]) == 0
    err = capsys.readouterr().err
    assert f"data read at {moved} (--data-root), in place of the stored family.root {root}" \
        in err, err
    before, after = _results(tmp_path / "before"), _results(out)
    assert after["methods"] == before["methods"]               # the same numbers
    assert after["config"]["family"]["root"] == str(moved)     # the path read
    assert after["data_root"] == {"read": str(moved), "replaced": str(root)}
    assert "data_root" not in before
    record = json.loads(rec.read_text())
    assert record["data_root"] == {"read": str(moved), "replaced": str(root)}
    assert record["run_config"]["family"]["root"] == str(moved)
    assert f"--data-root {moved}" in record["command"]
    # the same through the Python API
    loaded = ml.load_run(run, data_root=moved)
    assert loaded.stored_root == str(root) and loaded.config["family"]["root"] == str(moved)
    res = evaluate_run(loaded)
    assert res["result"]["accuracy"]["mean"] == before["methods"]["r2d2" if kind == "tensors"
                                                                  else "protonet"][
        "accuracy"]["mean"]


def test_a_relative_root_from_another_working_folder(tmp_path, capsys, monkeypatch):
    (tmp_path / "train").mkdir()
    write_image_folder(tmp_path / "train" / "images", classes=6, per_class=6, mixed=False)
    monkeypatch.chdir(tmp_path / "train")
    run = train_run(tmp_path / "r", folder_config(Path("images")))
    assert main(["eval", "--checkpoint", str(run), "--out", str(tmp_path / "before"),
                 "--no-progress"]) == 0
    monkeypatch.chdir(tmp_path)                                # "images" is not here
    refused(["eval", "--checkpoint", str(run), "--no-progress"], capsys, tmp_path,
            "family.root = 'images' is a relative path")
    assert main(["eval", "--checkpoint", str(run), "--data-root", "train/images", "--out",
                 str(tmp_path / "after"), "--no-progress"]) == 0
    after = _results(tmp_path / "after")
    assert after["methods"] == _results(tmp_path / "before")["methods"]
    assert after["data_root"] == {"read": str(tmp_path / "train" / "images"),
                                  "replaced": "images"}


def test_a_changed_copy_is_refused_naming_the_classes(tmp_path, capsys):
    run, root = _run(tmp_path, "folder")
    copy = tmp_path / "copy"
    shutil.copytree(root, copy)
    cls = ml.load_run(run).classes["test"][0]
    victim = sorted((copy / cls).iterdir())[0]
    with Image.open(victim) as im:                                  # one image changed
        im.transpose(Image.Transpose.FLIP_LEFT_RIGHT).save(victim)
    record = tmp_path / "rec.json"
    refused(["eval", "--checkpoint", str(run), "--data-root", str(copy), "--record",
             str(record), "--no-progress"], capsys, tmp_path,
            f"--data-root {copy} is not the data {run} was trained on (its stored "
            f"family.root: {root}): examples differ in class(es) [{cls!r}]")
    assert not record.exists()
    with pytest.raises(ValueError, match=r"examples differ in class\(es\)"):
        ml.load_run(run, data_root=copy).heldout()


def test_a_changed_tensor_file_is_refused_naming_the_class(tmp_path, capsys):
    run, root = _run(tmp_path, "tensors")
    arrays = dict(np.load(root))
    test = ml.load_run(run).classes["test"]
    arrays["x"][int(np.flatnonzero(arrays["y"] == int(test[0]))[0])] += 1.0
    np.savez(tmp_path / "other.npz", **arrays)
    refused(["eval", "--checkpoint", str(run), "--data-root", str(tmp_path / "other.npz"),
             "--no-progress"], capsys, tmp_path, f"examples differ in class(es) [{test[0]!r}]")


def test_a_built_in_family_refuses_data_root(tmp_path, capsys):
    run = train_run(tmp_path / "r", '[family]\nname = "sinusoid"\nshots = 5\nqueries = 5\n'
                    '[model]\nhidden = [8]\n[method]\nname = "maml"\n[train]\niterations = 1\n'
                    'meta_batch = 2\n[eval]\ntasks = 2\nsteps = [0]\n')
    refused(["eval", "--checkpoint", str(run), "--data-root", str(tmp_path),
             "--no-progress"], capsys, tmp_path,
            f"--data-root {tmp_path}: {run} is family 'sinusoid', which reads no data of yours")
    with pytest.raises(ValueError, match="is family 'sinusoid'"):
        ml.load_run(run, data_root=tmp_path)


def test_data_root_with_lake_runs_is_refused(tmp_path, capsys):
    refused(["eval", "--checkpoint", str(tmp_path / "run"), "--lake-runs", str(tmp_path),
             "--data-root", str(tmp_path), "--no-progress"], capsys, tmp_path,
            "--lake-runs scores the official runs instead, so it would change nothing")


def test_a_moved_table_is_read_and_a_changed_one_refused(request, tmp_path, capsys):
    pytest.importorskip("transformers", reason="pip install -e '.[text]'")
    words = "[PAD] [UNK] [CLS] [SEP] [MASK] a the of plant person animal act".split()
    encoder = request.getfixturevalue("save_tiny_bert")(words)
    rows = [f"{c} {w} the,{c}" for c in words[8:] for w in ("a", "of", "the", "a of", "of a")]
    table = tmp_path / "t.csv"
    table.write_text("text,label\n" + "\n".join(rows) + "\n")
    run = train_run(tmp_path / "r", f'[family]\nname = "table"\nroot = "{table}"\n'
                    f'encoder = "{encoder}"\nmax_length = 8\n'
                    'split_fractions = [0.5, 0.0, 0.5]\nways = 2\nshots = 1\nqueries = 2\n'
                    '[model]\nname = "text"\n[method]\nname = "protonet"\n[train]\n'
                    'iterations = 1\nmeta_batch = 1\ncheckpoint_every = 1\n[eval]\ntasks = 2\n'
                    'steps = [0]\n')
    assert main(["eval", "--checkpoint", str(run), "--out", str(tmp_path / "before"),
                 "--no-progress"]) == 0
    moved = _moved(tmp_path, table)
    assert main(["eval", "--checkpoint", str(run), "--data-root", str(moved), "--out",
                 str(tmp_path / "after"), "--no-progress"]) == 0
    after = _results(tmp_path / "after")
    assert after["methods"] == _results(tmp_path / "before")["methods"]
    assert after["data_root"] == {"read": str(moved), "replaced": str(table)}
    moved.write_text(moved.read_text().replace("plant a the", "plant the a"))
    refused(["eval", "--checkpoint", str(run), "--data-root", str(moved), "--no-progress"],
            capsys, tmp_path, f"--data-root {moved} is not the data {run} was trained on",
            "its file's sha256 differs")


@pytest.mark.parametrize("kind", ["folder", "tensors"])
def test_a_resume_whose_data_moved_names_data_root(tmp_path, capsys, kind):
    """``metaloop train --resume RUN`` of a run whose folder or tensor file moved: the error
    names the missing path and ``--data-root PATH`` (it named the path alone); the run's
    checkpoints are left as they were."""
    run, root = _run(tmp_path, kind)
    before = sorted(p.name for p in run.iterdir())
    _moved(tmp_path, root)
    capsys.readouterr()
    assert main(["train", "--resume", str(run), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert str(root) in err and f"--resume {run} --data-root PATH" in err, err
    assert sorted(p.name for p in run.iterdir()) == before
