"""``metaloop vae --data PATH``: an AE, a VAE and a CVAE trained end to end on an image
folder and on a tensor file; the options of the built-in sets and of your own data refused
where they would change nothing; bad data named (exit 2, nothing written); a resumed
protocol run refuses changed data or a changed split."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw

from metaloop.cli.main import main

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "generative"))
from user_images import SHAPES, shape_arrays, write_shape_folder  # noqa: E402

TINY = ["--epochs", "1", "--hidden", "16", "--latent", "2", "--no-progress"]



@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return write_shape_folder(tmp_path_factory.mktemp("vae_user_images") / "shapes")


@pytest.fixture(scope="module")
def npz(tmp_path_factory):
    x, y = shape_arrays()
    path = tmp_path_factory.mktemp("vae_user_tensors") / "shapes.npz"
    np.savez(path, x=x, y=y, class_names=np.array(SHAPES))
    return path


def _vae(data, out, *argv):
    return main(["--threads", "1", "vae", "--data", str(data), "--out", str(out), *argv])


def _png(path: Path) -> bool:
    return path.read_bytes()[:4] == b"\x89PNG"


@pytest.mark.parametrize("model", ["ae", "vae", "cvae"])
def test_the_three_models_train_on_an_image_folder(model, folder, tmp_path):
    out = tmp_path / model
    k = [] if model == "ae" else ["--k", "3"]
    assert _vae(folder, out, "--model", model, *TINY, *k) == 0
    r = json.loads((out / "results.json").read_text())
    assert r["n_train"] == 54 and r["n_test"] == 6                   # 2 of 20 per class held out
    s = r["settings"]
    assert s["data"] == str(folder.resolve()) and s["image_size"] == 28
    assert s["invert"] == "auto" and s["test_fraction"] == 0.1
    assert s["likelihood"] == "bernoulli" and s["binarize"] == "dynamic"
    assert len(r["data_hash"]) == 64
    assert _png(out / "samples.png") and (out / "model.safetensors").stat().st_size > 0
    assert ("classes.png" in r["pictures"]) == (model == "cvae")
    if model == "cvae":
        assert _png(out / "classes.png")
    else:
        assert np.isfinite(r["test"]["nll"] if model == "vae" else r["test"]["recon"])


def test_a_tensor_file_with_another_image_size_and_test_fraction(npz, tmp_path):
    out = tmp_path / "npz"
    assert _vae(npz, out, "--model", "cvae", "--arch", "conv", "--image-size", "32",
                "--test-fraction", "0.25", "--likelihood", "gaussian", "--epochs", "1",
                "--latent", "2", "--k", "2", "--no-progress") == 0
    r = json.loads((out / "results.json").read_text())
    assert r["n_train"] == 45 and r["n_test"] == 15                  # 5 of 20 per class
    assert r["settings"]["image_size"] == 32 and r["settings"]["binarize"] == "none"
    assert _png(out / "samples.png") and _png(out / "classes.png")
    with Image.open(out / "samples.png") as im:
        assert im.mode == "L"


def test_colour_images_train_and_are_drawn_in_colour(tmp_path):
    data = tmp_path / "discs"
    for k, rgb in enumerate([(220, 30, 30), (30, 180, 40), (40, 60, 220)]):
        (data / f"c{k}").mkdir(parents=True)
        for i in range(10):
            im = Image.new("RGB", (30 + i % 3, 30), (240, 240, 230))
            ImageDraw.Draw(im).ellipse([4 + i % 4, 4, 25, 25], fill=rgb)
            im.save(data / f"c{k}" / f"{i}.png")
    out = tmp_path / "cvae"
    assert _vae(data, out, "--model", "cvae", "--channels", "3", "--likelihood",
                "cbernoulli", "--arch", "conv", "--epochs", "1", "--latent", "2", "--k", "2",
                "--no-progress") == 0
    r = json.loads((out / "results.json").read_text())
    assert r["settings"]["channels"] == 3 and r["settings"]["binarize"] == "none"
    for name in ("samples.png", "reconstructions.png", "interpolations.png", "classes.png"):
        with Image.open(out / name) as im:
            assert im.mode == "RGB", name
    with Image.open(out / "reconstructions.png") as im:            # the test images' colours
        px = np.asarray(im).reshape(-1, 3).astype(int)
    assert ((px[:, 0] > 180) & (px[:, 1] < 80)).sum() > 50           # red discs shown red
    assert ((px[:, 2] > 180) & (px[:, 0] < 80)).sum() > 50           # blue discs shown blue


@pytest.mark.parametrize("run", [["--sweep-latent", "2", "--k", "0"],
                                 ["--compare-inversion", "--latent", "2",
                                  "--invert-steps", "5", "--test-fraction", "0.3"]])
def test_the_classifier_scored_runs_take_another_image_size(run, folder, tmp_path):
    out = tmp_path / "scored"
    assert _vae(folder, out, *run, "--image-size", "32", "--epochs", "1", "--hidden", "16",
                "--quality-samples", "12", "--no-progress") == 0
    r = json.loads((out / "results.json").read_text())
    assert r["settings"]["image_size"] == 32
    picture = "sweep.png" if "--sweep-latent" in run else "inversion_compare.png"
    assert _png(out / picture)


def _refused(capsys, out: Path, rc: int) -> str:
    assert rc == 2
    assert not out.exists()
    return capsys.readouterr().err


@pytest.mark.parametrize("argv, named", [
    (["--image-size", "32"], "--image-size 32 would change nothing in this run (--model vae): "
                             "--data fashion-mnist is a built-in data set"),
    (["--invert", "never"], "--invert never would change nothing"),
    (["--test-fraction", "0.2"], "--test-fraction 0.2 would change nothing"),
    (["--channels", "3"], "--channels 3 would change nothing in this run (--model vae): "
                          "--data fashion-mnist is a built-in data set, grey 28x28 images"),
    (["--protocol", "iwae", "--test-fraction", "0.2"],
     "--test-fraction 0.2 would change nothing in this run (--protocol iwae)"),
])
def test_your_own_datas_options_are_refused_for_a_built_in_set(argv, named, tmp_path,
                                                                  capsys):
    out = tmp_path / "run"
    capsys.readouterr()
    err = _refused(capsys, out, _vae("fashion-mnist", out, "--root", str(tmp_path / "none"),
                                     *TINY, *argv))
    assert named in err and err.rstrip().endswith(f"drop {named.split()[0]}")


@pytest.mark.parametrize("argv, named", [
    (["--resample", "bicubic"], "--resample bicubic would change nothing in this run "
                                "(--model vae): --resample is the Omniglot data sets'"),
    (["--root", "elsewhere"], "--root elsewhere would change nothing in this run (--model "
                              "vae): --root is where the built-in data sets are found"),
])
def test_options_that_do_not_fit_your_own_data_are_refused(argv, named, folder, tmp_path,
                                                           capsys):
    out = tmp_path / "run"
    capsys.readouterr()
    # --sweep-latent sets the latent sizes itself (it refuses --latent)
    tiny = [a for a in TINY if a not in ("--latent", "2")] if "--sweep-latent" in argv else TINY
    err = _refused(capsys, out, _vae(folder, out, *tiny, *argv))
    assert named in err


def _one_class(p: Path) -> Path:
    return write_shape_folder(p / "one", per_class=20, shapes=("circle",))


@pytest.mark.parametrize("make, argv, message", [
    (lambda p: p / "nowhere", [], "unknown data set '{p}/nowhere': not one of the built-in "
                                  "data sets (fashion-mnist, omniglot, omniglot-mixed)"),
    (lambda p: (p / "a.csv", (p / "a.csv").write_text("1,2"))[0], [],
     "a file must be a tensor file .npz or .pt with x and y (got '.csv')"),
    (lambda p: ((p / "empty" / "cls").mkdir(parents=True), p / "empty")[1], [],
     "holds no images in the layout root/<class>/<image>"),
    (lambda p: write_shape_folder(p / "few", per_class=1), [],
     "3 image(s) in 3 class(es) ('circle': 1, 'cross': 1, 'square': 1) are too few to hold "
     "out a test set: test fraction 0.1 leaves 3 training and 0 test image(s)"),
    (_one_class, ["--model", "cvae", "--k", "2"],
     "the conditional VAE (--model cvae) needs at least 2 classes, but"),
    (lambda p: (np.savez(p / "x.npz", x=np.full((8, 5, 5), 1.5), y=np.arange(8) % 2),
                p / "x.npz")[1], [], "float pixels x must lie in [0, 1], got range [1.5, 1.5]"),
])
def test_bad_data_is_named_with_exit_2_and_nothing_written(make, argv, message, tmp_path,
                                                           capsys):
    out = tmp_path / "run"
    data = make(tmp_path)
    capsys.readouterr()
    err = _refused(capsys, out, _vae(data, out, *TINY, *argv))
    assert message.format(p=tmp_path) in err, err
    assert err.startswith("metaloop vae: error: ")


def test_a_resumed_protocol_run_refuses_changed_data_or_split(tmp_path, capsys):
    data = write_shape_folder(tmp_path / "shapes", per_class=10)
    out = tmp_path / "iwae"
    run = ["--protocol", "iwae", "--latent", "2", "--hidden", "8", "--stages", "2",
           "--curve-k", "2", "--curve-examples", "4", "--no-progress"]
    assert _vae(data, out, *run, "--until-pass", "1") == 0
    latest = (out / "LATEST").read_text()
    capsys.readouterr()
    # another split of the same images
    assert _vae(data, out, *run, "--resume", "--test-fraction", "0.2") == 2
    assert "trained with other settings: test_fraction=0.1 (now 0.2)" in capsys.readouterr().err
    # the same images in colour
    assert _vae(data, out, *run, "--resume", "--channels", "3") == 2
    assert "trained with other settings: channels=1 (now 3)" in capsys.readouterr().err
    # changed images
    Image.new("L", (30, 30), 255).save(data / "cross" / "blank.png")
    assert _vae(data, out, *run, "--resume") == 2
    err = capsys.readouterr().err
    assert f"the data {data.resolve()} is not what the run in {out} was trained" in err
    assert (out / "LATEST").read_text() == latest                   # no pass was added
    (data / "cross" / "blank.png").unlink()
    # the same data again: it continues, to the end, and measures the test set
    assert _vae(data, out, *run, "--resume", "--k", "2") == 0
    state = json.loads((out / "curve.json").read_text())
    assert state["passes"] == state["total_passes"] == 4
    assert state["settings"]["data_hash"] and state["settings"]["test_fraction"] == 0.1


def test_the_inversion_studies_refuse_a_test_set_too_small_to_score_class_by_class(
        folder, tmp_path, capsys):
    """The class-wise Frechet distance needs, in one class, 2 images to score and 2 real test
    images as the reference: 2 test images per class cannot give both, so the studies stop
    before training anything; half of each class held out can."""
    tiny = ["--epochs", "1", "--hidden", "16", "--latent", "2", "--no-progress",
            "--classifier-epochs", "1", "--invert-steps", "5"]
    for study in (["--compare-inversion"], ["--inversion-transfer", "--invert-lrs", "0.05"]):
        out = tmp_path / study[0].strip("-")
        argv = tiny if study[0] == "--compare-inversion" else [
            "--no-progress", "--classifier-epochs", "1", "--invert-steps", "5"]
        assert _vae(folder, out, *study, *argv) == 2
        err = capsys.readouterr().err
        assert "frechet_class" in err and "but no class has both" in err
        assert "raise --test-fraction (now 0.1) or add images" in err
        assert not out.exists()
    out = tmp_path / "enough"
    assert _vae(folder, out, "--compare-inversion", *tiny, "--test-fraction", "0.5",
                "--quality-samples", "30") == 0
    r = json.loads((out / "results.json").read_text())
    assert r["n_test"] == 30 and r["scores"]["real"]["frechet_class"] >= 0


@pytest.mark.parametrize("special", ["/dev/null", "fifo"])
def test_data_that_is_neither_a_folder_nor_a_file_is_named_as_such(special, tmp_path, capsys):
    # QA: --data /dev/null said "tensor file /dev/null does not exist"
    import os

    if special == "fifo":
        special = tmp_path / "pipe"
        os.mkfifo(special)
    out = tmp_path / "run"
    capsys.readouterr()
    err = _refused(capsys, out, _vae(special, out, *TINY))
    assert f"data {special} exists but is neither a folder nor a regular file" in err
    assert "does not exist" not in err and err.count("\n") == 1


def test_class_folders_named_with_dollars_or_another_script_are_drawn(tmp_path):
    # "a $x^$" was read as mathtext and stopped the run at classes.png, after training;
    # "日本" was drawn as empty boxes, with a warning
    data = write_shape_folder(tmp_path / "写真", per_class=6, shapes=("circle", "cross"))
    (data / "circle").rename(data / "a $x^$")
    (data / "cross").rename(data / "日本")
    out = tmp_path / "out"
    assert _vae(data, out, "--model", "cvae", *TINY, "--k", "2", "--test-fraction",
                "0.34") == 0
    r = json.loads((out / "results.json").read_text())
    assert "classes.png" in r["pictures"] and _png(out / "classes.png")
