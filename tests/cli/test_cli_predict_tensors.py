"""``metaloop predict`` with ``.npz`` / ``.pt`` files: the support file's labelled examples
adapt the run, and each row of the query file is classified, for a run of feature vectors
and for an image run; what does not fit is named, and nothing is written."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from metaloop.cli.main import main
from metaloop.recipes.predict import classify_tensors
from metaloop.runs import load_run

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from conftest import refused, tensor_config, write_tensor_file  # noqa: E402


@pytest.fixture(scope="module")
def vector_run(tmp_path_factory, trained_run):
    """A ProtoNet MLP run on 6-d feature vectors (``write_tensor_file``)."""
    path = write_tensor_file(tmp_path_factory.mktemp("vectors") / "v.npz")
    return trained_run(tensor_config(path, 'name = "protonet"\n'))


def _files(d: Path, labels=(3, 7, 3, 7, 11, 11), query_rows=4, dim=6, names=None):
    """support.npz (one example per label, near 3 x one-hot(label % 6)) and query.npz."""
    d.mkdir(parents=True, exist_ok=True)
    g = torch.Generator().manual_seed(1)
    y = torch.tensor(labels)
    x = torch.randn(len(y), dim, generator=g) * 0.1 + \
        torch.nn.functional.one_hot(y % 6, 6)[:, :dim] * 3
    extra = {"class_names": np.array(names)} if names is not None else {}
    np.savez(d / "support.npz", x=x.numpy(), y=y.numpy(), **extra)
    q = x[:query_rows] + torch.randn(len(x[:query_rows]), dim, generator=g) * 0.1
    np.savez(d / "query.npz", x=q.numpy())
    return d / "support.npz", d / "query.npz"


def test_rows_of_the_query_file_are_classified_as_an_independent_protonet_does(
        vector_run, tmp_path, capsys):
    """softmax(-scale ||f(q) - c_k||^2), with c_k the class means of the support features;
    labels with gaps (3, 7, 11) are classes named by their value."""
    s, q = _files(tmp_path)
    capsys.readouterr()
    assert main(["predict", "--checkpoint", str(vector_run), "--support", str(s), "--query",
                 str(q), "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["index"] for r in rows] == [0, 1, 2, 3]
    classes = ["3", "7", "11"]
    got = torch.tensor([[r["scores"][c] for c in classes] for r in rows], dtype=torch.float64)
    net = load_run(vector_run).network
    sup = np.load(s)
    with torch.no_grad():
        fs = net.backbone(torch.from_numpy(sup["x"]), head=False)                # [6, D]
        y = torch.from_numpy(sup["y"])
        protos = torch.stack([fs[y == int(c)].mean(0) for c in classes])         # [3, D]
        fq = net.backbone(torch.from_numpy(np.load(q)["x"]), head=False)         # [4, D]
        want = (-net.log_scale.exp() * torch.cdist(fq, protos) ** 2).softmax(-1)
    np.testing.assert_allclose(got, want.double(), atol=2e-6)
    assert [r["class"] for r in rows] == ["3", "7", "3", "7"]
    capsys.readouterr()
    assert main(["predict", "--checkpoint", str(vector_run), "--support", str(s), "--query",
                 str(q), "--out", str(tmp_path / "out")]) == 0
    assert capsys.readouterr().out == "0\t3\n1\t7\n2\t3\n3\t7\n"
    res = json.loads((tmp_path / "out" / "results.json").read_text())
    assert res["classes"] == classes and res["predictions"] == rows
    assert "invert" not in res["settings"] and res["settings"]["scoring"] == "as-trained"


def test_class_names_and_a_pt_file(vector_run, tmp_path):
    s, q = _files(tmp_path, labels=(0, 1, 0, 1), names=["cat", "dog"])
    torch.save({"x": torch.from_numpy(np.load(q)["x"])}, tmp_path / "q.pt")
    pred = classify_tensors(load_run(vector_run), s, tmp_path / "q.pt")
    assert pred.classes == ["cat", "dog"] and pred.labels == ["cat", "dog", "cat", "dog"]
    torch.testing.assert_close(pred.probs.sum(-1), torch.ones(4))


def test_an_image_run_classifies_arrays_of_images(method_runs, tmp_path, capsys):
    """uint8 [N, 28, 28] arrays read as training reads them: [N, 1, 28, 28] in [0, 1]; the
    same images as PNG files in folders give the same scores."""
    from PIL import Image

    run = method_runs("protonet")
    g = torch.Generator().manual_seed(0)
    glyphs = ((torch.rand(3, 28, 28, generator=g) > 0.8) * 255).to(torch.uint8)  # ink high
    np.savez(tmp_path / "s.npz", x=glyphs.numpy(), y=np.arange(3))
    np.savez(tmp_path / "q.npz", x=glyphs.flip(0).numpy())
    pred = classify_tensors(load_run(run), tmp_path / "s.npz", tmp_path / "q.npz")
    for k in range(3):
        (tmp_path / "s" / str(k)).mkdir(parents=True)
        Image.fromarray(glyphs[k].numpy()).save(tmp_path / "s" / str(k) / "0.png")
        (tmp_path / "q").mkdir(exist_ok=True)
        Image.fromarray(glyphs.flip(0)[k].numpy()).save(tmp_path / "q" / f"{k}.png")
    capsys.readouterr()
    assert main(["predict", "--checkpoint", run, "--support", str(tmp_path / "s"), "--query",
                 str(tmp_path / "q"), "--json", "--invert", "never", "--no-progress"]) == 0
    rows = json.loads(capsys.readouterr().out)
    folder = torch.tensor([[r["scores"][c] for c in ("0", "1", "2")] for r in rows])
    torch.testing.assert_close(pred.probs, folder, atol=1e-6, rtol=0)
    assert pred.labels == ["2", "1", "0"]


@pytest.mark.parametrize("dtype, words", [
    ("uint16", ["x must be uint8 images (0..255) or floating point, got torch.uint16",
                "x / 65535"]),
    ("float32", ["float pixels x must lie in [0, 1], got range [0, 255]", "x / 255"]),
])
def test_a_query_file_of_pixels_training_does_not_read_is_refused_as_the_support_is(
        dtype, words, method_runs, tmp_path, capsys):
    """The query file's x was not checked: uint16 pixels went in unscaled (0..65535) and
    0..255 floats 255 times brighter than a folder's images; the support file with the same
    x is refused with the same words, exit 2."""
    run = method_runs("protonet")
    pixels = np.zeros((3, 28, 28), dtype)
    pixels[:, 10:18, 10:18] = 255
    np.savez(tmp_path / "s.npz", x=(pixels > 0).astype(np.uint8) * 255, y=np.arange(3))
    np.savez(tmp_path / "q.npz", x=pixels)
    np.savez(tmp_path / "bad_s.npz", x=pixels, y=np.arange(3))
    for support, query, bad in (("s.npz", "q.npz", "q.npz"), ("bad_s.npz", "s.npz",
                                                                 "bad_s.npz")):
        refused(["predict", "--checkpoint", run, "--support", str(tmp_path / support),
                 "--query", str(tmp_path / query)], capsys, tmp_path,
                f"tensor file {tmp_path / bad}: ", *words)
    with pytest.raises(ValueError, match=f"tensor file {tmp_path / 'q.npz'}: "):
        classify_tensors(load_run(run), tmp_path / "s.npz", tmp_path / "q.npz")


def test_a_query_of_images_stored_channels_last_is_named_so(method_runs, tmp_path, capsys):
    """The support file's [N, 28, 28, 1] was named channels-last with the permutation; the
    query file's only 'holds examples of shape [28, 28, 1], but RUN reads [1, 28, 28]'."""
    run = method_runs("protonet")
    glyphs = np.zeros((3, 28, 28), np.uint8)
    np.savez(tmp_path / "s.npz", x=glyphs, y=np.arange(3))
    np.savez(tmp_path / "q.npz", x=glyphs[..., None])                        # [3, 28, 28, 1]
    refused(["predict", "--checkpoint", run, "--support", str(tmp_path / "s.npz"), "--query",
             str(tmp_path / "q.npz")], capsys, tmp_path,
            "holds examples of shape [28, 28, 1], but", "reads [1, 28, 28]; they look "
            "channels-last [N, H, W, C]: save x as [N, C, H, W] (x.permute(0, 3, 1, 2)")

def test_what_does_not_fit_is_named(vector_run, method_runs, tmp_path, capsys):
    s, q = _files(tmp_path)
    base = ["predict", "--checkpoint", str(vector_run), "--support", str(s), "--query", str(q)]
    refused([*base, "--invert", "never"], capsys, tmp_path, "--invert applies to image files",
             "is a tensor file of examples", "drop --invert")
    refused([*base, "--delimiter", ";"], capsys, tmp_path, "--delimiter applies to a table")
    refused([*base, "--support-shift", "1"], capsys, tmp_path, "shift images",
             "feature vectors")
    wide, _ = _files(tmp_path / "w", dim=4)
    refused([*base[:4], str(wide), *base[5:]], capsys, tmp_path, "examples of shape [4]",
             "reads [6]")
    one, _ = _files(tmp_path / "o", labels=(5, 5))
    refused([*base[:4], str(one), *base[5:]], capsys, tmp_path, "examples of 1 class",
             "at least 2 classes")
    (tmp_path / "bad.npz").write_text("not a zip")
    refused([*base[:6], str(tmp_path / "bad.npz")], capsys, tmp_path,
             "is not an .npz archive")
    refused([*base[:6], str(tmp_path)], capsys, tmp_path, f"the query {tmp_path} is a folder",
            "a tensor file of labelled examples")
    np.savez(tmp_path / "flat.npz", x=np.zeros(6, np.float32))
    refused([*base[:6], str(tmp_path / "flat.npz")], capsys, tmp_path,
            "holds x as one row of 6 values", "x[None] ([1, 6])")
    np.savez(tmp_path / "nox.npz", y=np.arange(3))
    refused([*base[:6], str(tmp_path / "nox.npz")], capsys, tmp_path, "lacks ['x']")
    # a run of vectors given image folders says what it reads instead
    refused(["predict", "--checkpoint", str(vector_run), "--support", str(tmp_path),
              "--query", str(tmp_path)], capsys, tmp_path, "'mlp'",
             "classifies the rows of .npz or .pt files")
    # a sinusoid run does not classify
    sine = method_runs("maml", family="sinusoid")
    refused(["predict", "--checkpoint", sine, "--support", str(s), "--query", str(q)],
             capsys, tmp_path, "needs a classification run", "'sinusoid'")


def test_an_ensemble_member_that_reads_other_vectors_is_named(vector_run, tmp_path, capsys,
                                                             trained_run):
    """Only the first member's input shape was checked: a second member of 8-d vectors
    failed inside its MLP ("MLP expects inputs [..., in_dim=8]"), naming no run."""
    g = torch.Generator().manual_seed(0)
    y = torch.arange(12).repeat_interleave(10)
    np.savez(tmp_path / "v8.npz", x=torch.randn(120, 8, generator=g).numpy(), y=y.numpy())
    wide = trained_run(tensor_config(tmp_path / "v8.npz", 'name = "protonet"\n'))
    s, q = _files(tmp_path)
    refused(["predict", "--checkpoint", str(vector_run), str(wide), "--support", str(s),
             "--query", str(q)], capsys, tmp_path, "examples of shape [6]",
            f"but {wide} reads [8]")


def test_support_labels_are_checked_as_training_checks_them(vector_run, tmp_path, capsys):
    """Names shorter than the labels (an IndexError), float labels (a TypeError), negative
    labels (classes[-1] wrapped to a wrong name) and repeated names (scores collapsed) were
    not refused; now each is, with training's message, and names of classes without
    examples are still dropped."""
    s, q = _files(tmp_path, labels=(0, 1, 2, 0, 1, 2))
    sup = np.load(s)
    x, y = sup["x"], sup["y"]
    base = ["predict", "--checkpoint", str(vector_run), "--query", str(q), "--support"]
    cases = {"short": ({"y": y, "class_names": np.array(["a", "b"])},
                       ["labels must be in [0, 2) (len(class_names))", "found 0..2"]),
             "float": ({"y": y + 0.5}, ["y must be int labels [N] with N = 6", "float64"]),
             "negative": ({"y": y - 1}, ["labels must be in [0, 2)", "found -1..1"]),
             "dup": ({"y": y, "class_names": np.array(["a", "a", "b"])},
                     ["class_names has duplicates: ['a']"])}
    for name, (arrays, words) in cases.items():
        np.savez(tmp_path / f"{name}.npz", x=x, **arrays)
        err = refused([*base, str(tmp_path / f"{name}.npz")], capsys, tmp_path,
                      f"the support file {tmp_path / name}.npz:", *words)
        assert "Traceback" not in err
        with pytest.raises(ValueError, match="the support file"):
            classify_tensors(load_run(vector_run), tmp_path / f"{name}.npz", q)
    np.savez(tmp_path / "gap.npz", x=x[:4], y=np.array([0, 2, 0, 2]),
             class_names=np.array(["a", "b", "c"]))               # "b" has no examples
    assert classify_tensors(load_run(vector_run), tmp_path / "gap.npz", q).classes == \
        ["a", "c"]


def test_scoring_is_refused_for_a_run_without_batchnorm(vector_run, tmp_path, capsys):
    """An MLP has no BatchNorm: each query is scored on its own either way, and --scoring
    was accepted by eval and predict and changed nothing."""
    s, q = _files(tmp_path)
    for how in ("non-transductive", "transductive", "as-trained"):
        refused(["predict", "--checkpoint", str(vector_run), "--support", str(s), "--query",
                 str(q), "--scoring", how], capsys, tmp_path, f"--scoring {how}",
                "no BatchNorm layers", "drop --scoring")
        refused(["eval", "--checkpoint", str(vector_run), "--scoring", how, "--no-progress"],
                capsys, tmp_path, "no BatchNorm layers")


def test_an_image_run_trained_on_a_tensor_file_knows_the_size_it_read(
        trained_run, tmp_path, capsys):
    """A Conv4 run trained on 14 x 14 images of a tensor file stores that shape: arrays of
    another size are refused (the strided Conv4 would read them without complaint), and
    image folders are resized to 14 x 14, as the file's images were."""
    from PIL import Image

    g = torch.Generator().manual_seed(0)
    glyphs = (torch.rand(6, 14, 14, generator=g) > 0.7).to(torch.uint8) * 255   # [6, 14, 14]
    x = glyphs.repeat_interleave(8, 0)                                          # [48, 14, 14]
    np.savez(tmp_path / "train.npz", x=x.numpy(), y=np.arange(6).repeat(8))
    run = trained_run(tensor_config(tmp_path / "train.npz", 'name = "protonet"\n').replace(
        'name = "mlp"\nhidden = [16]', 'name = "conv4"\npool = "stride"\nchannels = 8'))
    loaded = load_run(run)
    assert loaded.data["example_shape"] == [1, 14, 14]
    assert loaded.transform["image_size"] == 14
    np.savez(tmp_path / "s.npz", x=glyphs[:3].numpy(), y=np.arange(3))
    np.savez(tmp_path / "q16.npz", x=np.zeros((2, 16, 16), np.uint8))
    refused(["predict", "--checkpoint", str(run), "--support", str(tmp_path / "s.npz"),
             "--query", str(tmp_path / "q16.npz")], capsys, tmp_path,
            "holds examples of shape [1, 16, 16]", "reads [1, 14, 14]")
    np.savez(tmp_path / "q.npz", x=glyphs[:3].flip(0).numpy())
    pred = classify_tensors(loaded, tmp_path / "s.npz", tmp_path / "q.npz")
    for k in range(3):                            # the same glyphs, drawn at 28 x 28
        big = glyphs[k].repeat_interleave(2, 0).repeat_interleave(2, 1).numpy()
        (tmp_path / "fs" / str(k)).mkdir(parents=True)
        Image.fromarray(big).save(tmp_path / "fs" / str(k) / "0.png")
    capsys.readouterr()
    assert main(["predict", "--checkpoint", str(run), "--support", str(tmp_path / "fs"),
                 "--query", str(tmp_path / "fs"), "--invert", "never", "--no-progress"]) == 0
    assert pred.labels == ["2", "1", "0"]
    assert [line.split("\t")[1] for line in capsys.readouterr().out.splitlines()] == \
        ["0", "1", "2"]



def _glyphs(n_per_class: int, classes: int = 6, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``classes`` fixed random 28 x 28 glyphs, each ``n_per_class`` times with noise, as
    float32 images ``[N, 1, 28, 28]`` in [0, 1] and int labels ``[N]``."""
    rng = np.random.default_rng(seed)
    glyph = (rng.random((classes, 1, 28, 28)) > 0.7).astype(np.float32)
    y = np.repeat(np.arange(classes), n_per_class)
    x = np.clip(glyph[y] + rng.normal(0, 0.1, (len(y), 1, 28, 28)), 0, 1).astype(np.float32)
    return x, y


def test_standardised_images_train_evaluate_and_predict_as_they_are(trained_run, tmp_path,
                                                                    capsys):
    """Float images standardised to mean 0 and sd 1 (negative values) were refused by train,
    eval and predict as 'float pixels outside [0, 1]', while ``Episodes(x, y)`` took them;
    now they are read as they are, and the queries (support images with noise) are told
    apart."""
    x, y = _glyphs(10)
    mean, sd = x.mean(), x.std()
    z = ((x - mean) / sd).astype(np.float32)                            # [60, 1, 28, 28]
    assert z.min() < 0 and z.max() > 1
    np.savez(tmp_path / "z.npz", x=z, y=y)
    config = tensor_config(tmp_path / "z.npz", 'name = "protonet"\n').replace(
        'name = "mlp"\nhidden = [16]', 'name = "conv4"\npool = "stride"\nchannels = 4')
    run = trained_run(config)
    capsys.readouterr()
    assert main(["eval", "--checkpoint", str(run), "--out", str(tmp_path / "ev"),
                 "--no-progress"]) == 0
    assert (tmp_path / "ev" / "results.json").is_file()
    xs, ys = _glyphs(1, seed=0)
    xq = np.clip(xs + np.random.default_rng(5).normal(0, 0.05, xs.shape), 0, 1)
    np.savez(tmp_path / "s.npz", x=((xs - mean) / sd).astype(np.float32), y=ys)
    np.savez(tmp_path / "q.npz", x=((xq - mean) / sd).astype(np.float32))
    capsys.readouterr()
    assert main(["predict", "--checkpoint", str(run), "--support", str(tmp_path / "s.npz"),
                 "--query", str(tmp_path / "q.npz"), "--json", "--no-progress"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["index"] for r in rows] == list(range(6))
    assert sum(r["class"] == str(k) for k, r in enumerate(rows)) >= 5, rows
