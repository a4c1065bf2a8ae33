"""The image-folder cache under loaders running at once while the folder changes: an old
cache removed or replaced by another build while this one reuses its rows is no error and
no wrong image; a rebuild removes the arrays of its cache that no manifest names (copies
left by builds that ran at once), and builds of one cache take turns (``_build_lock``).
The tests of an old cache removed or replaced while reused, of the clean-up and of the
turns failed on the cache before these fixes; the multi-process one failed there now and
then (``CacheWriteError``: an array just put in place removed by another build)."""

import os
import subprocess
import sys
import textwrap
import threading
import time

import numpy as np
import pytest
from PIL import Image

from metaloop.data import folder as folder_mod
from metaloop.data.folder import CACHE_DIRNAME, load_folder


def _png(path, seed: int) -> None:
    """A PNG of noise, written whole (renamed into place: a loader never reads half)."""
    rng = np.random.default_rng(seed)
    tmp = path.with_name(f".{path.name}")
    Image.fromarray(rng.integers(0, 256, (12, 12), dtype=np.uint8)).save(tmp, format="PNG")
    os.replace(tmp, path)


def _folder(root, classes: int = 3, per: int = 4):
    for c in range(classes):
        (root / f"c{c}").mkdir(parents=True)
        for i in range(per):
            _png(root / f"c{c}" / f"{i}.png", 100 * c + i)
    return root


def _change(root, seed: int = 999) -> None:
    """Rewrite one image with other pixels (a later mtime: the cache sees the change)."""
    path = root / "c1" / "2.png"
    _png(path, seed)
    t = time.time() + 5
    os.utime(path, (t, t))


def _fresh(root, tmp_path):
    """The folder decoded from nothing, in a cache of its own."""
    return load_folder(root, image_size=8, cache_dir=tmp_path / "fresh")


def _arrays(cdir) -> list[str]:
    return sorted(p.name for p in cdir.glob("*.npy"))


def _named(cdir) -> list[str]:
    import json
    (manifest,) = cdir.glob("*.json")
    m = json.loads(manifest.read_text())
    return sorted(m[k] for k in ("images", "labels", "stats"))


def test_old_images_removed_while_reused_is_no_error(tmp_path, monkeypatch):
    """Another build removes the old images file after this one read the manifest naming
    it: the rows are still copied right, no CacheWriteError (before: ``[Errno 2] No such
    file or directory``, reported as an unwritable cache)."""
    root = _folder(tmp_path / "imgs")
    load_folder(root, image_size=8)
    cdir = root / CACHE_DIRNAME
    _change(root)
    real = folder_mod._reusable

    def reusable_then_removed(cdir_, old, scan, row):
        out = real(cdir_, old, scan, row)
        (cdir_ / old["images"]).unlink()                     # the other build's clean-up
        return out

    monkeypatch.setattr(folder_mod, "_reusable", reusable_then_removed)
    d = load_folder(root, image_size=8)
    assert d.cache_status == "rebuilt (files changed)"
    want = _fresh(root, tmp_path)
    assert d.files == want.files and bool((d.images == want.images).all())
    assert _arrays(cdir) == _named(cdir)


def test_old_images_replaced_while_reused_gives_the_right_images(tmp_path, monkeypatch):
    """The old images file replaced by another file of its name and size after its header
    was checked: the rows come from the file checked (before: the other file's bytes,
    silently, zeros here)."""
    root = _folder(tmp_path / "imgs")
    load_folder(root, image_size=8)
    _change(root)
    real = folder_mod._reusable

    def reusable_then_replaced(cdir_, old, scan, row):
        out = real(cdir_, old, scan, row)
        path = cdir_ / old["images"]
        other = cdir_ / "other.bin"
        other.write_bytes(b"\0" * path.stat().st_size)
        os.replace(other, path)
        return out

    monkeypatch.setattr(folder_mod, "_reusable", reusable_then_replaced)
    d = load_folder(root, image_size=8)
    want = _fresh(root, tmp_path)
    assert d.files == want.files and bool((d.images == want.images).all())


def test_old_images_gone_before_reuse_decodes_everything(tmp_path, monkeypatch):
    """Removed before this build looked at it: nothing to reuse, every image decoded."""
    root = _folder(tmp_path / "imgs")
    load_folder(root, image_size=8)
    _change(root)
    real_reusable, real_decode = folder_mod._reusable, folder_mod._decode
    decoded = []

    def removed_then_reusable(cdir_, old, scan, row):
        (cdir_ / old["images"]).unlink()
        return real_reusable(cdir_, old, scan, row)

    def decode(root_, rel, settings):
        decoded.append(rel)
        return real_decode(root_, rel, settings)

    monkeypatch.setattr(folder_mod, "_reusable", removed_then_reusable)
    monkeypatch.setattr(folder_mod, "_decode", decode)
    d = load_folder(root, image_size=8)
    assert len(decoded) == 12
    want = _fresh(root, tmp_path)
    assert bool((d.images == want.images).all())


def _leave_stale_copies(cdir, key: str, copies: int = 3) -> list[str]:
    """Copies of the cache's arrays under names no manifest gives, as builds that ran at
    once leave them; and another cache's array, which is not this rebuild's to remove."""
    stale = []
    named = _named(cdir)
    for n in range(copies):
        for kind in ("images", "labels", "stats"):
            (src,) = [cdir / a for a in named if a.endswith(f".{kind}.npy")]
            dst = cdir / f"{key}-{n:016x}.{kind}.npy"
            dst.write_bytes(src.read_bytes())
            stale.append(dst.name)
    (cdir / "0123456789abcdef-x.images.npy").write_bytes(b"another cache's array")
    return stale


def test_rebuild_removes_arrays_no_manifest_names(tmp_path):
    root = _folder(tmp_path / "imgs")
    load_folder(root, image_size=8)
    cdir = root / CACHE_DIRNAME
    (manifest,) = cdir.glob("*.json")
    key = manifest.stem
    stale = _leave_stale_copies(cdir, key)
    assert load_folder(root, image_size=8).cache_status == "hit"
    assert set(stale) <= set(_arrays(cdir))                  # a hit removes nothing
    _change(root)
    assert load_folder(root, image_size=8).cache_status == "rebuilt (files changed)"
    mine = [a for a in _arrays(cdir) if a.startswith(f"{key}-")]
    assert mine == _named(cdir) and len(mine) == 3
    assert (cdir / "0123456789abcdef-x.images.npy").exists()
    assert sorted(p.name for p in cdir.iterdir() if p.suffix not in (".npy",)) == \
        [manifest.name]                                      # no lock file, no .tmp left
    assert load_folder(root, image_size=8).cache_status == "hit"


def test_without_locks_only_old_unnamed_arrays_are_removed(tmp_path, monkeypatch):
    """Where there is no ``flock``: an unnamed array is removed once unchanged for
    ``STALE_ARRAY_SECONDS``; a newer one may be another build's, put in place and not yet
    named, and stays. The arrays of the replaced manifest go at once."""
    monkeypatch.setattr(folder_mod, "fcntl", None)
    root = _folder(tmp_path / "imgs")
    load_folder(root, image_size=8)
    cdir = root / CACHE_DIRNAME
    (manifest,) = cdir.glob("*.json")
    key = manifest.stem
    before = _named(cdir)
    stale = _leave_stale_copies(cdir, key, copies=2)
    old = time.time() - getattr(folder_mod, "STALE_ARRAY_SECONDS", 60.0) - 5
    for name in stale[:3]:
        os.utime(cdir / name, (old, old))
    _change(root)
    assert load_folder(root, image_size=8).cache_status == "rebuilt (files changed)"
    left = set(_arrays(cdir))
    assert not left & set(stale[:3]) and set(stale[3:]) <= left
    assert not left & set(before)
    assert set(_named(cdir)) <= left


@pytest.mark.skipif(folder_mod.fcntl is None, reason="no flock")
def test_builds_of_one_cache_take_turns_and_the_second_opens_the_first(tmp_path,
                                                                      monkeypatch):
    """Two loaders of a changed folder at once: one builds, the other waits for the lock,
    then finds the cache made and opens it (before: both decoded, each replacing the
    manifest)."""
    root = _folder(tmp_path / "imgs")
    load_folder(root, image_size=8)
    _change(root)
    real = folder_mod._build
    builds, started = [], threading.Event()

    def slow_build(*a, **k):
        builds.append(1)
        started.set()
        time.sleep(0.5)                          # the other loader reaches the lock meanwhile
        return real(*a, **k)

    monkeypatch.setattr(folder_mod, "_build", slow_build)
    out: dict[str, str] = {}

    def load(name):
        out[name] = load_folder(root, image_size=8, workers=1).cache_status

    first = threading.Thread(target=load, args=("first",))
    first.start()
    assert started.wait(10)
    second = threading.Thread(target=load, args=("second",))
    second.start()
    first.join(20)
    second.join(20)
    assert out == {"first": "rebuilt (files changed)", "second": "hit"} and len(builds) == 1
    cdir = root / CACHE_DIRNAME
    assert _arrays(cdir) == _named(cdir) and not list(cdir.glob("*.lock"))


def test_failed_first_build_leaves_no_cache_folder_or_lock(tmp_path):
    root = tmp_path / "imgs"
    (root / "a").mkdir(parents=True)
    (root / "a" / "0.png").write_bytes(b"not a png")
    with pytest.raises(ValueError, match="cannot"):
        load_folder(root, image_size=8)
    assert not (root / CACHE_DIRNAME).exists()


LOOP = textwrap.dedent("""
    import sys, time
    from metaloop.data.folder import load_folder
    end = time.time() + float(sys.argv[2])
    while time.time() < end:
        load_folder(sys.argv[1], image_size=8, workers=1)
""")


@pytest.mark.slow
def test_loaders_at_once_while_the_folder_changes(tmp_path):
    """Three processes load the folder in a loop while it changes every 50 ms (the
    tester's run, smaller): none fails, and once they are done one more load leaves the
    manifest's three arrays and nothing else."""
    root = _folder(tmp_path / "imgs", classes=6, per=10)
    load_folder(root, image_size=8)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        [str(folder_mod.Path(folder_mod.__file__).parents[2])]
        + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p])}
    procs = [subprocess.Popen([sys.executable, "-c", LOOP, str(root), "3"], env=env,
                              stderr=subprocess.PIPE, text=True) for _ in range(3)]
    n = 0
    while any(p.poll() is None for p in procs):
        _change(root, seed=10_000 + n)            # pixels no other image has
        n += 1
        time.sleep(0.05)
    errors = [p.communicate()[1] for p in procs]
    assert all(p.returncode == 0 for p in procs), errors
    d = load_folder(root, image_size=8)
    cdir = root / CACHE_DIRNAME
    assert d.cache_status.startswith(("hit", "rebuilt"))
    assert _arrays(cdir) == _named(cdir)
    assert [p.suffix for p in cdir.iterdir() if p.suffix != ".npy"] == [".json"]
