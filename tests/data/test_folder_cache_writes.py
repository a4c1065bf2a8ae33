"""Where the folder cache goes when it cannot be written beside the data, and the named
error when the chosen cache folder cannot be written at all."""

import json
from pathlib import Path

import pytest

from metaloop.data import folder as folder_mod
from metaloop.data.folder import CACHE_DIRNAME, load_folder


def test_unwritable_cache_folder_in_a_writable_root_caches_elsewhere(image_folder, tmp_path,
                                                                      monkeypatch):
    first = load_folder(image_folder)
    assert first.cache_dir == image_folder / CACHE_DIRNAME
    monkeypatch.setenv("METALOOP_CACHE", str(tmp_path / "cache"))
    real = folder_mod.os.access      # the root stays writable, its cache folder is not
    monkeypatch.setattr(folder_mod.os, "access",
                        lambda p, mode: Path(p).name != CACHE_DIRNAME and real(p, mode))
    d = load_folder(image_folder)
    assert d.cache_dir == tmp_path / "cache" / "folders" and d.cache_status == "built"
    assert d.files == first.files and bool((d.images == first.images).all())


def test_cache_folder_that_cannot_be_written_is_named(image_folder, tmp_path):
    blocker = tmp_path / "not_a_folder"
    blocker.write_text("a file where the cache folder's parent should be")
    with pytest.raises(ValueError, match=r"cannot write the decoded image cache of .*images "
                                         r"to .*not_a_folder/cache.*writable cache_dir"):
        load_folder(image_folder, cache_dir=blocker / "cache")


def test_cache_of_another_version_is_rebuilt_and_its_arrays_removed(image_folder, monkeypatch):
    """A CACHE_VERSION change rebuilds the cache under the same manifest name; the arrays the
    old manifest named went unreferenced and stayed on disk, one copy per version."""
    cdir = image_folder / CACHE_DIRNAME
    monkeypatch.setattr(folder_mod, "CACHE_VERSION", folder_mod.CACHE_VERSION - 1)
    old = load_folder(image_folder)
    old_arrays = sorted(p.name for p in cdir.glob("*.npy"))
    assert old.cache_status == "built" and len(old_arrays) == 3
    monkeypatch.undo()
    new = load_folder(image_folder)
    assert new.cache_status == "rebuilt (made by another metaloop version)"
    arrays = sorted(p.name for p in cdir.glob("*.npy"))
    assert len(arrays) == 3 and not set(arrays) & set(old_arrays)
    assert len(list(cdir.glob("*.json"))) == 1 and bool((new.images == old.images).all())
    assert load_folder(image_folder).cache_status == "hit"


def test_damaged_manifest_deletes_nothing_it_names_outside_the_cache(image_folder, tmp_path):
    """The manifest is only a file in the cache: names in it that are not the cache's own
    arrays (a path, another key's file) are never deleted."""
    load_folder(image_folder)
    cdir = image_folder / CACHE_DIRNAME
    (manifest,) = cdir.glob("*.json")
    outside = tmp_path / "keep.npy"
    outside.write_bytes(b"not ours")
    other = cdir / "0123456789abcdef-x.images.npy"
    other.write_bytes(b"another cache's array")
    m = json.loads(manifest.read_text())
    m.update(version=0, images=str(outside), labels=other.name, stats="../keep.npy")
    manifest.write_text(json.dumps(m))
    assert load_folder(image_folder).cache_status.startswith("rebuilt")
    assert outside.exists() and other.exists()
