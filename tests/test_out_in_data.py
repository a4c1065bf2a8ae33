"""An ``--out`` inside the image folder a command reads is refused before anything is
written (``metaloop.runs_folder.check_outside_data``): the run's PNGs would otherwise become
images of a class that every later run on that folder reads. Each command that reads an image
folder and writes under ``--out`` is checked: ``vae``, ``adapt --family folder``,
``forgetting --data``, ``compare`` and ``eval`` of a ``folder`` run."""

from __future__ import annotations

import hashlib
import os
import sys
from pathlib import Path

import pytest

from metaloop import runs_folder
from metaloop.cli.main import main

sys.path.insert(0, str(Path(__file__).parent))
from conftest import folder_config, train_run, write_image_folder  # noqa: E402


def _snapshot(folder: Path) -> dict:
    """Every path under ``folder`` with its content's hash (None for a folder)."""
    return {str(p.relative_to(folder)): None if p.is_dir()
            else hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*"))}


@pytest.fixture(scope="module")
def made(tmp_path_factory):
    """An image folder of 4 classes and a ``folder`` run trained on it (read them only)."""
    d = tmp_path_factory.mktemp("out_in_data")
    photos = write_image_folder(d / "photos", classes=4, per_class=6, mixed=False)
    run = train_run(d / "images", folder_config(photos))
    return photos, run


def _refused(argv: list[str], data: Path, capsys, *words: str) -> str:
    """``argv`` exits 2 naming ``words``, prints nothing on stdout and changes nothing in
    ``data`` (its cache folder aside, which the command may have made before)."""
    before = {k: v for k, v in _snapshot(data).items() if ".metaloop-cache" not in k}
    capsys.readouterr()
    assert main(argv) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    for w in words:
        assert w in captured.err, (w, captured.err)
    after = {k: v for k, v in _snapshot(data).items() if ".metaloop-cache" not in k}
    assert after == before
    return captured.err


# the function

def test_an_out_inside_the_data_or_the_data_itself_is_refused_naming_both(tmp_path):
    data = write_image_folder(tmp_path / "shapes", classes=2, per_class=2, mixed=False)
    for out in (data / "c0", data / "c0" / "deeper", data, data / "new"):
        with pytest.raises(ValueError) as e:
            runs_folder.check_outside_data(out, data)
        assert f"--out {out} " in str(e.value) and f"--data {data} " in str(e.value)
        assert "nothing was written" in str(e.value)
    with pytest.raises(ValueError, match=r"^--meta-dir .* the image folder family\.root "):
        runs_folder.check_outside_data(data / "m", data, "family.root", out_option="--meta-dir")


def test_links_are_followed_both_ways(tmp_path):
    data = write_image_folder(tmp_path / "shapes", classes=2, per_class=2, mixed=False)
    os.symlink(data, tmp_path / "to_data")
    os.symlink(data / "c1", tmp_path / "to_class")
    with pytest.raises(ValueError, match="is inside the image folder"):
        runs_folder.check_outside_data(tmp_path / "to_class" / "run", data)
    with pytest.raises(ValueError, match="is inside the image folder"):
        runs_folder.check_outside_data(data / "c0", tmp_path / "to_data")
    with pytest.raises(ValueError, match="is inside the image folder"):
        runs_folder.check_outside_data(tmp_path / "to_data", data)


def test_data_inside_out_a_sibling_and_other_data_are_fine(tmp_path):
    data = write_image_folder(tmp_path / "runs" / "shapes", classes=2, per_class=2,
                              mixed=False)
    runs_folder.check_outside_data(tmp_path / "runs", data)      # the data inside --out
    runs_folder.check_outside_data(tmp_path / "runs" / "shapes2", data)   # a name's prefix
    runs_folder.check_outside_data(data / "x", tmp_path / "data.npz")     # not a folder
    runs_folder.check_outside_data(data / "x", "fashion-mnist")           # a built-in set


# the commands

def test_vae_refuses_an_out_in_a_class_folder_of_its_data(made, capsys, tmp_path):
    photos, _ = made
    out = photos / sorted(p.name for p in photos.iterdir() if not p.name.startswith("."))[0]
    _refused(["vae", "--model", "cvae", "--data", str(photos), "--latent", "2",
              "--epochs", "1", "--no-progress", "--out", str(out)], photos, capsys,
             f"--out {out} is inside the image folder --data {photos}")
    link = tmp_path / "link"
    os.symlink(photos, link)
    _refused(["vae", "--model", "vae", "--data", str(link), "--latent", "2", "--epochs", "1",
              "--no-progress", "--out", str(photos / "vae")], photos, capsys,
             "is inside the image folder --data")


def test_adapt_refuses_an_out_or_meta_dir_in_its_data(made, capsys):
    photos, run = made
    argv = ["adapt", "--model", str(run), "--family", "folder", "--data", str(photos),
            "--ways", "2", "--queries", "2", "--tasks", "2", "--approaches", "probe-ridge",
            "--no-progress"]
    _refused([*argv, "--out", str(photos / "adapt")], photos, capsys,
             f"--out {photos / 'adapt'} is inside the image folder --data {photos}")
    _refused([*argv, "--meta-dir", str(photos / "meta"), "--meta", "fomaml", "--out",
              str(photos.parent / "adapt_meta")], photos, capsys,
             f"--meta-dir {photos / 'meta'} is inside the image folder --data")
    assert not (photos.parent / "adapt_meta").exists()


def test_forgetting_refuses_an_out_in_its_data(made, capsys):
    photos, _ = made
    _refused(["forgetting", "--scenario", "split-data-class", "--data", str(photos),
              "--classes-per-experience", "2", "--strategies", "naive", "--seeds", "1",
              "--steps", "2", "--no-progress", "--out", str(photos / "f")], photos, capsys,
             f"--out {photos / 'f'} is inside the image folder --data {photos}")


def test_compare_refuses_an_out_in_a_class_folder_of_family_root(made, capsys, tmp_path):
    photos, _ = made
    config = tmp_path / "c.toml"
    config.write_text(folder_config(photos))
    cls = sorted(p for p in photos.iterdir() if p.is_dir() and not p.name.startswith("."))[0]
    _refused(["compare", "--config", str(config), "--methods", "protonet", "--no-progress",
              "--out", str(cls)], photos, capsys,
             f"--out {cls} is inside the image folder family.root {photos}")


def test_eval_refuses_an_out_in_the_runs_data(made, capsys, tmp_path):
    photos, run = made
    _refused(["eval", "--checkpoint", str(run), "--no-progress", "--out",
              str(photos / "ev")], photos, capsys,
             f"--out {photos / 'ev'} is inside the image folder family.root {photos}")
    moved = tmp_path / "moved"
    os.symlink(photos, moved)
    _refused(["eval", "--checkpoint", str(run), "--data-root", str(moved), "--no-progress",
              "--out", str(photos / "ev")], photos, capsys,
             "is inside the image folder --data-root")


def test_train_refuses_an_out_in_a_class_folder_of_family_root(made, capsys, tmp_path):
    """``metaloop train`` wrote its checkpoints into a class folder of its data, which the
    next run read as a file that is no image."""
    photos, _ = made
    config = tmp_path / "c.toml"
    config.write_text(folder_config(photos))
    cls = sorted(p for p in photos.iterdir() if p.is_dir() and not p.name.startswith("."))[0]
    _refused(["--threads", "1", "train", "--config", str(config), "--no-progress", "--out",
              str(cls / "run")], photos, capsys,
             f"--out {cls / 'run'} is inside the image folder family.root {photos}")
