"""Your own images for the generative models: an image folder or a tensor file becomes the
same ``ImageData`` as the built-in sets (uint8 ``[N, 1, S, S]``, ink = 255), split into a
seeded, stratified, disjoint train and test set; bad data is a named error."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from metaloop.generative import data as gdata
from metaloop.generative.experiment import Settings, build_model

sys.path.insert(0, str(Path(__file__).resolve().parent))
from user_images import SHAPES, shape_arrays, write_shape_folder  # noqa: E402


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return write_shape_folder(tmp_path_factory.mktemp("user_images") / "shapes")


@pytest.fixture(scope="module")
def npz(tmp_path_factory):
    x, y = shape_arrays()
    path = tmp_path_factory.mktemp("user_tensors") / "shapes.npz"
    np.savez(path, x=x, y=y * 10)                   # labels with gaps: classes "0", "10", "20"
    return path


def _check_images(d: gdata.ImageData, n: int, side: int = 28) -> None:
    assert d.images.dtype == torch.uint8 and d.images.shape == (n, 1, side, side)
    assert d.labels.dtype == torch.int64 and d.labels.shape == (n,)
    # dark outlines on light pages, inverted: background 0, the outline's ink up to 255
    assert int(d.images.max()) == 255
    corners = d.images[:, 0, [0, 0, -1, -1], [0, -1, 0, -1]]                 # [N, 4]
    assert int(corners.max()) < 40
    assert float(d.images.float().mean()) < 0.4 * 255


def test_a_folder_gives_every_class_split_by_class(folder):
    tr = gdata.load(str(folder), "train")
    te = gdata.load_user(folder, "test")
    assert tr.class_names == te.class_names == list(SHAPES)
    assert tr.n_classes == te.n_classes == 3
    _check_images(tr, 54)
    _check_images(te, 6)
    # 10% of 20 per class: 2 of each class in test, 18 in training
    assert torch.bincount(te.labels).tolist() == [2, 2, 2]
    assert torch.bincount(tr.labels).tolist() == [18, 18, 18]
    # each split in a fixed random order, the classes mixed (pictures take the first ones)
    assert tr.labels[:18].unique().numel() == 3 and te.labels[:3].unique().numel() > 1
    # the two splits are disjoint parts of the whole data set, and the same on every call
    whole = gdata.read_user(folder)
    train_idx, test_idx = gdata.split_indices(whole.labels, 3)
    assert torch.equal(whole.images[test_idx], te.images)
    assert torch.equal(whole.images[train_idx], tr.images)
    assert torch.equal(gdata.load_user(folder, "test").images, te.images)
    flat = whole.images.flatten(1)
    for img in te.images.flatten(1):             # no test image is also a training image
        assert not (flat[train_idx] == img).all(1).any()


def test_the_split_is_seeded_stratified_and_disjoint():
    labels = torch.tensor([0] * 30 + [1] * 7 + [2] * 2 + [3] * 1)
    tr, te = gdata.split_indices(labels, 4, test_fraction=0.2, seed=0)
    assert set(tr.tolist()).isdisjoint(te.tolist())
    assert sorted(tr.tolist() + te.tolist()) == list(range(40))
    # 0.2 of 30, 7 (1.4 -> 1), 2 (at least 1, never the last), 1 (stays in training)
    assert torch.bincount(labels[te], minlength=4).tolist() == [6, 1, 1, 0]
    again = gdata.split_indices(labels, 4, test_fraction=0.2, seed=0)
    assert torch.equal(again[0], tr) and torch.equal(again[1], te)
    other = gdata.split_indices(labels, 4, test_fraction=0.2, seed=1)[1]
    assert not torch.equal(other, te)
    assert torch.bincount(labels[other], minlength=4).tolist() == [6, 1, 1, 0]


def test_image_size_and_invert(folder):
    big = gdata.load_user(folder, "train", image_size=32)
    _check_images(big, 54, side=32)
    never = gdata.read_user(folder, invert="never").images
    always = gdata.read_user(folder, invert="always").images
    auto = gdata.read_user(folder).images
    assert torch.equal(auto, always)            # every page is light: auto inverts them all
    # the non-square pages are padded with 0 after inversion, so compare square ones
    square = [i for i, f in enumerate(sorted(p.name for p in (folder / "circle").iterdir()
                                             if not p.name.startswith(".")))
              if int(f.split("_")[1][:2]) % 3 != 1]
    assert (never[square].int() + always[square].int() - 255).abs().max() <= 1


def test_tensor_files_npz_and_pt(npz, tmp_path):
    tr, te = gdata.load_user(npz, "train"), gdata.load_user(npz, "test")
    assert tr.class_names == ["0", "10", "20"] and tr.n_classes == 3
    _check_images(tr, 54)
    _check_images(te, 6)
    x, y = shape_arrays()
    raw = torch.from_numpy(255 - x[:, None])                         # inverted by hand
    whole = gdata.read_user(npz)
    assert torch.equal(whole.images, raw)                            # 28x28: no resampling
    # float RGB, not square, as a .pt with class names: grey, padded, resized to 28
    rgb = torch.from_numpy(x).float().div(255)[:, None].repeat(1, 3, 1, 1)[..., :, 2:26]
    pt = tmp_path / "shapes.pt"
    torch.save({"x": rgb, "y": torch.from_numpy(y), "class_names": list(SHAPES)}, pt)
    d = gdata.load_user(pt, "test")
    assert d.class_names == list(SHAPES)
    _check_images(d, 6)


def test_the_models_take_the_images(folder):
    tr = gdata.load_user(folder, "train", image_size=32)
    s = Settings(model="cvae", data=str(folder), latent=2, hidden=(8,), arch="conv",
                 image_size=32)
    model = build_model("cvae", s, tr.images, tr.n_classes)
    x = gdata.binarize_static(tr.images[:5])                                  # [5, 1, 32, 32]
    loss, _ = model.loss(x, tr.labels[:5])
    assert torch.isfinite(loss)
    assert model.sample(3, y=torch.tensor([0, 1, 2])).shape == (3, 1, 32, 32)


def _colour_arrays(n: int = 12, size: int = 28) -> tuple[np.ndarray, np.ndarray]:
    """uint8 ``[n, 3, size, size]`` light pages with a red, green or blue disc (its class)."""
    yy, xx = np.mgrid[:size, :size]
    x = np.full((n, 3, size, size), 235, dtype=np.uint8)
    y = np.arange(n) % 3
    for i in range(n):
        r = 5 + i % 4
        disc = (yy - size // 2) ** 2 + (xx - size // 2) ** 2 <= r * r
        x[i][:, disc] = 30
        x[i, y[i]][disc] = 220                        # the class's own channel stays bright
    return x, y.astype(np.int64)


def test_colour_images_keep_their_channels(folder, tmp_path):
    x, y = _colour_arrays()
    npz = tmp_path / "discs.npz"
    np.savez(npz, x=x, y=y)
    colour = gdata.read_user(npz, channels=3)
    assert colour.images.dtype == torch.uint8 and colour.images.shape == (12, 3, 28, 28)
    # 28x28 in colour, "auto" keeps colour images as they are: the pixels unchanged
    assert torch.equal(colour.images, torch.from_numpy(x))
    assert torch.equal(gdata.read_user(npz, channels=3, invert="always").images,
                       255 - torch.from_numpy(x))
    # grey: Pillow's L weights, then "auto" inverts the light pages
    w = np.array([0.299, 0.587, 0.114]).reshape(1, 3, 1, 1)
    grey = 255 - np.round((x * w).sum(1, keepdims=True))
    assert (gdata.read_user(npz).images.int() - torch.from_numpy(grey).int()).abs().max() <= 1
    # a folder of grey drawings read in colour: three equal channels; with "always", the
    # same pixels as the grey images that "auto" inverts
    rgb = gdata.read_user(folder, channels=3, invert="always").images
    assert rgb.shape == (60, 3, 28, 28)
    assert torch.equal(rgb[:, 0], rgb[:, 1]) and torch.equal(rgb[:, 0], rgb[:, 2])
    assert (rgb[:, :1].int() - gdata.read_user(folder).images.int()).abs().max() <= 1
    kept = gdata.load_user(folder, "test", channels=3)
    assert float(kept.images.float().mean()) > 0.6 * 255          # light pages, not inverted
    assert gdata.user_data_hash(folder, channels=3) != gdata.user_data_hash(folder)


def test_the_models_take_colour_images(tmp_path):
    x, y = _colour_arrays()
    npz = tmp_path / "discs.npz"
    np.savez(npz, x=x, y=y)
    tr = gdata.load_user(npz, "train", channels=3)
    for arch in ("mlp", "conv"):
        s = Settings(model="cvae", data=str(npz), latent=2, hidden=(8,), arch=arch,
                     likelihood="gaussian", binarize="none", channels=3)
        model = build_model("cvae", s, tr.images, tr.n_classes)
        loss, _ = model.loss(gdata.to_unit(tr.images[:4]), tr.labels[:4])
        assert torch.isfinite(loss)
        assert model.sample(3, y=torch.tensor([0, 1, 2])).shape == (3, 3, 28, 28)


def test_the_hash_follows_the_data(folder, npz, tmp_path):
    h = gdata.user_data_hash(folder)
    assert h == gdata.user_data_hash(folder) and len(h) == 64
    assert gdata.user_data_hash(folder, image_size=32) != h
    assert gdata.user_data_hash(npz) != h
    copy = write_shape_folder(tmp_path / "copy", per_class=4)
    before = gdata.user_data_hash(copy)
    Image.new("L", (30, 30), 255).save(copy / "cross" / "blank.png")
    assert gdata.user_data_hash(copy) != before


@pytest.mark.parametrize("make, message", [
    (lambda p: p / "missing", "unknown data set '.*missing': not one of the built-in"),
    (lambda p: (p / "notes.txt", (p / "notes.txt").write_text("hi"))[0],
     "a file must be a tensor file .npz or .pt"),
    (lambda p: ((p / "empty" / "a").mkdir(parents=True), p / "empty")[1],
     "holds no images in the layout root/<class>/<image>"),
    (lambda p: write_shape_folder(p / "few", per_class=1),
     r"3 image\(s\) in 3 class\(es\) .* too few to hold out a test set: test fraction 0.1 "
     r"leaves 3 training and 0 test"),
    (lambda p: (np.savez(p / "f.npz", x=np.full((6, 4, 4), 2.0), y=np.arange(6) % 2),
                p / "f.npz")[1], r"float pixels x must lie in \[0, 1\], got range \[2, 2\]"),
    (lambda p: (np.savez(p / "e.npz", x=np.full((6, 4, 4), 1 + 1e-7), y=np.arange(6) % 2),
                p / "e.npz")[1],                    # was "got range [1, 1]": no problem seen
     r"float pixels x must lie in \[0, 1\], got range \[1.0000001, 1.0000001\] \(96 "
     r"pixel\(s\) above 1\): 0..255 pixels\? scale them"),
    (lambda p: (np.savez(p / "n.npz", x=np.full((6, 4, 4), -0.25), y=np.arange(6) % 2),
                p / "n.npz")[1],                    # standardised: not probabilities of ink
     r"float pixels x must lie in \[0, 1\] for the vae \(each pixel is a probability of "
     r"ink\), got range \[-0.25, -0.25\] \(96 pixel\(s\) below 0\)"),
    (lambda p: (np.savez(p / "i.npz", x=np.full((6, 4, 4), 300), y=np.arange(6) % 2),
                p / "i.npz")[1], r"x must be uint8 images \(0..255\) or floating point, got "
                                 r"torch.int64"),
    (lambda p: (np.savez(p / "s.npz", x=np.zeros((6, 2, 4, 4)), y=np.arange(6) % 2),
                p / "s.npz")[1], r"x must be images \[N, H, W\] or \[N, C, H, W\] with C = 1 "
                                 r"or 3"),
    (lambda p: (np.savez(p / "hwc.npz", x=np.zeros((6, 5, 4, 3), np.uint8),
                         y=np.arange(6) % 2), p / "hwc.npz")[1],       # as NumPy lays it out
     r"got shape \[6, 5, 4, 3\]; channels last, .* Store x.transpose\(0, 3, 1, 2\)"),
    (lambda p: (np.savez(p / "y.npz", x=np.zeros((6, 4, 4)), y=np.arange(5)),
                p / "y.npz")[1], r"y must be integer labels \[N\] with N = 6"),
    (lambda p: (np.savez(p / "k.npz", x=np.zeros((6, 4, 4))), p / "k.npz")[1],
     r"lacks \['y'\]"),
])
def test_bad_data_is_named(make, message, tmp_path):
    with pytest.raises(ValueError, match=message):
        gdata.load_user(make(tmp_path), "train")


def test_options_that_do_not_fit_the_data_are_named(folder):
    with pytest.raises(ValueError, match=r"image_size=32 appl\(ies\) to your own images"):
        gdata.load("fashion-mnist", "train", image_size=32)
    with pytest.raises(ValueError, match="invert='never', test_fraction=0.5 appl"):
        gdata.load("omniglot", "test", invert="never", test_fraction=0.5)
    with pytest.raises(ValueError, match="resample 'bicubic' applies to the Omniglot"):
        gdata.load(str(folder), "train", resample="bicubic")
    with pytest.raises(ValueError, match="root='elsewhere' is the built-in data sets' folder"):
        gdata.load(str(folder), "train", root="elsewhere")
    for bad in (0, 1, 1.5, -0.1):
        with pytest.raises(ValueError, match="test_fraction must be a number strictly "
                                             "between 0 and 1"):
            gdata.load_user(folder, "train", test_fraction=bad)
    with pytest.raises(ValueError, match="image_size must be an int >= 4, got 2"):
        gdata.load_user(folder, "train", image_size=2)
    with pytest.raises(ValueError, match="invert must be one of"):
        gdata.load_user(folder, "train", invert="sometimes")
    for bad in (2, 4, True, "3"):
        with pytest.raises(ValueError, match=r"channels must be 1 \(grey\) or 3 \(RGB colour\)"):
            gdata.load_user(folder, "train", channels=bad)
    with pytest.raises(ValueError, match=r"channels=3 appl\(ies\) to your own images .* is "
                                         r"grey 28x28 images"):
        gdata.load("fashion-mnist", "train", channels=3)
    with pytest.raises(ValueError, match="unknown split 'val'"):
        gdata.load_user(folder, "val")


def test_one_class_is_refused_where_classes_are_needed(tmp_path):
    one = gdata.load_user(write_shape_folder(tmp_path / "one", per_class=20,
                                             shapes=("circle",)), "train")
    assert one.n_classes == 1 and len(one.images) == 18
    with pytest.raises(ValueError, match=r"the conditional VAE needs at least 2 classes, "
                                         r"but .* has 1 \(circle\)"):
        gdata.require_classes(one, "one", "the conditional VAE")


def test_a_path_that_is_neither_a_folder_nor_a_file_is_named_as_such(tmp_path):
    # QA: /dev/null was reported as a tensor file that "does not exist"
    import os

    os.mkfifo(tmp_path / "pipe")
    for path in (Path("/dev/null"), tmp_path / "pipe"):
        for read in (gdata.check_user_path, gdata.read_user):
            with pytest.raises(ValueError, match=f"data {path} exists but is neither a folder "
                                                 f"nor a regular file"):
                read(path)


def test_an_image_cache_that_cannot_be_written_gives_advice_vae_can_follow(tmp_path):
    """``metaloop vae --data`` takes no cache_dir, so the message must not end 'pass a
    writable cache_dir'."""
    root = write_shape_folder(tmp_path / "shapes", per_class=2)
    (root / ".metaloop-cache").write_text("a file where the cache goes")
    with pytest.raises(ValueError, match=r"cannot write the decoded image cache.*make it "
                                         r"writable") as e:
        gdata.read_user(root)
    assert "cache_dir" not in str(e.value)


@pytest.mark.parametrize("dtype", ["uint16", "uint32", "int64"])
def test_a_tensor_file_of_another_dtype_than_uint8_or_float_is_refused_as_train_refuses_it(
        dtype, tmp_path):
    """uint16 and uint32 images crashed in torch's min() (exit 1), and int64 images were
    read, where train, adapt and forgetting refuse them: one check for all commands."""
    from metaloop.tasks.episodes import Episodes

    path = tmp_path / "x.npz"
    np.savez(path, x=np.ones((8, 6, 6), dtype=dtype), y=np.arange(8) % 2)
    with pytest.raises(ValueError) as vae:
        gdata.load_user(path, "train")
    with pytest.raises(ValueError) as train:
        Episodes.from_tensors(path, ways=2, shots=1, queries=1)
    assert str(vae.value) == str(train.value)
    assert str(vae.value).startswith(f"tensor file {path}: x must be uint8 images (0..255) or "
                                     f"floating point, got torch.{dtype}")


def test_class_names_that_differ_only_in_unicode_form_are_refused_as_train_refuses_them(
        tmp_path):
    path = tmp_path / "x.npz"
    np.savez(path, x=np.zeros((8, 6, 6), np.uint8), y=np.arange(8) % 2,
             class_names=np.array(["caf\u00e9", "cafe\u0301"]))
    with pytest.raises(ValueError, match=r"differ only in their Unicode form"):
        gdata.load_user(path, "train")
