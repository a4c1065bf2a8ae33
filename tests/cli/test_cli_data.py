"""``metaloop data omniglot``: where each file is, whether it matches its checksum, and
fetching what is missing (from local ``file://`` urls: nothing leaves the machine)."""

from __future__ import annotations

import hashlib
import socket
import urllib.error
import urllib.request
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from metaloop.cli.main import main
from metaloop.data import omniglot as og
from metaloop.data.omniglot import load_omniglot_images

NAMES = {"background": ["Alpha/character01", "Beta/character01"],
         "evaluation": ["Gamma/character01"]}
SPLITS = {"train": ["Alpha/character01/rot000", "Gamma/character01/rot090"],
          "val": ["Beta/character01/rot180"], "test": ["Gamma/character01/rot000"]}
SPLITS["trainval"] = SPLITS["train"] + SPLITS["val"]


def _ink(set_name: str) -> np.ndarray:
    """bool [C, 20, 105, 105] random strokes."""
    rng = np.random.default_rng(len(set_name))
    return rng.random((len(NAMES[set_name]), 20, 105, 105)) < 0.1


def _write_splits(folder: Path) -> None:
    (folder / "splits" / "vinyals").mkdir(parents=True)
    for split, lines in SPLITS.items():
        (folder / "splits" / "vinyals" / f"{split}.txt").write_text("\n".join(lines) + "\n")


def _npz_root(folder: Path) -> Path:
    """Both sets packed, the split files, and a SHA256SUMS listing them all."""
    folder.mkdir(parents=True)
    for s in og.SETS:
        ink = _ink(s)
        np.savez(folder / f"omniglot_{s}.npz", class_names=np.array(NAMES[s]),
                 images_packed=np.packbits(ink.reshape(len(ink), 20, -1), axis=-1))
    _write_splits(folder)
    rels = [f"omniglot_{s}.npz" for s in og.SETS] + [
        f"splits/vinyals/{s}.txt" for s in og.VINYALS_SPLITS]
    (folder / "SHA256SUMS").write_text("".join(
        f"{hashlib.sha256((folder / r).read_bytes()).hexdigest()}  {r}\n" for r in rels))
    return folder


def _zip(folder: Path, set_name: str) -> Path:
    """The set as the official zip lays it out: images_<set>/<Alphabet>/characterNN/*.png."""
    path = folder / f"images_{set_name}.zip"
    ink = _ink(set_name)
    with zipfile.ZipFile(path, "w") as zf:
        for c, name in enumerate(NAMES[set_name]):
            for k in range(20):
                png = folder / "drawing.png"
                Image.fromarray(~ink[c, k]).save(png)     # mode "1", white = background
                zf.write(png, f"images_{set_name}/{name}/{c + 1:04d}_{k + 1:02d}.png")
    (folder / "drawing.png").unlink()
    return path


@pytest.fixture(autouse=True)
def nowhere(tmp_path, monkeypatch):
    """No default location holds Omniglot, and resized sets are cached in this test's
    folder."""
    monkeypatch.setenv("METALOOP_DATA", str(tmp_path / "data"))
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setattr(og, "SHARED_DIR", tmp_path / "shared")
    og.clear_cache()
    yield
    og.clear_cache()


@pytest.fixture
def served(tmp_path, monkeypatch) -> Path:
    """The official files at local file:// urls, with their own checksums."""
    www = tmp_path / "www"
    www.mkdir()
    for s in og.SETS:
        data = _zip(www, s).read_bytes()
        monkeypatch.setitem(og.ZIP_URLS, s, (www / f"images_{s}.zip").as_uri())
        monkeypatch.setitem(og.ZIP_SHA256, s, hashlib.sha256(data).hexdigest())
        monkeypatch.setitem(og.ZIP_MD5, s, hashlib.md5(data).hexdigest())
    _write_splits(www)
    for split in og.VINYALS_SPLITS:
        path = www / "splits" / "vinyals" / f"{split}.txt"
        monkeypatch.setitem(og.SPLIT_URLS, split, path.as_uri())
        monkeypatch.setitem(og.SPLIT_SHA256, split, hashlib.sha256(path.read_bytes()).hexdigest())
    return www


def _run(capsys, *argv: str) -> tuple[int, str, str]:
    rc = main(["data", "omniglot", *argv])
    out, err = capsys.readouterr()
    return rc, out, err


def _lines(out: str) -> dict[str, str]:
    """The report's lines by file name."""
    return {ln.split()[0]: ln for ln in out.splitlines() if ln.startswith("  ")}


def test_every_file_found_is_reported_where_it_is(tmp_path, capsys):
    root = _npz_root(tmp_path / "om")
    rc, out, err = _run(capsys, "--root", str(root))
    assert rc == 0 and err == ""
    lines = _lines(out)
    assert list(lines) == ["background", "evaluation"] + [
        f"splits/vinyals/{s}.txt" for s in og.VINYALS_SPLITS]
    assert str(root / "omniglot_background.npz") in lines["background"]
    assert str(root / "splits" / "vinyals" / "val.txt") in lines["splits/vinyals/val.txt"]
    assert "every file is found" in out


def test_the_default_search_is_the_loaders(tmp_path, capsys, monkeypatch):
    """Without --root: $METALOOP_DATA/omniglot first, then ~/.cache/metaloop/omniglot."""
    _npz_root(tmp_path / "home" / ".cache" / "metaloop" / "omniglot")
    data = tmp_path / "data" / "omniglot"
    data.mkdir(parents=True)
    _zip(data, "evaluation")
    rc, out, _ = _run(capsys)
    assert rc == 0
    assert f"searched in {data}, {tmp_path / 'home' / '.cache' / 'metaloop' / 'omniglot'}" in out
    assert str(data / "images_evaluation.zip") in _lines(out)["evaluation"]
    assert og.data_files()[1].path == og._locate_set("evaluation", None, False).path


def test_missing_files_are_named_with_how_to_get_them(tmp_path, capsys):
    root = tmp_path / "my data"
    root.mkdir()
    _write_splits(root)
    rc, out, err = _run(capsys, "--root", str(root))
    assert rc == 2
    assert _lines(out)["background"].endswith("missing")
    assert "metaloop data: error: Omniglot background, evaluation not found in" in err
    assert og.ZIP_URLS["background"] in err and og.ZIP_SHA256["evaluation"] in err
    assert err.strip().endswith(f"with: metaloop data omniglot --download --root '{root}'")
    assert "splits/vinyals/val.txt not" not in err and "\n" not in err.strip()
    assert sorted(p.name for p in root.iterdir()) == ["splits"]     # nothing written


def test_a_missing_root_is_an_error_naming_it(tmp_path, capsys):
    rc, _, err = _run(capsys, "--root", str(tmp_path / "missing"))
    assert rc == 2 and str(tmp_path / "missing") in err
    assert not (tmp_path / "missing").exists()


def test_a_root_that_is_a_file_is_refused(tmp_path, capsys):
    (tmp_path / "a_file").write_text("")
    rc, out, err = _run(capsys, "--root", str(tmp_path / "a_file"), "--download")
    assert rc == 2 and out == ""
    assert f"--root {tmp_path / 'a_file'} is a file" in err


def test_a_data_set_must_be_named(capsys):
    with pytest.raises(SystemExit) as e:
        main(["data"])
    assert e.value.code == 2
    assert "required: DATASET" in capsys.readouterr().err


def test_check_verifies_each_file_as_the_loaders_do(tmp_path, capsys):
    root = _npz_root(tmp_path / "om")
    rc, out, _ = _run(capsys, "--root", str(root), "--check")
    assert rc == 0
    assert all(f"sha256 matches {root / 'SHA256SUMS'}" in ln for ln in _lines(out).values())
    sums = (root / "SHA256SUMS").read_text().splitlines()
    (root / "SHA256SUMS").write_text("\n".join([f"{'ab' * 32}  omniglot_evaluation.npz"]
                                               + sums[:1] + sums[2:]) + "\n")
    rc, out, err = _run(capsys, "--root", str(root), "--check")
    assert rc == 2 and _lines(out)["evaluation"].endswith("FAILS the check (below)")
    assert str(root / "omniglot_evaluation.npz") in err and "ab" * 32 in err
    with pytest.raises(ValueError, match="ab" * 32):           # as the loader refuses it
        load_omniglot_images(root, "evaluation", 28)
    rc, _, _ = _run(capsys, "--root", str(root))               # without --check: found
    assert rc == 0


def test_an_unreadable_sha256sums_is_named_once(tmp_path, capsys):
    """A SHA256SUMS that cannot be read fails every file it would check (as the loaders
    refuse them), and its error is said once, not once per file."""
    root = _npz_root(tmp_path / "om")
    (root / "SHA256SUMS").write_text("garbage line\n")
    rc, out, err = _run(capsys, "--root", str(root), "--check")
    assert rc == 2
    assert all(ln.endswith("FAILS the check (below)") for ln in _lines(out).values())
    assert err.count("SHA256SUMS:1") == 1, err


def test_check_compares_a_zip_with_its_published_sha256(tmp_path, capsys, monkeypatch):
    root = _npz_root(tmp_path / "om")
    (root / "omniglot_background.npz").unlink()
    zip_path = _zip(root, "background")
    rc, out, err = _run(capsys, "--root", str(root), "--check")
    assert rc == 2 and og.ZIP_SHA256["background"] in err and str(zip_path) in err
    monkeypatch.setitem(og.ZIP_SHA256, "background",
                        hashlib.sha256(zip_path.read_bytes()).hexdigest())
    rc, out, _ = _run(capsys, "--root", str(root), "--check")
    assert rc == 0 and "sha256 matches the published one" in _lines(out)["background"]


def test_check_names_what_has_no_checksum(tmp_path, capsys):
    root = _npz_root(tmp_path / "om")
    (root / "SHA256SUMS").unlink()
    rc, out, _ = _run(capsys, "--root", str(root), "--check")
    assert rc == 0
    assert "not checked: no SHA256SUMS beside it lists it" in _lines(out)["background"]


def test_download_fetches_the_missing_files_and_the_loader_reads_them(tmp_path, capsys,
                                                                       served):
    dl = tmp_path / "dl" / "omniglot"
    rc, out, err = _run(capsys, "--root", str(dl), "--download", "--no-progress")
    assert rc == 0, err
    assert sorted(p.name for p in dl.iterdir()) == [
        "images_background.zip", "images_evaluation.zip", "splits"]
    assert "fetched background, evaluation, splits/vinyals/train.txt" in out
    assert str(dl / "images_evaluation.zip") in _lines(out)["evaluation"]
    images, names = load_omniglot_images(dl, "trainval", 28)
    ref, ref_names = load_omniglot_images(_npz_root(tmp_path / "npz"), "trainval", 28)
    assert names == ref_names and torch.equal(images, ref)
    rc, out, _ = _run(capsys, "--root", str(dl), "--download", "--check")
    assert rc == 0 and "fetched" not in out                    # nothing fetched again
    assert "sha256 matches the published one" in _lines(out)["background"]


def test_download_fetches_only_what_is_missing(tmp_path, capsys, served):
    root = _npz_root(tmp_path / "om")
    (root / "splits" / "vinyals" / "test.txt").unlink()
    rc, out, _ = _run(capsys, "--root", str(root), "--download", "--no-progress")
    assert rc == 0 and "fetched splits/vinyals/test.txt into" in out
    assert not list(root.glob("*.zip"))


def test_a_download_with_a_bad_checksum_is_refused_and_leaves_nothing(tmp_path, capsys,
                                                                      served, monkeypatch):
    """The first file refused: not even the folder made for it is left; a later one refused:
    the files fetched before it stay (each whole and verified), and no partial file."""
    monkeypatch.setitem(og.ZIP_SHA256, "background", "00" * 32)
    dl = tmp_path / "dl" / "omniglot"
    rc, out, err = _run(capsys, "--root", str(dl), "--download", "--no-progress")
    assert rc == 2 and out == ""
    assert "checksum mismatch" in err and "00" * 32 in err
    assert not (tmp_path / "dl").exists()
    monkeypatch.setitem(og.ZIP_SHA256, "background", hashlib.sha256(
        (served / "images_background.zip").read_bytes()).hexdigest())
    monkeypatch.setitem(og.ZIP_MD5, "evaluation", "0" * 32)        # this one is refused
    rc, _, err = _run(capsys, "--root", str(dl), "--download", "--no-progress")
    assert rc == 2 and "md5: expected " + "0" * 32 in err
    assert [p.name for p in dl.iterdir()] == ["images_background.zip"]


def test_a_download_without_network_names_what_and_where(tmp_path, capsys, monkeypatch):
    def offline(*args, **kwargs):
        raise urllib.error.URLError(socket.gaierror(-2, "Name or service not known"))
    monkeypatch.setattr(urllib.request, "urlopen", offline)
    dl = tmp_path / "dl"
    rc, out, err = _run(capsys, "--root", str(dl), "--download")
    assert rc == 2 and out == ""
    assert og.ZIP_URLS["background"] in err and og.ZIP_SHA256["background"] in err
    assert "Name or service not known" in err and str(dl) in err
    assert not dl.exists()
