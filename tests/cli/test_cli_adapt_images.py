"""``metaloop adapt --family folder / tensors``: every image approach on the user's own
images, read as the ``--model`` run reads images; the run's own data keeps its split; bad
input and flags that would change nothing are named, and nothing is written."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from metaloop.cli.main import main
from metaloop.recipes import adapt as recipe
from metaloop.runs import load_run

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from conftest import folder_config, train_run, write_image_folder  # noqa: E402

IMAGE_ROWS = ["probe-logistic", "probe-ridge", "probe-sgd", "finetune-zero",
              "finetune-random", "lp-ft", "lora"]


@pytest.fixture(scope="module")
def folder_run(tmp_path_factory):
    """(a ProtoNet run trained on an image folder of 8 classes, that folder)."""
    d = tmp_path_factory.mktemp("folder_run")
    photos = write_image_folder(d / "photos", classes=8, per_class=6, mixed=False)
    return train_run(d, folder_config(photos)), photos


def _adapt(run, family, data, out, *extra):
    return ["adapt", "--model", str(run), "--family", family, "--data", str(data), "--ways",
            "2", "--shots", "1", "--queries", "2", "--tasks", "3", "--out", str(out),
            "--no-progress", *extra]


def test_the_runs_own_folder_holds_out_its_test_classes(folder_run, tmp_path, capsys):
    run, photos = folder_run
    out = tmp_path / "out"
    assert main(_adapt(run, "folder", photos, out, "--steps", "2")) == 0
    printed = capsys.readouterr().out
    test_classes = load_run(run).config["family"]["test_classes"]
    assert f"held-out classes, the test classes of {run}: {len(test_classes)}" in printed
    res = json.loads((out / "results.json").read_text())
    assert res["data"]["heldout_classes"] == test_classes and res["data"]["train_classes"] == []
    assert sorted(res["approaches"]) == sorted(IMAGE_ROWS)
    for row in res["approaches"].values():
        assert 0 <= row["accuracy"]["mean"] <= 1 and len(row["per_task"]["accuracy"]) == 3
    assert (out / "accuracy.png").is_file() and res["family"] == "folder"
    capsys.readouterr()
    # its own split: --split-fractions would change nothing, and is refused
    out2 = tmp_path / "out2"
    assert main(_adapt(run, "folder", photos, out2, "--approaches", "probe-ridge", "--meta",
                       "fomaml", "--split-fractions", "0.5,0,0.5")) == 2
    err = capsys.readouterr().err
    assert "is the data" in err and "own class split" in err and not out2.exists()


def test_other_images_are_all_held_out_or_split_for_meta_learning(folder_run, tmp_path,
                                                                   capsys):
    """An Omniglot-free folder of 6 classes: without --meta all 6 are held out; with it the
    classes split by --split-fractions, disjointly, and meta-learned LoRA is added."""
    run, _ = folder_run
    other = write_image_folder(tmp_path / "other", classes=6, per_class=6, seed=3,
                               mixed=False)
    out = tmp_path / "all"
    assert main(_adapt(run, "folder", other, out, "--approaches", "probe-ridge")) == 0
    res = json.loads((out / "results.json").read_text())
    assert len(res["data"]["heldout_classes"]) == 6
    assert res["data"]["heldout"] == "every class (no meta-training)"
    out = tmp_path / "meta"
    assert main(_adapt(run, "folder", other, out, "--approaches", "lora", "--steps", "2",
                       "--meta", "fomaml",
                       "--meta-iterations", "2", "--meta-batch", "1",
                       "--split-fractions", "0.5,0,0.5")) == 0
    res = json.loads((out / "results.json").read_text())
    held, train = res["data"]["heldout_classes"], res["data"]["train_classes"]
    assert len(held) == 3 and len(train) == 3 and not set(held) & set(train)
    assert {"lora", "meta-lora-fomaml", "meta-lora-fomaml inner"} <= set(res["approaches"])
    assert res["meta"]["fomaml"]["config"]["data"]["classes"] == train
    # the finished meta-run is resumed only on the same images: a changed image is refused
    capsys.readouterr()
    img = next(p for p in sorted((other / train[0]).iterdir()) if p.suffix == ".png")
    from PIL import Image
    Image.fromarray(np.zeros((28, 28), np.uint8)).save(img)
    assert main(_adapt(run, "folder", other, tmp_path / "again", "--approaches", "lora",
                       "--steps", "2", "--meta", "fomaml", "--meta-iterations", "2",
                       "--meta-batch", "1", "--split-fractions", "0.5,0,0.5", "--meta-dir",
                       str(out / "meta"))) == 2
    assert "sha256" in capsys.readouterr().err


def test_a_tensor_file_of_images_with_an_omniglot_run(method_runs, tmp_path, capsys):
    """uint8 images [N, 1, 28, 28] in an .npz, scored by an Omniglot run's body; feature
    vectors of another shape are named."""
    run = method_runs("protonet")
    g = torch.Generator().manual_seed(0)
    glyphs = (torch.rand(5, 1, 28, 28, generator=g) > 0.7).to(torch.uint8) * 255
    x = glyphs.repeat_interleave(6, 0)                                  # [30, 1, 28, 28]
    np.savez(tmp_path / "t.npz", x=x.numpy(), y=np.repeat(np.arange(5), 6))
    out = tmp_path / "out"
    assert main(_adapt(run, "tensors", tmp_path / "t.npz", out, "--approaches",
                       "probe-logistic,finetune-zero", "--steps", "2")) == 0
    res = json.loads((out / "results.json").read_text())
    assert res["data"]["heldout_classes"] == ["0", "1", "2", "3", "4"]
    # identical images per class: a probe on any features tells the 5 glyphs apart
    assert res["approaches"]["probe-logistic"]["accuracy"]["mean"] == 1.0
    # with --meta the file's classes are split: 5 classes at 0.6/0/0.4 -> 3 meta-train, 2 held out
    out = tmp_path / "meta"
    assert main(_adapt(run, "tensors", tmp_path / "t.npz", out, "--approaches", "lora",
                       "--steps", "2", "--meta", "fomaml", "--meta-iterations", "2",
                       "--meta-batch", "1", "--split-fractions", "0.6,0,0.4")) == 0
    res = json.loads((out / "results.json").read_text())
    held, train = res["data"]["heldout_classes"], res["data"]["train_classes"]
    assert len(held) == 2 and len(train) == 3 and not set(held) & set(train)
    np.savez(tmp_path / "v.npz", x=np.zeros((20, 6), np.float32), y=np.repeat(np.arange(4), 5))
    capsys.readouterr()
    assert main(_adapt(run, "tensors", tmp_path / "v.npz", tmp_path / "o2")) == 2
    err = capsys.readouterr().err
    assert "holds inputs of shape [6]" in err and "[1, 28, 28]" in err
    assert not (tmp_path / "o2").exists()


def test_a_meta_run_is_reused_on_the_same_images_and_model_under_other_paths(
        folder_run, tmp_path, monkeypatch):
    """The images of a --meta-dir run are their sha256 and classes, and a model folder its
    absolute path: run from another working folder, with other paths to the same folder
    and run, the finished meta-run is reused (QA: refused on 'data.data')."""
    run, _ = folder_run
    write_image_folder(tmp_path / "other", classes=4, per_class=6, seed=5, mixed=False)
    (tmp_path / "elsewhere").mkdir()
    shutil.copytree(run, tmp_path / "model")
    meta = ["--approaches", "probe-ridge", "--steps", "2", "--meta", "fomaml",
            "--meta-iterations", "2", "--meta-batch", "1", "--split-fractions", "0.5,0,0.5"]
    monkeypatch.chdir(tmp_path)
    assert main(_adapt("model", "folder", "other", tmp_path / "o1", *meta)) == 0
    latest = (tmp_path / "o1/meta/fomaml/LATEST").read_text()
    monkeypatch.chdir(tmp_path / "elsewhere")
    assert main(_adapt(tmp_path / "model", "folder", "../other/", tmp_path / "o2", *meta,
                       "--meta-dir", str(tmp_path / "o1/meta"))) == 0
    assert (tmp_path / "o1/meta/fomaml/LATEST").read_text() == latest     # reused
    config = json.loads((tmp_path / "o2/results.json").read_text())["meta"]["fomaml"]["config"]
    assert config["data"]["data"] == str(tmp_path / "other")
    assert config["model"] == str(tmp_path / "model")


def test_bad_labels_and_too_few_classes_name_the_data(folder_run, tmp_path, capsys):
    """Errors of Episodes name the --data file or folder, not Episodes (QA)."""
    run, _ = folder_run
    np.savez(tmp_path / "f.npz", x=np.zeros((8, 1, 28, 28), np.uint8), y=np.zeros(8))
    one = write_image_folder(tmp_path / "one", classes=1, per_class=6, mixed=False)
    for family, data, message in [
            ("tensors", tmp_path / "f.npz", f"tensor file {tmp_path / 'f.npz'}: y must be int "
                                            f"labels [N] with N = 8 (as x), got torch.float64"),
            ("folder", one, f"image folder {one}: ways=2 exceeds the 1 classes available")]:
        out = tmp_path / "out"
        assert main(_adapt(run, family, data, out, "--approaches", "probe-ridge")) == 2
        err = capsys.readouterr().err
        assert f"metaloop adapt: error: {message}" in err and not out.exists()


@pytest.mark.parametrize("change,message", [
    ("no-data", "--family folder needs --data PATH: an image folder"),
    ("root", "--root applies to the built-in families; give your data as --data"),
    ("delimiter", "--delimiter applies to --family table, not folder"),
    ("minilm", "--model minilm is a text encoder; family folder needs an image model"),
    ("missing", "does not exist"),
    ("text-column", "--text-column"),
])
def test_bad_input_is_named_and_writes_nothing(folder_run, tmp_path, capsys, change, message):
    run, photos = folder_run
    out = tmp_path / "out"
    argv = _adapt(run, "folder", photos, out, "--approaches", "probe-ridge")
    if change == "no-data":
        i = argv.index("--data")
        del argv[i:i + 2]
    elif change == "root":
        argv += ["--root", str(photos)]
    elif change == "delimiter":
        argv += ["--delimiter", ";"]
    elif change == "minilm":
        argv[argv.index("--model") + 1] = "minilm"
    elif change == "missing":
        argv[argv.index("--data") + 1] = str(tmp_path / "nowhere")
    else:
        argv += ["--text-column", "t"]
    capsys.readouterr()
    assert main(argv) == 2
    assert message in capsys.readouterr().err
    assert not out.exists()


def test_a_run_of_feature_vectors_is_not_an_image_model(tmp_path, capsys):
    from conftest import tensor_config, write_tensor_file
    path = write_tensor_file(tmp_path / "v.npz")
    run = train_run(tmp_path / "r", tensor_config(path))
    capsys.readouterr()
    assert main(_adapt(run, "tensors", path, tmp_path / "out")) == 2
    assert "is a mlp run (family tensors); --family tensors needs an image model" in \
        capsys.readouterr().err


def test_prepare_reads_the_images_as_the_run_does(folder_run):
    """The held-out family's transform is the run's (size, channels, polarity)."""
    run, photos = folder_run
    p = recipe.prepare(recipe.AdaptSettings(model=str(run), family="folder", data=str(photos),
                                            ways=2, tasks=2), given={"model", "family", "data"})
    tf = load_run(run).transform
    assert p.data["transform"] == {k: tf[k] for k in ("image_size", "read_channels", "invert")}
    assert tuple(p.heldout.input_shape) == (tf["channels"], tf["image_size"], tf["image_size"])


def test_a_metaloop_run_for_a_table_is_named_as_a_run_not_an_image_model(method_runs,
                                                                          tmp_path, capsys):
    """A text run given to --family table was called "a metaloop (image) checkpoint"."""
    rows = "".join(f"{w} text {j},{w}\n" for w in ("alpha", "beta", "gamma") for j in range(8))
    (tmp_path / "t.csv").write_text("text,label\n" + rows)
    run = method_runs("protonet")
    capsys.readouterr()
    assert main(["adapt", "--model", run, "--family", "table", "--data",
                 str(tmp_path / "t.csv"), "--ways", "2", "--out", str(tmp_path / "o"),
                 "--approaches", "probe-ridge", "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert f"{run} is a metaloop run; family table adapts a Hugging Face text encoder" in err
    assert "(image)" not in err and not (tmp_path / "o").exists()


def test_a_float64_run_adapts_in_float32_as_every_approach_computes(tmp_path, capsys):
    """``load_run`` keeps a float64 run's dtype; ``adapt`` computes in float32 and failed on
    it ("support_x is torch.float32 but the model's parameters are torch.float64")."""
    photos = write_image_folder(tmp_path / "photos", classes=8, per_class=6, mixed=False)
    run = train_run(tmp_path, folder_config(photos).replace(
        "checkpoint_every = 2\n", 'checkpoint_every = 2\ndtype = "float64"\n'))
    assert {p.dtype for p in load_run(run).learner.model.parameters()} == {torch.float64}
    out = tmp_path / "out"
    assert main(_adapt(run, "folder", photos, out, "--steps", "1", "--approaches",
                       "probe-ridge,finetune-zero")) == 0, capsys.readouterr().err
    res = json.loads((out / "results.json").read_text())
    assert sorted(res["approaches"]) == ["finetune-zero", "probe-ridge"]


def test_an_image_cache_that_cannot_be_written_gives_advice_the_command_can_follow(
        folder_run, tmp_path, capsys):
    """--data takes no cache_dir, so the message must not end 'pass a writable cache_dir'."""
    run, photos = folder_run
    mine = tmp_path / "mine"
    shutil.copytree(photos, mine, ignore=shutil.ignore_patterns(".metaloop-cache"))
    (mine / ".metaloop-cache").write_text("a file where the cache goes")
    out = tmp_path / "out"
    assert main(_adapt(run, "folder", mine, out, "--approaches", "probe-ridge")) == 2
    err = capsys.readouterr().err
    assert "cannot write the decoded image cache" in err and "make it writable" in err
    assert "cache_dir" not in err and not out.exists()


def test_the_default_lora_targets_of_an_image_run_are_read_from_its_checkpoint(folder_run):
    """--record compares the layers LoRA adapts before the model loads: an image run's
    default (its convolutions) is read from the names and shapes in its checkpoint, and is
    what the loaded network gives."""
    run, photos = folder_run
    s = recipe.AdaptSettings(model=str(run), family="folder", data=str(photos))
    network = recipe._body(load_run(run))
    assert recipe.default_lora_targets(s) == sorted(recipe._lora_targets(s, "image", network))
    assert recipe.default_lora_targets(s) == ["conv"]
    assert recipe.default_lora_targets(recipe.AdaptSettings(
        model=str(run / "nothing"), family="folder", data=str(photos))) is None
