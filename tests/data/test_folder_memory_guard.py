"""An image folder whose decoded images would not fit on the cache's disk, or whose
decoding window would not fit in memory, is refused before anything is decoded, naming the
estimate, the space or memory available and the setting; the figures are patched, so
nothing large is allocated. A set larger than the memory is decoded: it goes to disk."""

import numpy as np
import pytest
from PIL import Image

from metaloop.cli.main import main
from metaloop.data import folder as folder_mod
from metaloop.data.folder import CACHE_DIRNAME, load_folder


def _folder(root):
    for c, name in enumerate(("cat", "dog")):
        (root / name).mkdir(parents=True)
        for i in range(3):
            a = np.random.default_rng([c, i]).integers(0, 256, (10, 10), dtype=np.uint8)
            Image.fromarray(a).save(root / name / f"{i}.png")
    return root


def _no_decoding(*args):
    raise AssertionError("an image was decoded")


def test_a_decoded_set_larger_than_the_free_disk_is_refused_before_decoding(
        tmp_path, monkeypatch):
    root = _folder(tmp_path / "photos")
    need = 6 * 3 * 40 * 40                                   # images x channels x size^2
    monkeypatch.setattr(folder_mod, "_free_disk", lambda folder: need - 1)
    monkeypatch.setattr(folder_mod, "_decode", _no_decoding)
    with pytest.raises(ValueError, match=r"its 6 images decoded at image_size=40 with "
                                         r"channels=3 take about 29 kB \(6 x 3 x 40 x 40 "
                                         r"bytes\), more than the 29 kB free on the disk of "
                                         r"its cache .*\.metaloop-cache; lower image_size"):
        load_folder(root, image_size=40, channels=3)
    assert not (root / CACHE_DIRNAME).exists()


def test_a_decoding_window_larger_than_the_memory_available_is_refused_before_decoding(
        tmp_path, monkeypatch):
    """The images decoded ahead of writing and the threads' float copies must fit; the set
    itself goes to disk."""
    root = _folder(tmp_path / "photos")
    need = 6 * 3 * 40 * 40 + 2 * 8 * 3 * 40 * 40            # window + 2 threads' floats
    monkeypatch.setattr(folder_mod, "_available_memory", lambda: need - 1)
    monkeypatch.setattr(folder_mod, "_decode", _no_decoding)
    with pytest.raises(ValueError, match=r"decoding its images at image_size=40 with "
                                         r"channels=3 takes about 106 kB of memory at once "
                                         r"\(6 decoded images of 3 x 40 x 40 bytes, and 2 "
                                         r"decoding thread\(s\) at 38400 bytes each\), more "
                                         r"than the 106 kB of memory available; lower "
                                         r"image_size"):
        load_folder(root, image_size=40, channels=3, workers=2)
    assert not (root / CACHE_DIRNAME).exists()


def test_a_set_that_fits_or_memory_and_disk_that_are_unknown_is_decoded(tmp_path, monkeypatch):
    root = _folder(tmp_path / "photos")
    monkeypatch.setattr(folder_mod, "_available_memory", lambda: 6 * 40 * 40 + 8 * 40 * 40)
    monkeypatch.setattr(folder_mod, "_free_disk", lambda folder: 6 * 40 * 40)
    assert load_folder(root, image_size=40, workers=1).images.shape == (6, 1, 40, 40)
    monkeypatch.setattr(folder_mod, "_available_memory", lambda: None)
    monkeypatch.setattr(folder_mod, "_free_disk", lambda folder: None)
    assert load_folder(root, image_size=41).images.shape == (6, 1, 41, 41)


def test_the_free_disk_is_that_of_the_nearest_existing_folder(tmp_path):
    assert folder_mod._free_disk(tmp_path / "not" / "yet") == \
        folder_mod.shutil.disk_usage(tmp_path).free


def test_a_cache_hit_decodes_nothing_and_is_not_refused(tmp_path, monkeypatch):
    root = _folder(tmp_path / "photos")
    load_folder(root, image_size=16)
    monkeypatch.setattr(folder_mod, "_available_memory", lambda: 1)
    assert load_folder(root, image_size=16).cache_status == "hit"   # memory-mapped


def test_the_memory_available_comes_from_meminfo_else_sysconf(monkeypatch):
    have = folder_mod._available_memory()
    assert have is None or have > 0
    real_open = open

    def no_meminfo(path, *a, **kw):
        if str(path) == "/proc/meminfo":
            raise FileNotFoundError(path)
        return real_open(path, *a, **kw)

    monkeypatch.setattr(folder_mod, "open", no_meminfo, raising=False)
    sizes = {"SC_AVPHYS_PAGES": 1000, "SC_PAGE_SIZE": 4096}
    monkeypatch.setattr(folder_mod.os, "sysconf", lambda name: sizes[name])
    assert folder_mod._available_memory() == 4_096_000

    def unknown(name):
        raise ValueError(f"unrecognized configuration name {name}")

    monkeypatch.setattr(folder_mod.os, "sysconf", unknown)
    assert folder_mod._available_memory() is None


def test_a_config_with_a_huge_image_size_exits_2_naming_it(tmp_path, monkeypatch, capsys):
    root = _folder(tmp_path / "photos")
    monkeypatch.setattr(folder_mod, "_free_disk", lambda folder: 20_000_000)
    cfg = tmp_path / "c.toml"
    cfg.write_text(f'[family]\nname = "folder"\nroot = "{root}"\nways = 2\nshots = 1\n'
                   f'queries = 1\nimage_size = 2000\ntrain_classes = ["cat", "dog"]\n'
                   f'[model]\nname = "conv4"\n[method]\nname = "protonet"\n[train]\n'
                   f'iterations = 1\n')
    capsys.readouterr()
    assert main(["train", "--config", str(cfg), "--out", str(tmp_path / "run"),
                 "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "take about 24 MB (6 x 1 x 2000 x 2000 bytes), more than the 20 MB free on " \
           "the disk of its cache" in err, err
    assert "family.image_size" in err, err
    assert not (tmp_path / "run").exists() and not (root / CACHE_DIRNAME).exists()
