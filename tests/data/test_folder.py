"""Image folders: scanning, formats, the memory-mapped cache (hit, rebuild, read-only roots),
named errors that write nothing, and the same images as the packed Omniglot loader."""

import os
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import metaloop as ml
from metaloop.data import folder as folder_mod
from metaloop.data.folder import CACHE_DIRNAME, load_folder, scan_folder
from metaloop.data.omniglot import load_omniglot_images

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from conftest import write_image_folder  # noqa: E402


def test_scan_counts_hidden_and_non_image_files(image_folder):
    (image_folder / "README.md").write_text("beside the classes")
    (image_folder / ".hidden_class").mkdir()
    s = scan_folder(image_folder)
    assert s.classes == [f"class_{k:02d}" for k in range(6)]
    assert [len(f) for f in s.files] == [8] * 6
    assert (s.ignored, s.hidden) == (2, 2)          # notes.txt, README.md; .DS_Store, .hidden


def test_every_format_decodes_like_the_png(tmp_path):
    write_image_folder(tmp_path / "m", classes=7, per_class=7, mixed=True)
    write_image_folder(tmp_path / "p", classes=7, per_class=7, mixed=False)
    kw = dict(image_size=28, invert="auto")
    m, p = load_folder(tmp_path / "m", **kw), load_folder(tmp_path / "p", **kw)
    assert m.files[:7] == [f"class_00/{i:03d}.{e}" for i, e in
                           enumerate(("png", "jpg", "bmp", "gif", "webp", "png", "png"))]
    ref = p.images.float()
    for i in range(len(m.files)):
        k, j = divmod(i, 7)
        if (j + k) % 7 == 5:                        # the wide image: padded, so it shrinks
            continue
        err = float((m.images[i].float() - ref[i]).abs().mean())
        # JPEG is lossy and was saved at twice the size; every other format is near exact
        assert err < (25 if m.files[i].endswith(".jpg") else 1), (m.files[i], err)


def test_rgb_and_class_depth_two(tmp_path):
    for g in ("g1", "g2"):
        write_image_folder(tmp_path / "r" / g, classes=2, per_class=3, mixed=False, seed=int(g[1]))
    d = load_folder(tmp_path / "r", class_depth=2, channels=3, image_size=12)
    assert d.class_names == ["g1/class_00", "g1/class_01", "g2/class_00", "g2/class_01"]
    assert d.images.shape == (12, 3, 12, 12) and d.images.dtype == torch.uint8
    with pytest.warns(folder_mod.NestedClassFoldersWarning, match="class_depth = 2"):
        flat = load_folder(tmp_path / "r", class_depth=1)   # sub-folders belong to a class
    assert flat.class_names == ["g1", "g2"] and flat.labels.tolist() == [0] * 6 + [1] * 6


def test_second_open_is_a_cache_hit_and_changes_rebuild(image_folder, monkeypatch):
    first = load_folder(image_folder)
    assert first.cache_status == "built" and first.cache_dir == image_folder / CACHE_DIRNAME
    calls = []
    real = folder_mod._decode
    monkeypatch.setattr(folder_mod, "_decode", lambda *a: calls.append(a[1]) or real(*a))
    again = load_folder(image_folder)
    assert again.cache_status == "hit" and calls == []
    assert torch.equal(again.images, first.images)
    target = image_folder / "class_00" / "000.png"          # replace one image's content
    assert target.is_file()
    Image.fromarray(np.zeros((28, 28), np.uint8)).save(target)
    os.utime(target, ns=(1, 1))
    changed = load_folder(image_folder)
    assert changed.cache_status == "rebuilt (files changed)" and calls == ["class_00/000.png"]
    i = changed.files.index("class_00/000.png")
    assert first.files[i] == "class_00/000.png"
    assert int(changed.images[i].max()) == 0 and int(first.images[i].max()) > 0
    other = load_folder(image_folder, image_size=16)        # other settings: another cache
    assert other.cache_status == "built" and other.images.shape[-1] == 16
    manifests = list((image_folder / CACHE_DIRNAME).glob("*.json"))
    arrays = list((image_folder / CACHE_DIRNAME).glob("*.npy"))
    assert len(manifests) == 2 and len(arrays) == 6          # the stale arrays were removed


def test_images_are_memory_mapped_not_loaded(image_folder):
    load_folder(image_folder)
    d = load_folder(image_folder)
    cached = next((image_folder / CACHE_DIRNAME).glob("*.images.npy"))
    arr = np.load(cached, mmap_mode="c")
    assert isinstance(arr, np.memmap)
    assert d.images.data_ptr() != 0 and not d.images.is_shared()
    # the tensor reads the file's pages: its data is the mapping's, not a private copy
    assert cached.stat().st_size >= d.images.numel()


def test_read_only_folder_caches_elsewhere(image_folder, tmp_path, monkeypatch):
    monkeypatch.setenv("METALOOP_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(folder_mod.os, "access", lambda p, mode: False)
    d = load_folder(image_folder)
    assert d.cache_dir == tmp_path / "cache" / "folders"
    assert not (image_folder / CACHE_DIRNAME).exists()


def test_corrupt_image_is_named_and_nothing_is_written(tmp_path):
    root = write_image_folder(tmp_path / "c", classes=3, per_class=4, corrupt=True)
    with pytest.raises(ValueError, match=r"cannot read image .*class_02/broken\.png.*"
                                         r"skip_corrupt=True"):
        load_folder(root)
    assert not (root / CACHE_DIRNAME).exists()
    d = load_folder(root, skip_corrupt=True)
    assert [f for f, _ in d.skipped] == ["class_02/broken.png"] and len(d.files) == 12


@pytest.mark.parametrize("make, match", [
    (lambda p: p / "missing", "does not exist"),
    (lambda p: (p / "f.txt").write_text("x") and p / "f.txt", "is not a folder"),
    (lambda p: (p / "empty").mkdir() or p / "empty", "holds no images"),
])
def test_bad_roots_are_named(tmp_path, make, match):
    with pytest.raises(ValueError, match=match):
        load_folder(make(tmp_path))


def test_images_outside_class_folders_are_named(tmp_path):
    """A flat folder of images (no class folders) was 'N non-image entries ignored'."""
    flat = tmp_path / "flat"
    flat.mkdir()
    for k in range(3):
        Image.fromarray(np.zeros((8, 8), np.uint8)).save(flat / f"{k}.png")
    (flat / "notes.txt").write_text("x")
    with pytest.raises(ValueError, match=r"4 other and 0 hidden entries ignored; 3 of them are "
                                         r"images outside any class folder \(e\.g\. 0\.png\): "
                                         r"put each class's images in a folder named after"):
        load_folder(flat)


def test_the_corrupt_image_hint_is_the_librarys_not_a_configs(tmp_path):
    """The hint named the config key family.skip_corrupt, which metaloop adapt, forgetting
    and vae do not have; the library names its own argument (train adds the config key)."""
    root = write_image_folder(tmp_path / "c", classes=3, per_class=4, corrupt=True)
    with pytest.raises(folder_mod.UnreadableImagesError) as e:
        load_folder(root)
    assert "pass skip_corrupt=True (load_folder, Episodes.from_folder)" in str(e.value)
    assert "family.skip_corrupt" not in str(e.value)
    assert e.value.problem.startswith("cannot read image ") and \
        [f for f, _ in e.value.files] == ["class_02/broken.png"]


@pytest.mark.parametrize("depth", [1, 2])
def test_an_image_beside_the_class_folders_is_named_as_such(tmp_path, depth):
    """With class_depth = 1 an image in the root was reported as 'ignored 1 non-image'."""
    root = tmp_path / "r"
    write_image_folder(root / "g" if depth == 2 else root, classes=3, per_class=2,
                       mixed=False)
    (root / "notes.txt").write_text("x")
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(root / "stray.png")
    s = scan_folder(root, depth)
    assert (s.ignored, s.loose) == (1, ["stray.png"])
    fam = ml.tasks.Episodes.from_folder(root, ways=2, shots=1, queries=1, class_depth=depth)
    assert fam.report["loose"] == ["stray.png"]
    text = fam.describe()
    assert "ignored 1 non-image (by suffix, e.g. notes.txt) and 0 hidden entries" in text
    assert "left out 1 image(s) outside any class folder, e.g. stray.png" in text


@pytest.mark.skipif(sys.platform in ("darwin", "win32"),
                    reason="the file system takes only valid UTF-8 (or UTF-16) names")
def test_a_file_name_that_is_not_utf8_is_read(tmp_path):
    """A name such as b'bad\\xff.png' (read by Python as 'bad\\udcff.png') failed with
    "'utf-8' codec can't encode character '\\udcff' ... surrogates not allowed"; it is read,
    and the cache (whose manifest stores the name) is hit the next time."""
    root = write_image_folder(tmp_path / "images", classes=2, per_class=3, mixed=False)
    os.rename(os.fsencode(root / "class_01" / "000.png"),
              os.fsencode(root / "class_01") + b"/bad\xff.png")
    d = load_folder(root)
    assert d.cache_status == "built" and len(d.files) == 6
    assert "class_01/bad\udcff.png" in d.files
    again = load_folder(root)
    assert again.cache_status == "hit" and again.files == d.files
    torch.testing.assert_close(again.images, d.images)


def test_a_file_name_with_a_newline_comes_back_from_the_cache(tmp_path):
    """The manifest joined its file names with newlines, so a name holding one came back
    from the cache as two names and the file list no longer matched the images."""
    root = write_image_folder(tmp_path / "images", classes=2, per_class=3, mixed=False)
    (root / "class_01" / "000.png").rename(root / "class_01" / "two\nlines.png")
    d = load_folder(root)
    assert d.cache_status == "built" and "class_01/two\nlines.png" in d.files
    again = load_folder(root)
    assert again.cache_status == "hit" and again.files == d.files and len(again.files) == 6


def test_folder_and_packed_loaders_give_the_same_images_and_tasks(omniglot_root, tmp_path):
    """Omniglot written out in its official layout reads back as the packed loader's images,
    and the two give the same task stream for the same class order and seed."""
    d = np.load(omniglot_root / "omniglot_evaluation.npz", allow_pickle=False)
    names, fid = [str(n) for n in d["class_names"]], d["class_file_id"]
    sub = list(range(0, len(names), 33))                                    # 20 characters
    for c in sub:
        bits = np.unpackbits(d["images_packed"][c], axis=-1, count=105 * 105)
        alphabet, char = names[c].split("/")
        out = tmp_path / "images_evaluation" / alphabet / char
        out.mkdir(parents=True)
        for k, b in enumerate(bits.reshape(20, 105, 105)):
            Image.fromarray((1 - b).astype(bool)).save(out / f"{fid[c]:04d}_{k + 1:02d}.png")
    fam = ml.tasks.Episodes.from_folder(tmp_path / "images_evaluation", ways=5, shots=1,
                                        queries=4, class_depth=2, invert="always")
    images, _ = load_omniglot_images(omniglot_root, "evaluation", 28)
    want = images[sub]                                                      # [20, 20, 28, 28]
    assert fam.class_names == [names[c] for c in sub]
    assert torch.equal(fam._x.view(20, 20, 28, 28), want)
    packed = ml.tasks.Episodes(want.reshape(-1, 1, 28, 28), torch.arange(20).repeat_interleave(20),
                               ways=5, shots=1, queries=4, class_names=fam.class_names)
    a, b = (f.sample(8, torch.Generator().manual_seed(5)) for f in (fam, packed))
    assert torch.equal(a.support_x, b.support_x) and torch.equal(a.query_x, b.query_x)
    assert torch.equal(a.classes, b.classes)


def test_classes_come_in_the_sorted_walk_order_the_packed_loader_has(tmp_path):
    # groups sorted, then each group's classes, as Omniglot's (alphabet, character) order:
    # "a/x" comes before "a-b/y" although the joined string sorts after it
    for rel in ("a-b/y/1.png", "a/x/1.png", "a/w/1.png"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.zeros((4, 4), np.uint8)).save(tmp_path / rel)
    assert scan_folder(tmp_path, class_depth=2).classes == ["a/w", "a/x", "a-b/y"]
