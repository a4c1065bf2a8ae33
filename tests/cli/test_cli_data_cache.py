"""``metaloop data omniglot --cache`` lists the cache of resized sets and ``--prune-cache``
removes the files this environment does not use; either one combined with another option is a
usage error that touches nothing."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from metaloop.cli.main import main
from metaloop.data import omniglot as og
from metaloop.data.omniglot import load_omniglot_images

NAMES = {"background": ["Alpha/character01", "Beta/character01"],
         "evaluation": ["Gamma/character01"]}


@pytest.fixture(autouse=True)
def cache_home(omniglot_cache_home) -> Path:
    """The data cache in this test's folder, on, and nothing decoded in this process yet."""
    return omniglot_cache_home


@pytest.fixture
def filled(tmp_path, cache_home) -> dict[str, str]:
    """A cache folder holding this environment's file of each set, another torch build's
    file and a temporary file left by an ended writer of this host; their names by role."""
    root = tmp_path / "src"
    root.mkdir()
    rng = np.random.default_rng(0)
    for s, names in NAMES.items():
        ink = rng.random((len(names), 20, 105, 105)) < 0.1
        np.savez(root / f"omniglot_{s}.npz", class_names=np.array(names),
                 images_packed=np.packbits(ink.reshape(len(names), 20, -1), axis=-1))
    names = {}
    for s in og.SETS:
        load_omniglot_images(root, s, 28)
        (names[s],) = {p.name for p in cache_home.iterdir()} - set(names.values())
    og.clear_cache()
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(torch, "__version__", "0.0.1")
        load_omniglot_images(root, "background", 28)
    og.clear_cache()
    (names["other"],) = {p.name for p in cache_home.iterdir()} - set(names.values())
    child = subprocess.Popen([sys.executable, "-c", ""])
    child.wait()
    names["stale"] = f".{names['other']}.{og._writer_host()}-{child.pid}-0123abcd.tmp"
    (cache_home / names["stale"]).write_bytes(b"left by a killed writer")
    return names


def _state(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in folder.iterdir()} if folder.is_dir() else {}


def test_cache_lists_each_file(filled, cache_home, capsys):
    assert main(["data", "omniglot", "--cache"]) == 0
    out = capsys.readouterr().out
    here = og.cache_environment()
    assert f"{cache_home} (this environment: {here}):" in out
    lines = {line.split()[-1]: line for line in out.splitlines()[2:-1]}
    assert set(lines) == set(filled.values())
    for role, name in filled.items():
        size = (cache_home / name).stat().st_size
        fields = lines[name].split()
        assert fields[:4] == ["evaluation" if role == "evaluation" else "background", "28px",
                              "bilinear", str(size)], lines[name]
        assert fields[4] == ("yes" if role in og.SETS else "no")
    assert here in lines[filled["background"]]
    assert here.replace(torch.__version__, "0.0.1") in lines[filled["other"]]
    if os.name == "posix":
        assert "stale temporary file: pid " in lines[filled["stale"]]
    removable = sum((cache_home / filled[r]).stat().st_size for r in ("other", "stale"))
    assert f"--prune-cache would remove 2 files, {removable} bytes" in out.splitlines()[-1]
    assert _state(cache_home).keys() == set(filled.values())          # listing removes nothing


def test_prune_cache_removes_and_says_what(filled, cache_home, capsys):
    """Another build's file and the stale temporary go, each named, and the bytes freed are
    printed; this environment's files stay and are read again (the listing then says there
    is nothing to prune)."""
    keep = {n: (cache_home / n).read_bytes() for n in (filled["background"],
                                                       filled["evaluation"])}
    freed = sum((cache_home / filled[r]).stat().st_size for r in ("other", "stale"))
    assert main(["data", "omniglot", "--prune-cache"]) == 0
    out = capsys.readouterr().out
    other_build = og.cache_environment().replace(torch.__version__, "0.0.1")
    assert f"  removed {filled['other']} ({other_build}; " in out
    assert f"  removed {filled['stale']} (stale temporary file: pid " in out
    assert out.splitlines()[-1] == f"removed 2 files, freed {freed} bytes ({freed / 1e6:.1f} MB)"
    assert _state(cache_home) == keep
    assert main(["data", "omniglot", "--prune-cache"]) == 0
    assert "nothing to remove" in capsys.readouterr().out
    assert main(["data", "omniglot", "--cache"]) == 0
    assert capsys.readouterr().out.splitlines()[-1].endswith("; nothing to prune")


def test_an_empty_cache(cache_home, capsys):
    assert main(["data", "omniglot", "--cache"]) == 0
    assert capsys.readouterr().out.splitlines()[-1] == "  no cache files"
    assert main(["data", "omniglot", "--prune-cache"]) == 0
    assert "nothing to remove" in capsys.readouterr().out
    assert not cache_home.exists()


def test_a_cache_turned_off_is_still_listed_and_pruned(filled, cache_home, monkeypatch, capsys):
    monkeypatch.setenv(og.CACHE_ENV, "off")
    assert main(["data", "omniglot", "--prune-cache"]) == 0
    out = capsys.readouterr().out
    assert f"the cache is off (${og.CACHE_ENV})" in out and filled["other"] in out
    assert not (cache_home / filled["other"]).exists()


@pytest.mark.parametrize("extra", [["--download"], ["--check"], ["--root", "ROOT"],
                                   ["--download", "--no-progress"], ["--cache"]])
@pytest.mark.parametrize("given", ["--cache", "--prune-cache"])
def test_combined_with_another_option_is_a_usage_error(filled, cache_home, tmp_path, capsys,
                                                       given, extra):
    """Exit status 2, naming both options; nothing is removed, fetched or written."""
    if extra == [given]:
        extra = ["--prune-cache"]
    extra = [str(tmp_path) if a == "ROOT" else a for a in extra]
    before = _state(cache_home)
    listing = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    assert main(["data", "omniglot", given, *extra]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    err = captured.err
    assert err.startswith("metaloop data: error: ") and given in err
    assert all(a in err for a in extra if a.startswith("--"))
    if "--root" in extra:
        assert "whatever --root" in err
    assert _state(cache_home) == before
    assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*")) == listing


def test_a_folder_that_cannot_be_listed_is_named(tmp_path, monkeypatch, capsys):
    (tmp_path / "data" / "omniglot").mkdir(parents=True)
    (tmp_path / "data" / "omniglot" / "resized").write_text("")
    assert main(["data", "omniglot", "--cache"]) == 2
    assert "cannot list the Omniglot cache folder" in capsys.readouterr().err


def test_help_names_the_options(capsys):
    with pytest.raises(SystemExit):
        main(["data", "omniglot", "--help"])
    out = capsys.readouterr().out
    assert "--cache" in out and "--prune-cache" in out and "bytes freed" in out
