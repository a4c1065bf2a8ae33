"""The disk cache of resized Omniglot sets: the same bytes as resizing, a key over everything
the result depends on, atomic writes, and damaged files or unwritable folders that cost only
the time to resize again."""

from __future__ import annotations

import hashlib
import os
import shutil
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from metaloop.data import omniglot as og
from metaloop.data.omniglot import load_omniglot_images

NAMES = {"background": ["Alpha/character01", "Alpha/character02", "Beta/character01"],
         "evaluation": ["Gamma/character01", "Gamma/character02"]}


def _ink(set_name: str, seed: int = 0) -> np.ndarray:
    """bool [C, 20, 105, 105]: random strokes, different for every set and seed."""
    rng = np.random.default_rng([seed, len(set_name)])
    return rng.random((len(NAMES[set_name]), 20, 105, 105)) < 0.1


def _write_npz(folder: Path, set_name: str, seed: int = 0) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    ink = _ink(set_name, seed)
    path = folder / f"omniglot_{set_name}.npz"
    np.savez(path, images_packed=np.packbits(ink.reshape(len(ink), 20, -1), axis=-1),
             class_names=np.array(NAMES[set_name]))
    return path


def _write_pngs(folder: Path, set_name: str, seed: int = 0) -> Path:
    ink = _ink(set_name, seed)
    for c, name in enumerate(NAMES[set_name]):
        d = folder / f"images_{set_name}" / name
        d.mkdir(parents=True)
        for k in range(20):     # the official files: mode "1", white (1) = background
            Image.fromarray(~ink[c, k]).save(d / f"{c + 1:04d}_{k + 1:02d}.png")
    return folder / f"images_{set_name}"


@pytest.fixture(autouse=True)
def cache_home(omniglot_cache_home) -> Path:
    """The data cache in this test's folder, on, and nothing decoded in this process yet."""
    return omniglot_cache_home


@pytest.fixture
def root(tmp_path) -> Path:
    for s in og.SETS:
        _write_npz(tmp_path / "src", s)
    return tmp_path / "src"


def _fresh(root, split="background", size=28, resample="bilinear"):
    """What resizing gives, with the disk cache off and nothing cached in this process."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv(og.CACHE_ENV, "off")
        og.clear_cache()
        out = load_omniglot_images(root, split, size, resample=resample)
    og.clear_cache()
    return out


def _no_resizing(monkeypatch):
    def fail(*args, **kwargs):
        raise AssertionError("resized again instead of reading the cache")
    monkeypatch.setattr(og, "_resize_packed", fail)


def _files(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir()) if folder.is_dir() else []


def test_real_sets_read_back_byte_identical(omniglot_root, cache_home, monkeypatch):
    """Both real sets: what the cache hands back is what resizing gives, byte for byte, and
    the Vinyals and held-out splits built from it are too."""
    fresh = {s: _fresh(omniglot_root, s) for s in og.SETS + ("train",)}
    for s in og.SETS:                                   # first load: resized, then written
        images, names = load_omniglot_images(omniglot_root, s, 28)
        assert torch.equal(images, fresh[s][0]) and names == fresh[s][1]
    assert len(_files(cache_home)) == 2
    og.clear_cache()
    _no_resizing(monkeypatch)
    for s in og.SETS + ("train",):                      # read from the cache
        images, names = load_omniglot_images(omniglot_root, s, 28)
        assert images.dtype == torch.uint8 and images.is_contiguous()
        assert names == fresh[s][1]
        assert images.numpy().tobytes() == fresh[s][0].numpy().tobytes(), s


@pytest.mark.parametrize("resample", og.RESAMPLE)
@pytest.mark.parametrize("size", [28, 14, 84])
def test_cache_hit_equals_resizing(root, cache_home, monkeypatch, size, resample):
    fresh = _fresh(root, "background", size, resample)
    first = load_omniglot_images(root, "background", size, resample=resample)
    (name,) = _files(cache_home)
    assert name.startswith(f"background-{size}px-{resample}-") and name.endswith(".npz")
    og.clear_cache()
    _no_resizing(monkeypatch)
    again = load_omniglot_images(root, "background", size, resample=resample)
    for images, names in (first, again):
        assert names == fresh[1] and torch.equal(images, fresh[0])


def test_every_setting_has_its_own_file(root, cache_home):
    """Size, kernel and set each key a file of their own; loading one never returns another's
    images."""
    settings = [("background", 28, "bilinear"), ("background", 14, "bilinear"),
                ("background", 28, "bicubic"), ("evaluation", 28, "bilinear")]
    for split, size, resample in settings:
        load_omniglot_images(root, split, size, resample=resample)
    assert len(_files(cache_home)) == len(settings)
    og.clear_cache()
    for split, size, resample in settings:
        images, names = load_omniglot_images(root, split, size, resample=resample)
        fresh = _fresh(root, split, size, resample)
        assert names == fresh[1] and torch.equal(images, fresh[0]), (split, size, resample)


def _write_zip(folder: Path, set_name: str, seed: int = 0) -> Path:
    pngs = _write_pngs(folder.parent / f"{folder.name}-pngs-{seed}", set_name, seed)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"images_{set_name}.zip"
    with zipfile.ZipFile(path, "w") as zf:
        for p in sorted(pngs.rglob("*.png")):
            zf.write(p, p.relative_to(pngs).as_posix())
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    (folder / "SHA256SUMS").write_text(f"{digest}  images_{set_name}.zip\n")
    return path


@pytest.mark.parametrize("kind", ["npz", "folder", "zip"])
def test_changed_source_misses(tmp_path, cache_home, kind):
    """New drawings in the same place, under the same names, are resized again, never served
    from the old file, which the new one replaces."""
    src = tmp_path / "changing"
    write = {"npz": _write_npz, "folder": _write_pngs, "zip": _write_zip}[kind]
    write(src, "background", 0)
    old, _ = load_omniglot_images(src, "background", 28)
    shutil.rmtree(src)
    write(src, "background", 1)
    og.clear_cache()
    new, names = load_omniglot_images(src, "background", 28)
    fresh = _fresh(src, "background")
    assert not torch.equal(new, old)
    assert torch.equal(new, fresh[0]) and names == fresh[1]
    (name,) = _files(cache_home)                           # the old source's file is gone
    og.clear_cache()
    assert torch.equal(load_omniglot_images(src, "background", 28)[0], new)
    assert _files(cache_home) == [name]


def test_one_changed_png_in_a_folder_misses(tmp_path, cache_home):
    _write_pngs(tmp_path / "src", "background")
    load_omniglot_images(tmp_path / "src", "background", 28)
    png = tmp_path / "src" / "images_background" / "Beta" / "character01" / "0003_07.png"
    Image.fromarray(np.ones((105, 105), bool)).save(png)                # a blank drawing
    og.clear_cache()
    images, _ = load_omniglot_images(tmp_path / "src", "background", 28)
    assert int(images[2, 6].max()) == 0 and torch.equal(images, _fresh(tmp_path / "src")[0])


@pytest.mark.parametrize("change", ["format", "torch", "cpu"])
def test_format_and_torch_build_are_in_the_key(root, cache_home, monkeypatch, change):
    """Another format or torch build resizes again. A newer format's file replaces the old
    one; another torch build's (another environment sharing the folder: another venv, a
    node with other CPU kernels) keeps it, so the two do not remove each other's files."""
    load_omniglot_images(root, "background", 28)
    (old,) = _files(cache_home)
    og.clear_cache()
    with monkeypatch.context() as m:
        if change == "format":
            m.setattr(og, "CACHE_VERSION", og.CACHE_VERSION + 1)
        elif change == "torch":
            m.setattr(torch, "__version__", "0.0.1")
        else:
            m.setattr(torch.backends.cpu, "get_cpu_capability", lambda: "ELSEWHERE")
        load_omniglot_images(root, "background", 28)
        (new,) = set(_files(cache_home)) - {old}
        assert new.startswith("background-28px-bilinear-")
    if change == "format":
        assert _files(cache_home) == [new]
        return
    assert sorted(_files(cache_home)) == sorted([old, new])
    og.clear_cache()                    # back in the first environment: its file is a hit,
    mtime = (cache_home / old).stat().st_mtime_ns       # and the other's stays
    load_omniglot_images(root, "background", 28)
    assert sorted(_files(cache_home)) == sorted([old, new])
    assert (cache_home / old).stat().st_mtime_ns == mtime


def test_checksums_are_still_checked_on_a_hit(root, cache_home):
    load_omniglot_images(root, "background", 28)
    og.clear_cache()
    (root / "SHA256SUMS").write_text(f"{'ab' * 32}  omniglot_background.npz\n")
    with pytest.raises(ValueError, match="ab" * 32):
        load_omniglot_images(root, "background", 28)


def _damage(path: Path, how: str, other: Path) -> None:
    data = path.read_bytes()
    if how == "empty":
        path.write_bytes(b"")
    elif how == "truncated":
        path.write_bytes(data[:len(data) // 2])
    elif how == "flipped":               # one bit of the image data, deep inside the file
        b = bytearray(data)
        b[len(b) // 2] ^= 0x10
        path.write_bytes(bytes(b))
    elif how == "garbage":
        path.write_bytes(b"PK\x03\x04" + bytes(range(256)) * 10)
    elif how == "pickle":
        np.save(path.with_suffix(".npy"), np.array([{"a": 1}], dtype=object))
        path.with_suffix(".npy").replace(path)
    elif how == "another key":   # a whole, valid file of the same shapes, for another kernel
        shutil.copyfile(other, path)
    elif how == "a folder":
        path.unlink()
        path.mkdir()


DAMAGE = ["empty", "truncated", "flipped", "garbage", "pickle", "another key", "a folder"]


@pytest.mark.parametrize("how", DAMAGE)
def test_damaged_file_is_resized_again_and_replaced(root, cache_home, monkeypatch, how):
    load_omniglot_images(root, "background", 28, resample="bicubic")
    load_omniglot_images(root, "background", 28)
    path = next(cache_home.glob("background-28px-bilinear-*.npz"))
    other = next(cache_home.glob("background-28px-bicubic-*.npz"))
    _damage(path, how, other)
    og.clear_cache()
    images, names = load_omniglot_images(root, "background", 28)       # no error
    fresh = _fresh(root)
    assert names == fresh[1] and torch.equal(images, fresh[0])
    assert not [p for p in cache_home.iterdir() if p.name.endswith(".tmp")]
    if how != "a folder":       # replaced: the next process reads it without resizing
        og.clear_cache()
        _no_resizing(monkeypatch)
        assert torch.equal(load_omniglot_images(root, "background", 28)[0], fresh[0])


def test_unwritable_cache_folder_is_no_error(root, tmp_path, monkeypatch):
    """A file where the cache folder $METALOOP_DATA/omniglot would be: no folder can be made
    there; the images are resized in memory as before."""
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "omniglot").write_text("")
    monkeypatch.setenv("METALOOP_DATA", str(tmp_path / "data"))
    images, names = load_omniglot_images(root, "background", 28)
    fresh = _fresh(root)
    assert names == fresh[1] and torch.equal(images, fresh[0])
    assert (tmp_path / "data" / "omniglot").read_text() == ""


@pytest.mark.parametrize("value", ["a_file", "a_file/data", ""])
def test_data_folder_that_cannot_be_one_is_refused_by_name(root, tmp_path, monkeypatch,
                                                           value):
    """$METALOOP_DATA set to a file, a path below a file or nothing names no folder: refused
    by name before anything is read or written, not skipped for another place."""
    (tmp_path / "a_file").write_text("")
    setting = str(tmp_path / value) if value else ""
    monkeypatch.setenv("METALOOP_DATA", setting)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    before = sorted(tmp_path.rglob("*"))
    what = {"a_file": "a file", "a_file/data": f"below the file {tmp_path / 'a_file'}",
            "": "set but empty"}[value]
    for call in (og.search_dirs, og.download_dir, og.resized_cache_dir,
                 lambda: load_omniglot_images(root, "background", 28)):
        with pytest.raises(ValueError, match=r"^\$METALOOP_DATA is ") as err:
            call()
        assert what in str(err.value) and (not value or repr(setting) in str(err.value))
    assert og.search_dirs(root) == [root]          # a root given: the variable is not read
    assert sorted(tmp_path.rglob("*")) == before


@pytest.mark.parametrize("error", [OSError(28, "No space left on device"), KeyboardInterrupt])
def test_interrupted_write_leaves_no_file(root, cache_home, monkeypatch, error):
    """A write that fails half-way (a full disk) is no error and leaves neither the file nor
    its temporary; an interrupt propagates, and leaves nothing either."""
    def fail(fd):
        raise error
    monkeypatch.setattr(og.os, "fsync", fail)
    if isinstance(error, OSError):
        images, _ = load_omniglot_images(root, "background", 28)
        assert torch.equal(images, _fresh(root)[0])
    else:
        with pytest.raises(KeyboardInterrupt):
            load_omniglot_images(root, "background", 28)
    assert _files(cache_home) == []


def test_a_reader_never_sees_a_partial_file(root, cache_home, monkeypatch):
    """While the file is being written, only a hidden temporary exists beside it."""
    seen = []
    real_fsync = os.fsync

    def look(fd):
        seen.append(_files(cache_home))
        real_fsync(fd)
    monkeypatch.setattr(og.os, "fsync", look)
    load_omniglot_images(root, "background", 28)
    (during,), after = seen, _files(cache_home)
    assert len(during) == 1 and during[0].startswith(".background-28px-")
    assert during[0].endswith(".tmp") and len(after) == 1 and during[0].startswith(f".{after[0]}")


@pytest.mark.parametrize("value", ["0", "off", "False", "no"])
def test_turned_off_writes_nothing(root, cache_home, monkeypatch, value):
    monkeypatch.setenv(og.CACHE_ENV, value)
    assert og.resized_cache_dir() is None
    load_omniglot_images(root, "background", 28)
    assert not cache_home.parent.exists()


def test_bad_switch_is_named(root, cache_home, monkeypatch):
    monkeypatch.setenv(og.CACHE_ENV, "sometimes")
    with pytest.raises(ValueError, match=r"\$METALOOP_OMNIGLOT_CACHE is 'sometimes'"):
        load_omniglot_images(root, "background", 28)
    assert not cache_home.parent.exists()


def test_original_size_is_not_cached(root, cache_home):
    """105x105 is only unpacked (as fast as reading a file 14 times larger): nothing written."""
    images, _ = load_omniglot_images(root, "background", 105)
    assert torch.equal(images, torch.from_numpy(_ink("background").astype(np.uint8) * 255))
    assert _files(cache_home) == []


def test_cache_lives_in_the_data_cache(monkeypatch, tmp_path):
    monkeypatch.delenv("METALOOP_DATA")
    assert og.resized_cache_dir() == tmp_path / "home" / ".cache" / "metaloop" / "omniglot" / \
        "resized"
    monkeypatch.setenv("METALOOP_DATA", str(tmp_path / "d"))
    assert og.resized_cache_dir() == tmp_path / "d" / "omniglot" / "resized"


# ----------------------------------------------------------------------------- replaced files


def _old_build_file(root, cache_home, version: int) -> str:
    """The name of the cache file that cache format ``version`` (an older one) writes for
    ``root`` in this environment."""
    before = set(_files(cache_home))
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(og, "CACHE_VERSION", version)
        og.clear_cache()
        load_omniglot_images(root, "background", 28)
    og.clear_cache()
    (name,) = set(_files(cache_home)) - before
    return name


def test_other_sources_and_settings_keep_their_files(tmp_path, cache_home, monkeypatch):
    """A new file replaces only its own source's file of the same set, size and kernel: a
    second copy of Omniglot in use, the other kernel and the other set keep theirs."""
    a, b = tmp_path / "a", tmp_path / "b"
    _write_npz(a, "background")
    _write_zip(b, "background", seed=1)
    _write_npz(a, "evaluation")
    monkeypatch.setattr(og, "CACHE_VERSION", -1)                # an older cache format
    for src, split, resample in ((a, "background", "bilinear"), (b, "background", "bilinear"),
                                 (a, "background", "bicubic"), (a, "evaluation", "bilinear")):
        load_omniglot_images(src, split, 28, resample=resample)
    before = _files(cache_home)
    assert len(before) == 4
    monkeypatch.undo()
    monkeypatch.setenv("METALOOP_DATA", str(cache_home.parent.parent))
    og.clear_cache()
    load_omniglot_images(a, "background", 28)
    after = _files(cache_home)
    gone, new = set(before) - set(after), set(after) - set(before)
    assert len(gone) == 1 and len(new) == 1 and len(after) == 4
    (gone,), (new,) = gone, new
    assert gone.startswith("background-28px-bilinear-") and new.startswith(gone[:-21])
    fresh = _fresh(b)[0]
    og.clear_cache()                     # b's file is still read: b is not resized again
    _no_resizing(monkeypatch)
    monkeypatch.setattr(og, "CACHE_VERSION", -1)
    assert torch.equal(load_omniglot_images(b, "background", 28)[0], fresh)


def test_only_whole_cache_files_of_ours_are_removed(root, tmp_path, cache_home):
    """Files in the cache folder that are not whole cache files of ours are never removed:
    a temporary file being written, a damaged file, a file whose key is not its name's, a
    file that is no cache file, a link, the user's own files."""
    linked = _old_build_file(root, cache_home, -2)
    elsewhere = tmp_path / "elsewhere.npz"
    (cache_home / linked).replace(elsewhere)
    (cache_home / linked).symlink_to(elsewhere)
    old = _old_build_file(root, cache_home, -1)
    kept = {f".{old}.x1y2z3.tmp": (cache_home / old).read_bytes(),                # being written
            "background-28px-bilinear-0123456789abcdef.npz": b"PK\x03\x04damaged",
            "background-28px-bilinear-fedcba9876543210.npz": (cache_home / old).read_bytes(),
            "background-28px-bilinear.npz": (cache_home / old).read_bytes(),
            "notes.txt": b"mine\n"}
    for name, data in kept.items():
        (cache_home / name).write_bytes(data)
    key_only = cache_home / f"background-28px-bilinear-{'ab' * 8}.npz"
    with open(key_only, "wb") as f:
        np.savez(f, key=np.array("ab" * 32))
    og.clear_cache()
    load_omniglot_images(root, "background", 28)                         # this build's file
    (new,) = set(_files(cache_home)) - set(kept) - {linked, key_only.name, old}
    assert set(_files(cache_home)) == set(kept) | {linked, key_only.name, new}
    assert (cache_home / linked).is_symlink() and elsewhere.is_file()
    for name, data in kept.items():
        assert (cache_home / name).read_bytes() == data, name


def test_a_file_of_format_1_is_removed(root, cache_home):
    """Files of the first format recorded no source: a new file of the same set, size and
    kernel replaces them; those of another size stay."""
    images = og._resize_packed(np.zeros((1, 20, og._PACKED_BYTES), np.uint8), 28)
    cache_home.mkdir(parents=True)
    for size in (28, 14):
        key = hashlib.sha256(f"format 1, {size}".encode()).hexdigest()
        with open(cache_home / f"background-{size}px-bilinear-{key[:16]}.npz", "wb") as f:
            np.savez(f, key=np.array(key), images=images.numpy(),
                     class_names=np.array(["Alpha/character01"]))
    old = _files(cache_home)
    load_omniglot_images(root, "background", 28)
    after = _files(cache_home)
    assert [n for n in old if n.startswith("background-14px-")] == \
        [n for n in after if n.startswith("background-14px-")]
    assert len(after) == 2 and not set(after) & {n for n in old if "-28px-" in n}


def test_a_file_that_cannot_be_removed_is_no_error(root, cache_home, monkeypatch):
    old = _old_build_file(root, cache_home, -1)

    def refuse(path, *args, **kwargs):
        raise PermissionError(13, "Permission denied", str(path))
    monkeypatch.setattr(og.os, "unlink", refuse)
    images, _ = load_omniglot_images(root, "background", 28)
    assert torch.equal(images, _fresh(root)[0])
    assert old in _files(cache_home) and len(_files(cache_home)) == 2


@pytest.mark.skipif(os.name != "posix", reason="POSIX file modes")
@pytest.mark.parametrize(("umask", "mode"), [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_cache_files_follow_the_umask(root, cache_home, umask, mode):
    """A cache file gets the mode any file the user writes gets (it was always 0600)."""
    before = os.umask(umask)
    try:
        load_omniglot_images(root, "background", 28)
    finally:
        os.umask(before)
    (name,) = _files(cache_home)
    assert (cache_home / name).stat().st_mode & 0o777 == mode


def test_writing_a_cache_file_leaves_the_process_umask_alone(root, cache_home, monkeypatch):
    """Reading the umask means setting it (to 0, then back): meanwhile every other thread's
    new files were created world-writable. The kernel applies the umask as the file is
    created instead."""
    def no_umask(mask):
        raise AssertionError("os.umask called")

    before = os.umask(0o027)
    try:
        monkeypatch.setattr(os, "umask", no_umask)
        load_omniglot_images(root, "background", 28)
    finally:
        monkeypatch.undo()
        os.umask(before)
    (name,) = _files(cache_home)
    assert (cache_home / name).stat().st_mode & 0o777 == 0o640
