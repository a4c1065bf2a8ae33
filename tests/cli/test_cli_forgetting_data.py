"""``metaloop forgetting --scenario split-data-task|split-data-class --data PATH``: your own
image folder or tensor file end to end; the options that would change nothing, and bad data,
are refused by name (exit 2, nothing written under --out)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from metaloop.cli.main import build_parser, main

NAMES = ["ant", "bee", "cat", "dog", "eel", "fox"]
TINY = ["--steps", "4", "--eval-every", "2", "--hidden", "16", "--batch-size", "8",
        "--seeds", "1", "--strategies", "naive,replay", "--no-progress"]


def write_folder(root, per_class: int = 12, classes: int = 6, side: int = 16):
    """``root/<name>/<i>.png``: class c a bright band in rows 2c..2c+1, each image one more
    pixel of its own."""
    from PIL import Image

    for c in range(classes):
        d = root / NAMES[c]
        d.mkdir(parents=True)
        for i in range(per_class):
            a = np.zeros((side, side), np.uint8)
            a[2 * c:2 * c + 2] = 255
            a[side - 1, i % side] = 200
            Image.fromarray(a).save(d / f"{i:02d}.png")
    return root


def write_npz(path, classes: int = 5, per_class: int = 10, d: int = 6):
    """Feature vectors ``[N, d]`` near 3 x one-hot(class), labels 0..classes-1."""
    g = torch.Generator().manual_seed(0)
    y = torch.arange(classes).repeat_interleave(per_class)
    x = torch.nn.functional.one_hot(y % d, d).float() * 3 + torch.randn(len(y), d, generator=g)
    np.savez(path, x=x.numpy(), y=y.numpy())
    return path


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return write_folder(tmp_path_factory.mktemp("data") / "pets")


def _refused(capsys, tmp_path, *argv) -> str:
    out = tmp_path / "run"
    capsys.readouterr()
    code = main(["forgetting", "--out", str(out), "--no-progress", *argv])
    err = capsys.readouterr().err
    assert code == 2 and not out.exists(), err
    assert "metaloop forgetting: error:" in err
    return err


def test_an_image_folder_end_to_end(folder, tmp_path, capsys):
    out = tmp_path / "run"
    code = main(["forgetting", "--scenario", "split-data-task", "--data", str(folder),
                 "--image-size", "16", "--out", str(out), *TINY])
    assert code == 0
    text = capsys.readouterr().out
    assert "split-data-task: 3 experiences" in text and "replay" in text
    r = json.loads((out / "results.json").read_text())
    assert r["scenario"] == "split-data-task" and r["data"] == str(folder.resolve())
    # the data options given, to reproduce the result from its file
    assert r["data_options"] == {"data": str(folder.resolve()), "image_size": 16}
    assert [(e["name"], e["head"], e["outputs"], e["classes"]) for e in r["experiences"]] == [
        ("ant, bee", "task0", 2, [0, 1]), ("cat, dog", "task1", 2, [0, 1]),
        ("eel, fox", "task2", 2, [0, 1])]
    # 12 images per class: 2 test (20%) and 1 validation (10%) held out, 9 to train
    assert all((e["train"], e["val"], e["test"]) == (18, 2, 4) for e in r["experiences"])
    assert len(r["strategies"]["naive"]["matrix"]["mean"]) == 3
    assert r["settings"]["batch_size"] == 8 and r["settings"]["steps"] == 4
    points = [json.loads(ln) for ln in (out / "metrics.jsonl").read_text().splitlines()]
    assert {p["strategy"] for p in points} == {"naive", "replay"}
    for png in ("old_accuracy_vs_steps.png", "accuracy_matrix.png"):
        assert (out / png).read_bytes()[:4] == b"\x89PNG"


def test_rgb_images_set_the_mlp_input(folder, tmp_path, capsys):
    """--channels 3 --image-size 8: inputs of 3 x 8 x 8 = 192, which the MLP reads."""
    from metaloop.recipes import forgetting as recipe

    exps = recipe.experiences("split-data-class", data=folder, image_size=8, channels=3)
    assert exps[0].train[0].shape[1:] == (192,) and exps[0].head == "all"
    out = tmp_path / "run"
    code = main(["forgetting", "--scenario", "split-data-class", "--data", str(folder),
                 "--image-size", "8", "--channels", "3", "--classes-per-experience", "3",
                 "--out", str(out), *TINY[:-3], "--strategies", "naive", "--no-progress"])
    assert code == 0, capsys.readouterr().err
    r = json.loads((out / "results.json").read_text())
    assert [e["outputs"] for e in r["experiences"]] == [6, 6]
    assert list(r["strategies"]) == ["naive"]


def test_a_tensor_file_end_to_end(tmp_path, capsys):
    """Feature vectors [N, 6] in the class setting, three classes per experience, fixed
    held-out counts: the MLP reads 6 inputs."""
    data = write_npz(tmp_path / "features.npz")
    out = tmp_path / "run"
    code = main(["forgetting", "--scenario", "split-data-class", "--data", str(data),
                 "--classes-per-experience", "3", "--test-per-class", "3",
                 "--val-per-class", "2", "--train-per-class", "4", "--out", str(out), *TINY])
    assert code == 0, capsys.readouterr().err
    r = json.loads((out / "results.json").read_text())
    assert [(e["name"], e["head"], e["outputs"], e["classes"]) for e in r["experiences"]] == [
        ("0, 1, 2", "all", 5, [0, 1, 2]), ("3, 4", "all", 5, [3, 4])]
    assert [(e["train"], e["val"], e["test"]) for e in r["experiences"]] == [(12, 6, 9),
                                                                             (8, 4, 6)]
    matrix = r["strategies"]["replay"]["matrix"]["per_seed"][0]
    assert len(matrix) == 2 and all(0 <= a <= 1 for row in matrix for a in row)
    # --seeds 1: one value per cell has no CI (it printed "± 0.0" and wrote "ci95": 0.0)
    summary = r["strategies"]["replay"]["summary"]
    assert all(m["ci95"] is None and m["n"] == 1 for m in summary.values()), summary
    text = capsys.readouterr().out
    rows = [ln for ln in text.splitlines() if ln.startswith("replay ")]
    assert "one seed, so no 95% CI: ± n/a" in text and "± n/a" in rows[0]
    assert "± 0.0" not in text


def test_the_defaults_and_the_help():
    args = build_parser().parse_args(["forgetting", "--scenario", "split-data-class",
                                      "--data", "pets"])
    assert (args.classes_per_experience, args.image_size, args.channels) == (None, None, None)
    from metaloop.recipes import forgetting as recipe

    assert recipe.settings("split-data-class")["batch_size"] == 64
    sub = next(a for a in build_parser()._actions if a.dest == "command")
    text = sub.choices["forgetting"].format_help()
    for word in ("split-data-task", "--data PATH", "--classes-per-experience N",
                 "root/<class>/<image>", ".npz/.pt"):
        assert word in text


@pytest.mark.parametrize("scenario", ["two-task", "split-fmnist-class", "omniglot-alphabets"])
@pytest.mark.parametrize("flag, value", [("--data", "pets"), ("--classes-per-experience", "2"),
                                         ("--image-size", "28"), ("--channels", "1")])
def test_data_options_on_built_in_data_are_refused(scenario, flag, value, tmp_path, capsys):
    # no data under --root: an error about the data would mean the flag was accepted
    err = _refused(capsys, tmp_path, "--scenario", scenario, "--root",
                   str(tmp_path / "no-data"), flag, value)
    assert f"{flag} {value} applies to the scenarios split-data-task, split-data-class" in err
    assert f"{scenario} reads its built-in data, so it would change nothing: drop {flag}" in err


@pytest.mark.parametrize("scenario", ["split-data-task", "split-data-class"])
@pytest.mark.parametrize("flag, named", [("--root", "the folder the built-in scenarios"),
                                         ("--alphabets", "the length of the omniglot")])
def test_built_in_options_on_your_data_are_refused(scenario, flag, named, folder, tmp_path,
                                                   capsys):
    err = _refused(capsys, tmp_path, "--scenario", scenario, "--data", str(folder), flag, "3")
    assert f"{flag} 3 is {named}" in err
    assert f"{scenario} reads --data, so it would change nothing: drop {flag}" in err


@pytest.mark.parametrize("flag, value", [("--image-size", "16"), ("--channels", "3")])
def test_folder_options_on_a_tensor_file_are_refused(flag, value, tmp_path, capsys):
    data = write_npz(tmp_path / "f.npz")
    err = _refused(capsys, tmp_path, "--scenario", "split-data-class", "--data", str(data),
                   flag, value)
    assert f"({flag}) only decodes image folders; {data} is a tensor file" in err
    assert f"would change nothing: drop {flag}" in err


def test_bad_data_is_named(folder, tmp_path, capsys):
    run = ["--scenario", "split-data-task"]
    err = _refused(capsys, tmp_path, *run)
    assert "--scenario split-data-task needs --data PATH" in err
    err = _refused(capsys, tmp_path, *run, "--data", str(tmp_path / "nowhere"))
    assert f"data {tmp_path / 'nowhere'} does not exist" in err
    # two classes cannot make two experiences of two
    two = write_folder(tmp_path / "two", classes=2)
    err = _refused(capsys, tmp_path, *run, "--data", str(two))
    assert "a stream needs at least two experiences, but the 2 classes ['ant', 'bee']" in err
    # classes too small to hold out test and validation images
    small = write_folder(tmp_path / "small", per_class=2, classes=4)
    err = _refused(capsys, tmp_path, *run, "--data", str(small))
    assert "4 class(es) have too few images to hold out test and validation images" in err
    assert "'ant' (2: needs 1 test + 1 val + 1 train)" in err
    err = _refused(capsys, tmp_path, *run, "--data", str(folder), "--test-per-class", "6",
                   "--val-per-class", "6")
    assert "'ant' (12: needs 6 test + 6 val + 1 train)" in err
    # an odd number of classes in the task setting leaves a one-class experience
    five = write_folder(tmp_path / "five", classes=5)
    err = _refused(capsys, tmp_path, *run, "--data", str(five))
    assert "single class(es) ['eel'] would get a one-way head" in err
    assert "e.g. 3 for 5 classes" in err
    # non-image files only, and a file that is not the image its name says
    notes = tmp_path / "notes" / "ant"
    notes.mkdir(parents=True)
    (notes / "readme.txt").write_text("not an image")
    err = _refused(capsys, tmp_path, *run, "--data", str(tmp_path / "notes"))
    assert "holds no images in the layout root/<class>/<image>" in err
    broken = write_folder(tmp_path / "broken", per_class=5, classes=4)
    (broken / "dog" / "x.png").write_bytes(b"not a png")
    err = _refused(capsys, tmp_path, *run, "--data", str(broken))
    assert "x.png" in err
    # the command line's hint, not the config's or the Python API's
    assert "add --skip-corrupt" in err and "family.skip_corrupt" not in err
    assert "skip_corrupt=True" not in err
    (tmp_path / "table.csv").write_text("x,y\n1,0\n")
    err = _refused(capsys, tmp_path, *run, "--data", str(tmp_path / "table.csv"))
    assert "is neither a folder nor a .npz/.pt file (got '.csv')" in err


@pytest.mark.parametrize("y,got", [
    (np.arange(5).repeat(10).astype(np.float64), "got torch.float64 [50]"),   # float labels
    (np.arange(5).repeat(8), "got torch.int64 [40]"),                        # N unlike x's
    (np.arange(50).reshape(25, 2) % 5, "got torch.int64 [25, 2]"),           # not [N]
])
def test_a_tensor_file_with_bad_labels_is_named_by_the_file(y, got, tmp_path, capsys):
    # the message named the internal function that found it: "split_classes_of y must be ..."
    data = tmp_path / "feats.npz"
    np.savez(data, x=np.zeros((50, 6), np.float32), y=y)
    err = _refused(capsys, tmp_path, "--scenario", "split-data-class", "--data", str(data))
    assert f"error: tensor file {data}: y must be int labels [N] with N = 50 (as x), {got}" \
        in err, err
    assert "split_classes_of" not in err


def test_a_tensor_files_classes_are_grouped_in_label_order(tmp_path, capsys):
    """class_names ["zeb", "ant", "cat", "bee"]: experiences (zeb, ant), (cat, bee), as the
    help says; it said the classes were grouped in name order, true of a folder only."""
    data = tmp_path / "named.npz"
    y = np.arange(4).repeat(10)
    np.savez(data, x=np.eye(4, dtype=np.float32)[y], y=y,
             class_names=np.array(["zeb", "ant", "cat", "bee"]))
    out = tmp_path / "run"
    code = main(["forgetting", "--scenario", "split-data-class", "--data", str(data),
                 "--out", str(out), *TINY])
    assert code == 0, capsys.readouterr().err
    r = json.loads((out / "results.json").read_text())
    assert [e["name"] for e in r["experiences"]] == ["zeb, ant", "cat, bee"]
    sub = next(a for a in build_parser()._actions if a.dest == "command")
    text = " ".join(sub.choices["forgetting"].format_help().split())
    assert "in name order" not in text.replace("a folder's in name order", "")
    assert "a file's in label order" in text
    assert "classes per experience, in label order (a folder's: by class name)" in text


def test_early_stop_without_validation_images_names_the_flags(tmp_path, capsys):
    """--val-per-class 0 --early-stop 2: the error named the library's early_stop argument
    and one experience; it now names the flags."""
    data = write_npz(tmp_path / "features.npz")
    err = _refused(capsys, tmp_path, "--scenario", "split-data-class", "--data", str(data),
                   "--val-per-class", "0", "--early-stop", "2", *TINY[:-1])
    assert ("--early-stop 2 stops on each experience's validation accuracy, but 3 "
            "experience(s) have no validation images ('0, 1', '2, 3', '4'; --val-per-class "
            "0?): hold out at least one per class, or drop --early-stop") in err, err


@pytest.mark.parametrize("flag, value, message", [
    ("--train-per-class", "0", "--train-per-class must be positive, got 0"),
    ("--test-per-class", "0", "--test-per-class must be positive, got 0"),
    ("--val-per-class", "-1", "--val-per-class must be >= 0, got -1"),
    ("--classes-per-experience", "0", "--classes-per-experience must be positive, got 0"),
])
def test_a_count_that_is_not_positive_is_named_before_the_data_is_read(flag, value, message,
                                                                       tmp_path, capsys):
    """The folder was decoded in full (and its cache written) before the library named
    ``train_per_class must be a positive int or None``; the flag is now named first."""
    pets = write_folder(tmp_path / "pets", per_class=5, classes=4)
    err = _refused(capsys, tmp_path, "--scenario", "split-data-class", "--data", str(pets),
                   flag, value)
    assert f"metaloop forgetting: error: {message}" in err, err
    assert not (pets / ".metaloop-cache").exists()


def test_an_image_cache_that_cannot_be_written_gives_advice_the_command_can_follow(
        tmp_path, capsys):
    """--data takes no cache_dir, so the message must not end 'pass a writable cache_dir'."""
    root = write_folder(tmp_path / "images")
    (root / ".metaloop-cache").write_text("a file where the cache goes")
    out = tmp_path / "out"
    assert main(["forgetting", "--scenario", "split-data-class", "--data", str(root),
                 "--out", str(out), *TINY]) == 2
    err = capsys.readouterr().err
    assert "cannot write the decoded image cache" in err and "make it writable" in err
    assert "cache_dir" not in err and not out.exists()
