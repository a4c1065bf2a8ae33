"""Omniglot loading: real splits, and packed / PNG folder / zip equivalence on a tiny fake set."""

from __future__ import annotations

import hashlib
import os
import platform
import socket
import urllib.error
import urllib.request
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from metaloop.data import omniglot as og
from metaloop.data.omniglot import load_omniglot_images, rotate_ccw

# ----------------------------------------------------------------------------- a fake Omniglot

FAKE = {  # set -> [(alphabet, number of characters)]
    "background": [("Alpha", 2), ("Beta", 1)],
    "evaluation": [("Gamma", 2)],
}
FAKE_SPLITS = {
    "train": ["Alpha/character01/rot000", "Alpha/character01/rot090", "Gamma/character02/rot270"],
    "val": ["Beta/character01/rot180"],
    "test": ["Gamma/character01/rot000", "Alpha/character02/rot090"],
}
FAKE_SPLITS["trainval"] = FAKE_SPLITS["train"] + FAKE_SPLITS["val"]


def _fake_ink(set_name: str) -> tuple[np.ndarray, list[str]]:
    """bool [C, 20, 105, 105] random strokes (ink = True) and the class names."""
    names = [f"{a}/character{i + 1:02d}" for a, n in FAKE[set_name] for i in range(n)]
    rng = np.random.default_rng(len(set_name))
    ink = rng.random((len(names), 20, 105, 105)) < 0.1
    ink[:, :, :30, :10] = True  # an asymmetric blob, so every rotation differs
    return ink, names


def _write_npz(folder: Path, set_name: str) -> None:
    ink, names = _fake_ink(set_name)
    alphabets = sorted({n.split("/")[0] for n in names})
    np.savez_compressed(
        folder / f"omniglot_{set_name}.npz",
        images_packed=np.packbits(ink.reshape(len(names), 20, -1), axis=-1),
        class_names=np.array(names),
        class_alphabet=np.array([alphabets.index(n.split("/")[0]) for n in names], np.int16),
        class_character=np.array([int(n[-2:]) for n in names], np.int16),
        class_file_id=np.arange(1, len(names) + 1, dtype=np.int16),
        alphabet_names=np.array(alphabets))


def _write_pngs(folder: Path, set_name: str) -> None:
    ink, names = _fake_ink(set_name)
    for c, name in enumerate(names):
        d = folder / f"images_{set_name}" / name
        d.mkdir(parents=True)
        for k in range(20):  # official files: mode "1", white (1) = background
            Image.fromarray(~ink[c, k]).save(d / f"{c + 1:04d}_{k + 1:02d}.png")


def _write_zip(folder: Path, set_name: str) -> None:
    src = folder.parent / f"{folder.name}_pngs_{set_name}"
    _write_pngs(src, set_name)
    with zipfile.ZipFile(folder / f"images_{set_name}.zip", "w") as zf:
        for p in sorted(src.rglob("*.png")):
            zf.write(p, p.relative_to(src).as_posix())


def _write_splits(folder: Path) -> None:
    (folder / "splits" / "vinyals").mkdir(parents=True)
    for split, lines in FAKE_SPLITS.items():
        (folder / "splits" / "vinyals" / f"{split}.txt").write_text("\n".join(lines) + "\n")


def _write_sums(folder: Path, rels: list[str]) -> None:
    lines = [f"{hashlib.sha256((folder / r).read_bytes()).hexdigest()}  {r}" for r in rels]
    (folder / "SHA256SUMS").write_text("\n".join(lines) + "\n")


def _fake_root(folder: Path, kind: str) -> Path:
    folder.mkdir(parents=True)
    for s in og.SETS:
        {"npz": _write_npz, "folder": _write_pngs, "zip": _write_zip}[kind](folder, s)
    _write_splits(folder)
    if kind == "zip":
        _write_sums(folder, [f"images_{s}.zip" for s in og.SETS])
    return folder


@pytest.fixture(scope="module", autouse=True)
def _data_cache(tmp_path_factory):
    """Resized sets are cached in this module's own folder, not in the user's data cache."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("METALOOP_DATA", str(tmp_path_factory.mktemp("data_cache")))
        yield


@pytest.fixture(scope="module")
def fake_roots(tmp_path_factory) -> dict[str, Path]:
    base = tmp_path_factory.mktemp("fake_omniglot")
    return {kind: _fake_root(base / kind, kind) for kind in ("npz", "folder", "zip")}


@pytest.fixture
def nowhere(tmp_path, monkeypatch) -> list[Path]:
    """No default location holds Omniglot; returns the folders that will be searched."""
    monkeypatch.setenv("METALOOP_DATA", str(tmp_path / "data"))
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setattr(og, "SHARED_DIR", tmp_path / "shared")
    return og.search_dirs()


# ----------------------------------------------------------------------------- fake data tests


@pytest.mark.parametrize("size", [105, 28, 14])
def test_packed_folder_and_zip_agree(fake_roots, size):
    for split in og.SPLITS:
        ref, ref_names = load_omniglot_images(fake_roots["npz"], split, size)
        for kind in ("folder", "zip"):
            images, names = load_omniglot_images(fake_roots[kind], split, size)
            assert names == ref_names, (kind, split)
            assert torch.equal(images, ref), (kind, split, size)


def test_original_pixels_and_class_order(fake_roots):
    images, names = load_omniglot_images(fake_roots["npz"], "background", 105)
    ink, fake_names = _fake_ink("background")
    assert names == fake_names
    assert images.dtype == torch.uint8 and images.shape == (3, 20, 105, 105)
    assert torch.equal(images, torch.from_numpy(ink.astype(np.uint8) * 255))


def test_vinyals_rotation_matches_pil(fake_roots):
    images, names = load_omniglot_images(fake_roots["zip"], "train", 105)
    assert names == FAKE_SPLITS["train"]
    ink = {s: _fake_ink(s)[0] for s in og.SETS}
    originals = {"Alpha/character01": ink["background"][0],
                 "Gamma/character02": ink["evaluation"][1]}
    for c, line in enumerate(names):
        char, rot = line.rsplit("/", 1)
        for k in (0, 7):
            pil = Image.fromarray(originals[char][k].astype(np.uint8) * 255).rotate(int(rot[3:]))
            assert np.array_equal(images[c, k].numpy(), np.asarray(pil)), line


@pytest.mark.parametrize("size", [105, 28])
def test_vinyals_classes_are_their_character_turned(fake_roots, size):
    """Every class of every Vinyals split is its character's resized drawings turned by
    ``rotate_ccw``, in the split file's order."""
    sets = [load_omniglot_images(fake_roots["npz"], s, size) for s in og.SETS]
    every = dict(zip(sets[0][1] + sets[1][1], torch.cat([sets[0][0], sets[1][0]]), strict=True))
    for split in og.VINYALS_SPLITS:
        images, names = load_omniglot_images(fake_roots["npz"], split, size)
        assert names == FAKE_SPLITS[split] and images.shape == (len(names), 20, size, size)
        for c, name in enumerate(names):
            char, rot = name.rsplit("/", 1)
            assert torch.equal(images[c], rotate_ccw(every[char], int(rot[3:]))), name


@pytest.mark.parametrize("resample", og.RESAMPLE)
def test_resize_kernels_match_pil(fake_roots, resample):
    """The antialiased kernels are PIL's resize of the 105x105 drawing (float image, so no
    rounding on PIL's side), clipped to [0, 1], within one grey level."""
    images, _ = load_omniglot_images(fake_roots["npz"], "background", 28, resample=resample)
    ink = _fake_ink("background")[0]
    pil_filter = {"bilinear": Image.BILINEAR, "bicubic": Image.BICUBIC}[resample]
    for c, k in ((0, 0), (1, 5), (2, 19)):
        pil = Image.fromarray(ink[c, k].astype(np.float32)).resize((28, 28), pil_filter)
        expected = np.clip(np.asarray(pil), 0, 1) * 255
        diff = np.abs(images[c, k].numpy().astype(np.float64) - expected)
        assert diff.max() <= 1.0, (resample, c, k, diff.max())


def test_bicubic_is_crisper_and_cached_apart(fake_roots):
    bilinear, _ = load_omniglot_images(fake_roots["npz"], "trainval", 28)
    bicubic, _ = load_omniglot_images(fake_roots["npz"], "trainval", 28, resample="bicubic")
    assert bicubic.shape == bilinear.shape and not torch.equal(bicubic, bilinear)
    # fewer grey pixels: more of them are at 0 or 255 (bicubic overshoots and is clipped)
    extremes = [((x == 0) | (x == 255)).float().mean() for x in (bilinear, bicubic)]
    assert extremes[1] > extremes[0]
    again, _ = load_omniglot_images(fake_roots["npz"], "trainval", 28)
    assert again is bilinear


def test_rotate_ccw_is_pil_rotate():
    x = np.arange(5 * 5, dtype=np.uint8).reshape(5, 5)
    for deg in (0, 90, 180, 270):
        expected = np.asarray(Image.fromarray(x).rotate(deg))
        assert np.array_equal(rotate_ccw(torch.from_numpy(x), deg).numpy(), expected), deg
    with pytest.raises(ValueError, match="45"):
        rotate_ccw(torch.from_numpy(x), 45)


def test_results_are_cached(fake_roots, monkeypatch):
    calls = []
    monkeypatch.setattr(og, "release_free_memory", lambda: calls.append(1))
    og.clear_cache()
    a, _ = load_omniglot_images(fake_roots["npz"], "trainval", 28)
    assert calls == [1]                      # decoding's temporaries handed back once
    b, _ = load_omniglot_images(fake_roots["npz"], "trainval", 28)
    assert a is b and calls == [1]           # a cache hit decodes nothing


def test_release_free_memory_keeps_the_data(fake_roots):
    a, _ = load_omniglot_images(fake_roots["npz"], "background", 28)
    before = a.clone()
    glibc = platform.libc_ver()[0] == "glibc"
    assert og.release_free_memory() is glibc              # without glibc: a no-op
    assert torch.equal(a, before)


def test_missing_data_lists_every_place_looked(nowhere):
    with pytest.raises(FileNotFoundError) as err:
        load_omniglot_images(split="evaluation")
    msg = str(err.value)
    for folder in nowhere:
        for name in ("omniglot_evaluation.npz", "images_evaluation/", "images_evaluation.zip"):
            assert str(folder / name).rstrip("/") in msg
    assert og.ZIP_SHA256["evaluation"] in msg and "download=True" in msg
    assert msg.endswith("in a shell with: metaloop data omniglot --download")
    assert "\n" not in msg                  # the CLI prints it as its one-line error


def test_missing_split_file_lists_every_place_looked(nowhere):
    with pytest.raises(FileNotFoundError) as err:
        load_omniglot_images(split="val")
    for folder in nowhere:
        assert str(folder / "splits" / "vinyals" / "val.txt") in str(err.value)
    assert og.SPLIT_SHA256["val"] in str(err.value) and "\n" not in str(err.value)
    assert str(err.value).endswith("in a shell with: metaloop data omniglot --download")
    assert "download=True" in str(err.value)


@pytest.mark.parametrize("split", ["evaluation", "val"])
def test_missing_data_in_a_root_names_the_command_for_that_root(tmp_path, split):
    """The command fetches into the folder the loader was given (quoted for the shell)."""
    root = tmp_path / "my data"
    root.mkdir()
    with pytest.raises(FileNotFoundError) as err:
        load_omniglot_images(root, split)
    assert str(err.value).endswith(f"metaloop data omniglot --download --root '{root}'")


def test_explicit_root_is_the_only_place_searched(tmp_path):
    with pytest.raises(FileNotFoundError) as err:
        load_omniglot_images(tmp_path, "background")
    assert str(og.SHARED_DIR) not in str(err.value) and str(tmp_path) in str(err.value)


def _module_at(path: Path) -> Path:
    """An empty file at ``path``: where omniglot.py would be."""
    path.parent.mkdir(parents=True)
    path.touch()
    return path


def test_the_folder_beside_a_checkout_is_searched_from_a_checkout_only(tmp_path):
    """<repo>/../shared/data/omniglot is a place to look when the module is
    <repo>/src/metaloop/data/omniglot.py beside <repo>/pyproject.toml, and only then."""
    base = tmp_path.resolve()
    repo = base / "work" / "repo"
    checkout = _module_at(repo / "src" / "metaloop" / "data" / "omniglot.py")
    assert og._checkout_data_dir(checkout) is None            # no pyproject.toml
    (repo / "pyproject.toml").touch()
    assert og._checkout_data_dir(checkout) == base / "work" / "shared" / "data" / "omniglot"
    # an installed copy: <venv>/lib/python3.X/site-packages/metaloop/data/omniglot.py, even
    # with a pyproject.toml where a checkout has one
    lib = base / "venv" / "lib" / "python3.11"
    installed = _module_at(lib / "site-packages" / "metaloop" / "data" / "omniglot.py")
    (lib / "pyproject.toml").touch()
    assert og._checkout_data_dir(installed) is None
    # this test runs from a checkout: its shared folder is the one searched last
    assert og.SHARED_DIR == og._checkout_data_dir(og.__file__) is not None
    assert og.search_dirs()[-1] == og.SHARED_DIR


def test_an_installed_copy_names_no_checkout_folder(tmp_path, monkeypatch):
    """Installed, the search path is $METALOOP_DATA/omniglot and ~/.cache/metaloop/omniglot
    alone, and the error lists only them."""
    lib = tmp_path / "venv" / "lib" / "python3.11"
    installed = _module_at(lib / "site-packages" / "metaloop" / "data" / "omniglot.py")
    monkeypatch.setenv("METALOOP_DATA", str(tmp_path / "data"))
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setattr(og, "SHARED_DIR", og._checkout_data_dir(installed))
    assert og.search_dirs() == [tmp_path / "data" / "omniglot",
                                tmp_path / "home" / ".cache" / "metaloop" / "omniglot"]
    with pytest.raises(FileNotFoundError) as err:
        load_omniglot_images(split="evaluation")
    assert str(Path("shared", "data", "omniglot")) not in str(err.value)
    assert str(tmp_path / "data") in str(err.value)


def test_packed_checksum_mismatch(tmp_path):
    root = tmp_path / "r"
    root.mkdir()
    _write_npz(root, "background")
    (root / "SHA256SUMS").write_text(f"{'ab' * 32}  omniglot_background.npz\n")
    with pytest.raises(ValueError, match="ab" * 32) as err:
        load_omniglot_images(root, "background", 28)
    assert "omniglot_background.npz" in str(err.value)


def test_unofficial_zip_fails_the_published_checksum(tmp_path):
    root = tmp_path / "r"
    root.mkdir()
    _write_zip(root, "background")
    with pytest.raises(ValueError, match=og.ZIP_SHA256["background"]):
        load_omniglot_images(root, "background", 28)


def test_corrupt_npz_and_zip(tmp_path):
    (tmp_path / "omniglot_background.npz").write_bytes(b"not an npz")
    with pytest.raises(ValueError, match="omniglot_background.npz"):
        load_omniglot_images(tmp_path, "background", 28)
    (tmp_path / "images_evaluation.zip").write_bytes(b"not a zip")
    _write_sums(tmp_path, ["images_evaluation.zip"])
    with pytest.raises(ValueError, match="images_evaluation.zip"):
        load_omniglot_images(tmp_path, "evaluation", 28)


@pytest.mark.parametrize("cut", ["empty", "truncated", "npy"])
def test_empty_or_truncated_npz_is_named(tmp_path, cut):
    path = tmp_path / "omniglot_background.npz"
    if cut == "npy":
        np.save(tmp_path / "a.npy", np.zeros(3, np.uint8))
        (tmp_path / "a.npy").rename(path)
    else:
        _write_npz(tmp_path, "background")
        data = path.read_bytes()
        path.write_bytes(b"" if cut == "empty" else data[:len(data) // 2])
    with pytest.raises(ValueError, match=r"omniglot_background\.npz is not a packed Omniglot "
                                         r"file"):
        load_omniglot_images(tmp_path, "background", 28)


def test_png_folder_with_a_missing_drawing(tmp_path):
    _write_pngs(tmp_path, "background")
    (tmp_path / "images_background" / "Beta" / "character01" / "0003_07.png").unlink()
    with pytest.raises(ValueError, match="Beta/character01 has drawings"):
        load_omniglot_images(tmp_path, "background", 28)


def test_png_folder_skips_hidden_files(tmp_path, fake_roots):
    """macOS leaves ``._IIII_DD.png`` companions (not PNGs) beside files copied to other disks."""
    _write_pngs(tmp_path, "background")
    (tmp_path / "images_background" / "Alpha" / "character01" / "._0001_01.png").write_bytes(
        b"\x00\x05\x16\x07")
    (tmp_path / "images_background" / ".Trash" / "x").mkdir(parents=True)
    (tmp_path / "images_background" / ".Trash" / "x" / "0001_01.png").write_bytes(b"")
    images, names = load_omniglot_images(tmp_path, "background", 28)
    ref, ref_names = load_omniglot_images(fake_roots["npz"], "background", 28)
    assert names == ref_names and torch.equal(images, ref)


def test_png_folder_with_a_truncated_drawing_names_it(tmp_path):
    _write_pngs(tmp_path, "background")
    png = tmp_path / "images_background" / "Alpha" / "character02" / "0002_05.png"
    png.write_bytes(png.read_bytes()[:60])
    with pytest.raises(ValueError, match=r"Alpha/character02/0002_05\.png: cannot read"):
        load_omniglot_images(tmp_path, "background", 28)


def test_zip_with_a_corrupt_member_names_the_zip(tmp_path):
    """A zip whose member does not inflate (its SHA256SUMS made after the damage) is a
    ValueError naming the zip, not a bare zlib.error."""
    _write_pngs(tmp_path / "src", "background")
    path = tmp_path / "images_background.zip"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        for png in sorted((tmp_path / "src").rglob("*.png")):
            zf.write(png, png.relative_to(tmp_path / "src").as_posix())
        info = zf.infolist()[5]
    data = bytearray(path.read_bytes())
    start = info.header_offset + 30 + len(info.filename.encode()) + len(info.extra)
    data[start:start + 4] = b"\xff\xff\xff\xff"          # an invalid deflate block type
    path.write_bytes(bytes(data))
    _write_sums(tmp_path, ["images_background.zip"])
    with pytest.raises(ValueError, match=r"images_background\.zip is not a valid zip file"):
        load_omniglot_images(tmp_path, "background", 28)


def test_bad_split_file_line(tmp_path, fake_roots):
    root = tmp_path / "r"
    root.mkdir()
    for s in og.SETS:
        _write_npz(root, s)
    (root / "splits" / "vinyals").mkdir(parents=True)
    (root / "splits" / "vinyals" / "test.txt").write_text("Alpha/character01/rot045\n")
    with pytest.raises(ValueError, match="test.txt:1"):
        load_omniglot_images(root, "test", 28)
    (root / "splits" / "vinyals" / "test.txt").write_text("Zeta/character01/rot090\n")
    with pytest.raises(ValueError, match="Zeta/character01"):
        load_omniglot_images(root, "test", 28)


def test_bad_arguments(fake_roots):
    with pytest.raises(ValueError, match="'training'"):
        load_omniglot_images(fake_roots["npz"], "training")
    with pytest.raises(ValueError, match="image_size"):
        load_omniglot_images(fake_roots["npz"], "train", 0)
    with pytest.raises(ValueError, match="unknown resample kernel 'lanczos'"):
        load_omniglot_images(fake_roots["npz"], "train", 28, resample="lanczos")


def test_download_fetches_verifies_and_loads(tmp_path, fake_roots, monkeypatch):
    served = fake_roots["zip"]
    for s in og.SETS:
        data = (served / f"images_{s}.zip").read_bytes()
        monkeypatch.setitem(og.ZIP_URLS, s, (served / f"images_{s}.zip").as_uri())
        monkeypatch.setitem(og.ZIP_SHA256, s, hashlib.sha256(data).hexdigest())
        monkeypatch.setitem(og.ZIP_MD5, s, hashlib.md5(data).hexdigest())
    for split in og.VINYALS_SPLITS:
        path = served / "splits" / "vinyals" / f"{split}.txt"
        monkeypatch.setitem(og.SPLIT_URLS, split, path.as_uri())
        monkeypatch.setitem(og.SPLIT_SHA256, split, hashlib.sha256(path.read_bytes()).hexdigest())
    dl = tmp_path / "dl"
    images, names = load_omniglot_images(dl, "test", 28, download=True)
    ref, ref_names = load_omniglot_images(fake_roots["npz"], "test", 28)
    assert names == ref_names and torch.equal(images, ref)
    assert sorted(p.name for p in dl.iterdir()) == [
        "images_background.zip", "images_evaluation.zip", "splits"]


def test_download_checksum_mismatch_leaves_nothing(tmp_path, fake_roots, monkeypatch):
    zip_path = fake_roots["zip"] / "images_background.zip"
    monkeypatch.setitem(og.ZIP_URLS, "background", zip_path.as_uri())
    monkeypatch.setitem(og.ZIP_MD5, "background", None)
    dl = tmp_path / "dl"
    with pytest.raises(ValueError, match=og.ZIP_SHA256["background"]):
        load_omniglot_images(dl, "background", 28, download=True)
    assert not dl.exists()                  # not even the folder made for the download


def _offline(*args, **kwargs):
    raise urllib.error.URLError(socket.gaierror(-2, "Name or service not known"))


@pytest.mark.parametrize("split", ["background", "val"])
def test_download_without_network_names_what_and_where(tmp_path, monkeypatch, split):
    """No network: the error names the url, the folder to put the file into and its sha256
    (one error the CLI reports, not a bare URLError), and nothing is left behind."""
    monkeypatch.setattr(urllib.request, "urlopen", _offline)
    dl = tmp_path / "dl" / "omniglot"
    with pytest.raises(FileNotFoundError) as err:
        load_omniglot_images(dl, split, 28, download=True)
    msg = str(err.value)
    url, sha, where = ((og.SPLIT_URLS[split], og.SPLIT_SHA256[split], dl / "splits" / "vinyals")
                       if split in og.VINYALS_SPLITS else
                       (og.ZIP_URLS[split], og.ZIP_SHA256[split], dl))
    assert url in msg and sha in msg and f"into {where}" in msg
    assert "Name or service not known" in msg and "\n" not in msg
    assert list(tmp_path.iterdir()) == []


# ----------------------------------------------------------------------------- the real data

COUNTS = {"background": 964, "evaluation": 659, "train": 4112, "val": 688, "test": 1692,
          "trainval": 4800}


@pytest.fixture(scope="module")
def real(omniglot_root) -> dict[str, tuple[torch.Tensor, list[str]]]:
    return {s: load_omniglot_images(omniglot_root, s, 28) for s in og.SPLITS}


def test_real_shapes_and_values(real):
    for split, (images, names) in real.items():
        assert images.shape == (COUNTS[split], 20, 28, 28) and images.dtype == torch.uint8
        assert len(names) == len(set(names)) == COUNTS[split]
    bg = real["background"][0]
    assert int(bg.max()) == 255 and int(bg.min()) == 0
    assert float((bg > 127).float().mean()) < 0.25          # mostly background (0)
    assert int(bg[..., 0, 0].max()) == 0                    # corners are blank


def test_real_split_membership(real):
    chars = {s: {n.rsplit("/", 1)[0] for n in real[s][1]} for s in og.VINYALS_SPLITS}
    assert (len(chars["train"]), len(chars["val"]), len(chars["test"])) == (1028, 172, 423)
    assert not chars["train"] & chars["val"] and not chars["train"] & chars["test"]
    assert not chars["val"] & chars["test"]
    assert real["trainval"][1] == real["train"][1] + real["val"][1]
    assert torch.equal(real["trainval"][0][:4112], real["train"][0])
    lake = set(real["background"][1]) | set(real["evaluation"][1])
    assert not set(real["background"][1]) & set(real["evaluation"][1])
    assert chars["trainval"] | chars["test"] == lake and len(lake) == 1623
    assert real["background"][1][0] == "Alphabet_of_the_Magi/character01"


def test_real_rotation_is_pil_rotate_then_resize(real, omniglot_root):
    """Vinyals class Angelic/character01/rot090 = resize(PIL rotate(original, 90))."""
    images, names = real["train"]
    with np.load(omniglot_root / "omniglot_evaluation.npz", allow_pickle=False) as d:
        c = list(d["class_names"]).index("Angelic/character01")
        packed = d["images_packed"][c, 3]
    bits = np.unpackbits(packed, count=105 * 105).reshape(105, 105)
    for deg in (0, 90, 180, 270):
        turned = np.asarray(Image.fromarray(bits * 255).rotate(deg)) > 127
        expected = og._resize_packed(np.packbits(turned.reshape(1, 1, -1), axis=-1)
                                     .repeat(20, axis=1), 28)[0, 0]
        got = images[names.index(f"Angelic/character01/rot{deg:03d}"), 3]
        assert torch.equal(got, expected), deg


def test_real_lake_holdout_splits(omniglot_root, real):
    """background_train (25 alphabets, 775 characters) and background_val (the 5 held-out
    alphabets, 189 characters) divide background by alphabet; evaluation shares nothing."""
    parts = {s: load_omniglot_images(omniglot_root, s, 28) for s in og.HOLDOUT_SPLITS}
    alphabets = {s: {og.alphabet_of(n) for n in names} for s, (_, names) in
                 {**real, **parts}.items() if s in og.SETS + og.HOLDOUT_SPLITS}
    assert (len(alphabets["background"]), len(alphabets["evaluation"])) == (30, 20)
    assert sorted(alphabets["background_val"]) == list(og.BACKGROUND_VAL_ALPHABETS)
    assert len(alphabets["background_train"]) == 25
    train, val = (parts[s][1] for s in og.HOLDOUT_SPLITS)
    assert (len(train), len(val)) == (775, 189) and not set(train) & set(val)
    assert sorted(train + val) == sorted(real["background"][1])
    assert not alphabets["evaluation"] & alphabets["background"]
    bg_images, bg_names = real["background"]
    for images, names in parts.values():
        rows = [bg_names.index(n) for n in names]
        assert torch.equal(images, bg_images[rows])


def _bomb_zip(path: Path, src: Path, big: str, padding: int) -> None:
    """A zip of the PNGs under ``src`` whose member ``big`` is its PNG followed by
    ``padding`` zero bytes (a valid image that inflates far past any drawing's size)."""
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        for png in sorted(src.rglob("*.png")):
            name = png.relative_to(src).as_posix()
            if name != big:
                zf.write(png, name)
                continue
            with zf.open(name, "w", force_zip64=True) as f:
                f.write(png.read_bytes())
                for _ in range(padding >> 20):
                    f.write(bytes(1 << 20))


def test_zip_member_larger_than_a_drawing_is_refused_before_it_is_read(tmp_path, monkeypatch):
    """A zip that passes its SHA256SUMS but whose member declares more than a drawing can be
    (a zip bomb: 2 MiB from a few kB here, 1 GB per member from 1 MB in the wild) is refused,
    naming the zip and the member; nothing is decoded."""
    _write_pngs(tmp_path / "src", "background")
    big = "images_background/Alpha/character01/0001_01.png"
    _bomb_zip(tmp_path / "images_background.zip", tmp_path / "src", big, 2 << 20)
    assert (tmp_path / "images_background.zip").stat().st_size < 1 << 20
    _write_sums(tmp_path, ["images_background.zip"])
    decoded = []
    monkeypatch.setattr(og, "_png_ink", lambda data, what: decoded.append(what))
    with pytest.raises(ValueError, match=rf"images_background\.zip: member {big} declares "
                                         rf"\d+ bytes, more than an Omniglot drawing can be"):
        load_omniglot_images(tmp_path, "background", 28)
    assert decoded == []


def test_zip_members_larger_than_a_set_together_are_refused(tmp_path, monkeypatch):
    _write_zip(tmp_path, "background")
    _write_sums(tmp_path, ["images_background.zip"])
    monkeypatch.setattr(og, "MAX_SET_BYTES", 1000)
    with pytest.raises(ValueError, match=r"images_background\.zip: its 60 PNG members declare "
                                         r"\d+ bytes together, more than an Omniglot set"):
        load_omniglot_images(tmp_path, "background", 28)


def test_a_member_is_read_no_further_than_the_cap(tmp_path, monkeypatch):
    """The read itself is bounded too (``zf.open(...).read(cap + 1)``), whatever the header
    says: with the declared-size check passed, a member longer than the cap is refused."""
    _write_pngs(tmp_path / "src", "background")
    big = "images_background/Alpha/character01/0001_01.png"
    _bomb_zip(tmp_path / "z.zip", tmp_path / "src", big, 1 << 20)
    with zipfile.ZipFile(tmp_path / "z.zip") as zf:
        read = og._zip_reader(zf, tmp_path / "z.zip", [])        # no declared sizes checked
        assert read(big.replace("0001_01", "0001_02")).startswith(b"\x89PNG")
        with pytest.raises(ValueError, match=rf"z\.zip: member {big} is 1048577 bytes or "
                                             rf"more, more than an Omniglot drawing"):
            read(big)


def test_png_folder_with_a_file_larger_than_a_drawing_names_it(tmp_path):
    _write_pngs(tmp_path, "background")
    png = tmp_path / "images_background" / "Alpha" / "character02" / "0002_05.png"
    png.write_bytes(png.read_bytes() + bytes(2 << 20))     # a valid PNG, then 2 MiB
    with pytest.raises(ValueError, match=r"Alpha/character02/0002_05\.png is 1048577 bytes "
                                         r"or more, more than an Omniglot drawing can be"):
        load_omniglot_images(tmp_path, "background", 28)


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no named pipes")
def test_png_folder_with_a_named_pipe_for_a_drawing_names_it(tmp_path):
    """A drawing that is a named pipe is named, not waited on for a writer."""
    _write_pngs(tmp_path, "background")
    png = tmp_path / "images_background" / "Alpha" / "character02" / "0002_05.png"
    png.unlink()
    os.mkfifo(png)
    with pytest.raises(ValueError, match=r"0002_05\.png is not a regular file"):
        load_omniglot_images(tmp_path, "background", 28)
