"""Where the folder cache goes when it cannot be written beside the data, and the named
error when the chosen cache folder cannot be written at all."""

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
