"""The image-folder cache: a file rewritten with its size and mtime kept is decoded again;
a build writes its images as they come (never the whole set in memory); unreadable images
are named ten at a time; a ``<group>/<class>`` tree read at ``class_depth=1`` is pointed
out. Each test failed on the cache before these fixes."""

import json
import os
import threading
import tracemalloc

import numpy as np
import pytest
from PIL import Image

from metaloop.data import folder as folder_mod
from metaloop.data.folder import (
    CACHE_DIRNAME,
    UnreadableImagesError,
    load_folder,
    scan_folder,
)


def _bmp(path, value: int, side: int = 10) -> None:
    """A BMP of one grey ``value``: its byte size depends on the shape only."""
    Image.fromarray(np.full((side, side), value, np.uint8)).save(path)


def _folder(root, classes=("cat", "dog"), per=3):
    for c, name in enumerate(classes):
        (root / name).mkdir(parents=True)
        for i in range(per):
            _bmp(root / name / f"{i}.bmp", 1 + c * per + i)   # all distinct
    return root


def _pixel(data, rel) -> int:
    return int(data.images[data.files.index(rel)].max())


def _keep_size_and_mtime(path, write) -> None:
    """``write(path)``, then the size and mtime it had, as ``cp -p`` or ``rsync -a`` leave
    a copied file."""
    st = os.stat(path)
    write(path)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    after = os.stat(path)
    assert (after.st_size, after.st_mtime_ns) == (st.st_size, st.st_mtime_ns)


def test_a_file_rewritten_with_its_size_and_mtime_kept_is_decoded_again(tmp_path):
    root = _folder(tmp_path / "images")
    first = load_folder(root)
    assert _pixel(first, "cat/1.bmp") == 2
    _keep_size_and_mtime(root / "cat" / "1.bmp", lambda p: _bmp(p, 200))
    again = load_folder(root)
    assert again.cache_status == "rebuilt (files changed)"
    assert _pixel(again, "cat/1.bmp") == 200
    assert load_folder(root).cache_status == "hit"                # nothing else changed


def test_a_file_renamed_over_with_its_size_and_mtime_kept_is_decoded_again(tmp_path):
    """``tar x`` / ``rsync`` write a new file beside and rename it over the old: a new
    ctime, the same size and mtime."""
    root = _folder(tmp_path / "images")
    load_folder(root)
    target = root / "dog" / "2.bmp"
    st = target.stat()
    fresh = tmp_path / "fresh.bmp"
    _bmp(fresh, 250)
    os.utime(fresh, ns=(st.st_atime_ns, st.st_mtime_ns))          # touch -r
    os.replace(fresh, target)
    assert (target.stat().st_size, target.stat().st_mtime_ns) == (st.st_size, st.st_mtime_ns)
    again = load_folder(root)
    assert again.cache_status == "rebuilt (files changed)"
    assert _pixel(again, "dog/2.bmp") == 250


def test_only_the_changed_file_is_decoded_again(tmp_path, monkeypatch):
    root = _folder(tmp_path / "images")
    load_folder(root)
    _keep_size_and_mtime(root / "cat" / "0.bmp", lambda p: _bmp(p, 99))
    calls = []
    real = folder_mod._decode
    monkeypatch.setattr(folder_mod, "_decode", lambda *a: calls.append(a[1]) or real(*a))
    again = load_folder(root)
    assert calls == ["cat/0.bmp"]
    assert [_pixel(again, f) for f in again.files] == [99, 2, 3, 4, 5, 6]


def test_an_old_cache_rebuilds_without_an_error(tmp_path):
    """A manifest of the format before (stats of size and mtime only, ``[N, 4]``) is
    rebuilt, whatever version it claims."""
    root = _folder(tmp_path / "images")
    load_folder(root)
    cdir = root / CACHE_DIRNAME
    (manifest_path,) = cdir.glob("*.json")
    m = json.loads(manifest_path.read_text())
    stats = np.load(cdir / m["stats"])
    np.save(cdir / m["stats"], np.concatenate([stats[:, :2], stats[:, 4:]], axis=1))
    m["hash"] = "0" * 64                                          # files changed, say
    manifest_path.write_text(json.dumps(m))
    again = load_folder(root)
    assert again.cache_status == "rebuilt (files changed)"
    assert [_pixel(again, f) for f in again.files] == [1, 2, 3, 4, 5, 6]
    m["version"] = 9
    manifest_path.write_text(json.dumps(m))
    assert load_folder(root).cache_status == "rebuilt (made by another metaloop version)"


def test_a_stat_field_the_platform_leaves_zero_decides_nothing(tmp_path, monkeypatch):
    root = _folder(tmp_path / "images")
    real = folder_mod._file_stat
    monkeypatch.setattr(folder_mod, "_file_stat", lambda st: (*real(st)[:2], 0, 0))
    assert load_folder(root).cache_status == "built"
    assert load_folder(root).cache_status == "hit"


def test_a_build_holds_a_window_of_images_not_the_set(tmp_path, monkeypatch):
    """The decoded set (300 x 96 x 96 = 2.8 MB) was held in one array before it was
    written; now each image goes to the file as it comes."""
    root = tmp_path / "many"
    for c in range(3):
        (root / f"c{c}").mkdir(parents=True)
        for i in range(100):
            a = np.random.default_rng([c, i]).integers(0, 256, (24, 24), dtype=np.uint8)
            Image.fromarray(a).save(root / f"c{c}" / f"{i}.png")
    monkeypatch.setattr(folder_mod, "CHUNK_IMAGES", 8, raising=False)
    tracemalloc.start()
    try:
        data = load_folder(root, image_size=96, workers=2)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    whole = 300 * 96 * 96
    assert data.images.shape == (300, 1, 96, 96)
    assert peak < whole // 2, (peak, whole)
    src = Image.open(root / "c2" / "99.png")
    assert src.size == (24, 24)
    assert int(data.images[-1].float().mean().round()) == pytest.approx(
        np.asarray(src).mean(), abs=2)


def test_a_set_larger_than_the_memory_is_decoded_to_disk(tmp_path, monkeypatch):
    root = _folder(tmp_path / "images", per=20)                    # 40 images
    monkeypatch.setattr(folder_mod, "CHUNK_IMAGES", 2, raising=False)
    row = 32 * 32
    monkeypatch.setattr(folder_mod, "_available_memory", lambda: 20 * row)   # half the set
    data = load_folder(root, image_size=32, workers=1)
    assert data.images.shape == (40, 1, 32, 32) and data.cache_status == "built"


def test_a_failed_rebuild_leaves_the_old_cache_and_no_temporary_file(tmp_path):
    root = _folder(tmp_path / "images")
    load_folder(root)
    cdir = root / CACHE_DIRNAME
    before = sorted(p.name for p in cdir.iterdir())
    (root / "dog" / "bad.png").write_bytes(b"not a png")
    with pytest.raises(UnreadableImagesError):
        load_folder(root)
    assert sorted(p.name for p in cdir.iterdir()) == before
    (root / "dog" / "bad.png").unlink()
    assert load_folder(root).cache_status == "hit"


def test_a_failed_first_build_leaves_no_cache_folder(tmp_path):
    root = _folder(tmp_path / "images")
    (root / "cat" / "bad.png").write_bytes(b"not a png")
    with pytest.raises(UnreadableImagesError):
        load_folder(root)
    assert not (root / CACHE_DIRNAME).exists()


def test_two_builders_at_once_both_succeed(tmp_path):
    root = _folder(tmp_path / "images", per=30)
    out, errors = [], []

    def build():
        try:
            out.append(load_folder(root, image_size=20, workers=1))
        except BaseException as e:                                  # noqa: BLE001
            errors.append(e)

    threads = [threading.Thread(target=build) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == [] and len(out) == 2
    assert all(d.images.shape == (60, 1, 20, 20) for d in out)
    assert not [p for p in (root / CACHE_DIRNAME).iterdir() if p.suffix == ".tmp"]
    assert load_folder(root, image_size=20).cache_status == "hit"


def test_unreadable_images_are_named_ten_with_their_reasons(tmp_path):
    root = _folder(tmp_path / "images")
    for i in range(12):
        (root / "cat" / f"bad{i:02d}.png").write_bytes(b"not a png")
    with pytest.raises(UnreadableImagesError) as info:
        load_folder(root)
    lines = info.value.problem.split("\n")
    assert lines[0] == "12 images cannot be read:"
    assert len(lines) == 12 and lines[-1] == "(and 2 more)"
    for i, line in enumerate(lines[1:11]):
        assert f"bad{i:02d}.png" in line, line
    assert "bad10.png" not in info.value.problem
    assert len(info.value.files) == 12


def test_one_unreadable_image_is_named_as_before(tmp_path):
    root = _folder(tmp_path / "images")
    (root / "cat" / "bad.png").write_bytes(b"not a png")
    with pytest.raises(UnreadableImagesError) as info:
        load_folder(root)
    assert "\n" not in info.value.problem and "bad.png" in info.value.problem


def _groups(root, groups=6, classes=10):
    for g in range(groups):
        for k in range(classes):
            d = root / f"alphabet{g}" / f"character{k:02d}"
            d.mkdir(parents=True)
            _bmp(d / "0.bmp", 1 + 10 * g + k)
    return root


def test_a_group_tree_read_at_class_depth_one_suggests_class_depth_two(tmp_path):
    root = _groups(tmp_path / "omniglot")
    with pytest.warns(folder_mod.NestedClassFoldersWarning) as record:
        data = load_folder(root)
    text = str(record[0].message)
    assert "60 of its 60 images sit in 60 sub-folders of its 6 class folders" in text
    assert "family.class_depth = 2" in text
    assert len(data.class_names) == 6 and data.images.shape[0] == 60   # read as before
    assert data.nested and scan_folder(root).nested
    assert not scan_folder(root, class_depth=2).nested
    assert len(load_folder(root, class_depth=2).class_names) == 60


def test_class_folders_with_their_own_images_or_one_sub_folder_each_say_nothing(tmp_path):
    root = _folder(tmp_path / "flat")
    assert scan_folder(root).nested == ""
    one = tmp_path / "one"
    for name in ("cat", "dog"):
        (one / name / "2019").mkdir(parents=True)
        for i in range(3):
            _bmp(one / name / "2019" / f"{i}.bmp", 1 + i + 10 * (name == "dog"))
    assert scan_folder(one).nested == ""
    mixed = _folder(tmp_path / "mixed", per=6)
    for name in ("cat", "dog"):
        for sub in ("a", "b"):
            (mixed / name / sub).mkdir()
            _bmp(mixed / name / sub / "x.bmp", 100 + ord(sub) + 20 * (name == "dog"))
    assert scan_folder(mixed).nested == ""                          # 4 of 16 nested


def test_a_killed_builds_temporary_file_is_removed_by_the_next_build(tmp_path):
    """A build writes its images file while it decodes: a ``kill -9`` left it, as large
    as the set, for good. One unchanged for a while and not locked goes; one a build
    still holds stays."""
    root = _folder(tmp_path / "images")
    load_folder(root, image_size=8)
    cdir = root / CACHE_DIRNAME
    key = next(cdir.glob("*.json")).stem
    stale, fresh, held = (cdir / f"{key}-x.images.npy{n}.tmp" for n in ("a", "b", "c"))
    for p in (stale, fresh, held):
        p.write_bytes(b"\0" * 1000)
    old = os.stat(stale).st_mtime_ns - 3600 * 10 ** 9
    os.utime(stale, ns=(old, old))
    os.utime(held, ns=(old, old))
    other = cdir / "0123456789abcdef-y.images.npy.tmp"              # another cache's
    other.write_bytes(b"")
    os.utime(other, ns=(old, old))
    with open(held, "rb") as f:
        folder_mod._hold(f)
        (root / "dog" / "9.bmp").write_bytes((root / "dog" / "0.bmp").read_bytes())
        assert load_folder(root, image_size=8).cache_status == "rebuilt (files changed)"
    assert not stale.exists() and fresh.exists() and other.exists()
    assert held.exists() or folder_mod.fcntl is None
