"""The cache of resized Omniglot sets keeps itself tidy and says what it holds: a temporary
file names its writer, the next writer removes those whose writer is provably gone (and no
other), ``cache_files`` lists the folder and ``prune_cache`` removes what this environment
does not use."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from metaloop.data import omniglot as og
from metaloop.data.omniglot import load_omniglot_images

NAMES = {"background": ["Alpha/character01", "Beta/character01"],
         "evaluation": ["Gamma/character01"]}
posix_only = pytest.mark.skipif(os.name != "posix", reason="tells a writer's pid by kill(pid, 0)")


@pytest.fixture(autouse=True)
def cache_home(omniglot_cache_home) -> Path:
    """The data cache in this test's folder, on, and nothing decoded in this process yet."""
    return omniglot_cache_home


@pytest.fixture
def root(tmp_path) -> Path:
    """Both sets packed, random strokes."""
    folder = tmp_path / "src"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for s, names in NAMES.items():
        ink = rng.random((len(names), 20, 105, 105)) < 0.1
        np.savez(folder / f"omniglot_{s}.npz", class_names=np.array(names),
                 images_packed=np.packbits(ink.reshape(len(names), 20, -1), axis=-1))
    return folder


def _files(folder: Path) -> set[str]:
    return {p.name for p in folder.iterdir()} if folder.is_dir() else set()


def _load(root, set_name="background", size=28) -> None:
    """Load one set in a fresh process's state: reads the disk cache, or resizes and writes."""
    og.clear_cache()
    load_omniglot_images(root, set_name, size)
    og.clear_cache()


def _dead_pid() -> int:
    """The pid of a process of this host that has ended (and been reaped)."""
    child = subprocess.Popen([sys.executable, "-c", ""])
    child.wait()
    return child.pid


def _temp_name(cache_name: str, pid: int, host: str | None = None) -> str:
    return f".{cache_name}.{host or og._writer_host()}-{pid}-0123abcd.tmp"


def _other_build_file(root, cache_home, version="0.0.1", set_name="background") -> str:
    """The name of the cache file that another torch build writes for ``root``."""
    before = _files(cache_home)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(torch, "__version__", version)
        _load(root, set_name)
    (name,) = _files(cache_home) - before
    return name


# ----------------------------------------------------------------------------- temporaries


def test_a_temporary_file_names_its_writer(root, cache_home, monkeypatch):
    """While a file is written, its temporary's name holds this host and this process."""
    seen = []
    real_fsync = os.fsync

    def look(fd):
        seen.append(_files(cache_home))
        real_fsync(fd)
    monkeypatch.setattr(og.os, "fsync", look)
    _load(root)
    ((during,),), (after,) = seen, _files(cache_home)
    m = og._TEMP_NAME.match(during)
    assert m is not None and m[1] == after
    assert og._temporary_writer(m[2], og._writer_host()) == \
        (f"pid {os.getpid()} of this host, running", False)
    assert m[2].startswith(f"{og._writer_host()}-{os.getpid()}-")


def test_the_host_tells_hostname_and_pid_namespace_apart(monkeypatch):
    """The same in every process of this host; another with another hostname or, on Linux,
    in another pid namespace (a container), whose pids are not this one's."""
    here = og._writer_host()
    assert og._writer_host() == here and og._TEMP_WRITER.match(f"{here}-1-0123abcd")
    with monkeypatch.context() as m:
        m.setattr(og.socket, "gethostname", lambda: "elsewhere")
        assert og._writer_host() != here
    if Path("/proc/self/ns/pid").exists():
        with monkeypatch.context() as m:
            m.setattr(og.os, "readlink", lambda path: "pid:[1]")
            assert og._writer_host() != here


@posix_only
def test_a_writer_killed_mid_write_leaves_a_temporary_the_next_write_removes(root, cache_home):
    """A writer SIGKILLed between writing and renaming leaves its temporary file; the next
    writer of the folder (another set) removes it, as its writer is gone."""
    script = ("import os, signal, sys\n"
              "from metaloop.data import omniglot as og\n"
              "os.fsync = lambda fd: os.kill(os.getpid(), signal.SIGKILL)\n"
              "og.load_omniglot_images(sys.argv[1], 'background', 28)\n")
    child = subprocess.Popen([sys.executable, "-c", script, str(root)], env=os.environ.copy())
    assert child.wait() == -signal.SIGKILL
    (left,) = _files(cache_home)
    m = og._TEMP_NAME.match(left)
    assert m is not None and og._temporary_writer(m[2], og._writer_host()) == \
        (f"pid {child.pid} of this host, gone", True)
    _load(root, "evaluation")
    (written,) = _files(cache_home)
    assert written.startswith("evaluation-28px-bilinear-")


@posix_only
def test_only_temporaries_whose_writer_is_provably_gone_are_removed(root, cache_home, tmp_path):
    """Kept: the temporary of a running process of this host (a child, and this process:
    another of its threads may be writing), of another host or container (its pids are not
    ours to test), of an older writer (its name says nothing of its writer), a link; removed:
    that of an ended process of this host."""
    _load(root, "evaluation")
    (cache_name,) = _files(cache_home)
    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    dead = _dead_pid()
    try:
        kept = [_temp_name(cache_name, live.pid), _temp_name(cache_name, os.getpid()),
                _temp_name(cache_name, dead, host="0123456789ab"),
                f".{cache_name}.x1y2z3.tmp", f".{cache_name}.0123abcd.tmp"]
        for i, name in enumerate(kept):
            (cache_home / name).write_bytes(b"being written" * (i + 1))
        stale = _temp_name(cache_name, dead)
        (cache_home / stale).write_bytes(b"left by a killed writer")
        target = tmp_path / "elsewhere.tmp"
        target.write_bytes(b"not ours")
        linked = f".{cache_name}.{og._writer_host()}-{dead}-4567cdef.tmp"
        (cache_home / linked).symlink_to(target)
        _load(root, "background")                             # the next writer of the folder
        after = _files(cache_home)
        assert stale not in after
        assert set(kept) | {linked, cache_name} <= after and target.is_file()
        for i, name in enumerate(kept):
            assert (cache_home / name).read_bytes() == b"being written" * (i + 1), name
        live.kill()
        live.wait()
        _load(root, "background", 14)                    # the child has ended: now it goes
        assert _temp_name(cache_name, live.pid) not in _files(cache_home)
        assert set(kept[1:]) <= _files(cache_home)
    finally:
        live.kill()
        live.wait()


def test_a_reading_process_removes_nothing(root, cache_home):
    """Only a writer tidies the folder: a cache hit leaves a stale temporary to the next."""
    _load(root)
    (cache_name,) = _files(cache_home)
    stale = _temp_name(cache_name, _dead_pid())
    (cache_home / stale).write_bytes(b"x")
    _load(root)
    assert stale in _files(cache_home)


def test_on_windows_no_pid_is_taken_for_gone(monkeypatch):
    """``os.kill`` would end the process there: no writer is ever provably gone."""
    def kill(pid, sig):
        raise AssertionError("os.kill called")
    dead = _dead_pid()
    with monkeypatch.context() as m:          # undone before pytest reports (it uses os.name)
        m.setattr(og.os, "name", "nt")
        m.setattr(og.os, "kill", kill)
        alive = og._pid_alive(dead)
    assert alive


@pytest.mark.parametrize("pid", [0, -1, 10**10])
def test_a_pid_no_process_has_is_never_taken_for_gone(pid):
    assert og._pid_alive(pid)


# ----------------------------------------------------------------------------- listing


def test_cache_files_says_what_the_folder_holds(root, cache_home):
    """Each file with its set, size, kernel, environment, bytes and whether this environment
    uses it; temporaries with their writer; other files in the folder are not listed."""
    _load(root)
    _load(root, "evaluation", 14)
    mine = _files(cache_home)
    other = _other_build_file(root, cache_home)
    dead = _dead_pid()
    stale = _temp_name(other, dead)
    damaged = "background-28px-bilinear-0123456789abcdef.npz"
    for name, data in ((stale, b"12345"), (damaged, b"PK\x03\x04damaged"), ("notes.txt", b"m")):
        (cache_home / name).write_bytes(data)
    listed = {f.path.name: f for f in og.cache_files()}
    assert set(listed) == mine | {other, stale, damaged}
    assert all(f.path == cache_home / n and f.bytes == (cache_home / n).stat().st_size
               for n, f in listed.items())
    here = og.cache_environment()
    for name in mine:
        f = listed[name]
        assert (f.kind, f.environment, f.in_use, f.writer, f.removable) == \
            ("cache", here, True, None, False)
        assert (f.set_name, f.size, f.resample) == (("background", 28, "bilinear")
                                                    if name.startswith("background") else
                                                    ("evaluation", 14, "bilinear"))
    f = listed[other]
    assert (f.kind, f.environment, f.in_use, f.removable) == \
        ("cache", here.replace(torch.__version__, "0.0.1"), False, True)
    f = listed[stale]
    assert (f.kind, f.environment, f.in_use, f.bytes, f.set_name, f.size) == \
        ("stale" if os.name == "posix" else "temporary", None, False, 5, "background", 28)
    assert f.writer == (f"pid {dead} of this host, gone" if os.name == "posix"
                        else f"pid {dead} of this host, running")
    f = listed[damaged]
    assert (f.kind, f.environment, f.in_use, f.removable) == ("other", None, False, False)


def test_cache_files_of_a_missing_folder_is_empty(tmp_path):
    assert og.cache_files(tmp_path / "none") == [] and og.cache_files() == []


def test_cache_files_of_a_file_is_named(tmp_path):
    (tmp_path / "a_file").write_text("")
    with pytest.raises(ValueError, match=r"cannot list the Omniglot cache folder .*a_file"):
        og.cache_files(tmp_path / "a_file")


def test_cache_folder_is_the_cache_folder_also_when_off(cache_home, monkeypatch):
    assert og.cache_folder() == og.resized_cache_dir() == cache_home
    monkeypatch.setenv(og.CACHE_ENV, "0")
    assert og.resized_cache_dir() is None and og.cache_folder() == cache_home


# ----------------------------------------------------------------------------- pruning


def test_prune_cache_removes_what_this_environment_does_not_use(root, cache_home, monkeypatch):
    """Removed: another torch build's file, an older format's that recorded no build, a
    stale temporary. Kept: this build's files (still read, not resized again), a
    temporary being written, a damaged file, the user's own file."""
    _load(root)
    mine = _files(cache_home)
    other = _other_build_file(root, cache_home)
    older = "background-14px-bilinear-" + "ab" * 8 + ".npz"
    with open(cache_home / older, "wb") as f:             # recorded no build
        np.savez(f, key=np.array("ab" * 32), images=np.zeros((1, 20, 14, 14), np.uint8),
                 class_names=np.array(["Alpha/character01"]))
    stale = _temp_name(other, _dead_pid())
    being_written = _temp_name(other, os.getpid())
    kept = {being_written: b"being written",
            "background-28px-bilinear-0123456789abcdef.npz": b"PK\x03\x04damaged",
            "notes.txt": b"mine\n"}
    for name, data in {**kept, stale: b"stale"}.items():
        (cache_home / name).write_bytes(data)
    sizes = {n: (cache_home / n).stat().st_size for n in (other, older, stale)}
    removed = og.prune_cache()
    gone = {other, older} | ({stale} if os.name == "posix" else set())
    assert {f.path.name for f in removed} == gone
    assert {f.path.name: f.bytes for f in removed} == {n: sizes[n] for n in gone}
    assert _files(cache_home) == mine | set(kept) | ({stale} - gone)
    for name, data in kept.items():
        assert (cache_home / name).read_bytes() == data
    assert og.prune_cache() == []                                      # nothing left to do

    def fail(*args, **kwargs):
        raise AssertionError("resized again instead of reading the cache")
    monkeypatch.setattr(og, "_resize_packed", fail)
    _load(root)                                                  # this build's file is read


def test_prune_cache_of_an_explicit_folder(root, cache_home, tmp_path):
    _load(root)
    other = _other_build_file(root, cache_home)
    moved = tmp_path / "moved"
    cache_home.rename(moved)
    assert [f.path for f in og.prune_cache(moved)] == [moved / other]


def test_a_file_that_cannot_be_removed_is_named(root, cache_home, monkeypatch):
    """Every other file is still removed; the error names the one that could not be, and
    what was removed besides it."""
    _load(root)
    first = _other_build_file(root, cache_home, "0.0.1")
    second = _other_build_file(root, cache_home, "0.0.2")
    unlink = os.unlink

    def refuse(path, *args, **kwargs):
        if Path(path).name == first:
            raise PermissionError(13, "Permission denied")
        unlink(path, *args, **kwargs)
    monkeypatch.setattr(og.os, "unlink", refuse)
    size = (cache_home / second).stat().st_size
    with pytest.raises(ValueError, match=rf"cannot remove .*{first} \(Permission denied\); "
                                         rf"removed 1 other file \({size} bytes\)"):
        og.prune_cache()
    assert first in _files(cache_home) and second not in _files(cache_home)
