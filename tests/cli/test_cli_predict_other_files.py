"""Files that are not images by their suffix (README.txt, Thumbs.db) are left out of the
support and query folders, as training's folder scan leaves them out, and counted; before,
the first one stopped `metaloop predict` with "cannot read image"."""

import json

import numpy as np
import pytest
from PIL import Image

from metaloop.cli.main import main
from metaloop.data.images import load_query, load_support


def _png(path, seed):
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    Image.fromarray((rng.random((28, 28)) > 0.8).astype(np.uint8) * 255).save(path)


@pytest.fixture
def folders(tmp_path):
    for c in range(2):
        for i in range(2):
            _png(tmp_path / "support" / f"class_{c}" / f"{i}.png", 10 * c + i)
        (tmp_path / "support" / f"class_{c}" / "Thumbs.db").write_bytes(b"\x00\x01")
    (tmp_path / "support" / "README.txt").write_text("two classes")
    for i in range(3):
        _png(tmp_path / "query" / f"q{i}.PNG", 100 + i)
    (tmp_path / "query" / "notes.txt").write_text("not an image")
    return tmp_path


def test_loaders_leave_out_and_list_other_files(folders):
    ignored = []
    x, y, classes, files = load_support(folders / "support", ignored=ignored)
    assert classes == ["class_0", "class_1"] and x.shape == (4, 1, 28, 28)
    qx, names = load_query(folders / "query", ignored=ignored)
    assert names == ["q0.PNG", "q1.PNG", "q2.PNG"]
    assert sorted(p.name for p in ignored) == ["README.txt", "Thumbs.db", "Thumbs.db",
                                               "notes.txt"]


def test_one_shot_layout_ignores_other_files(tmp_path):
    for k in range(3):
        _png(tmp_path / "training" / f"class{k:02d}.png", k)
    (tmp_path / "training" / "desktop.ini").write_text("[.ShellClassInfo]")
    x, y, classes, _ = load_support(tmp_path / "training")
    assert classes == ["class00", "class01", "class02"] and y.tolist() == [0, 1, 2]


def test_folder_of_only_other_files_names_them(tmp_path):
    (tmp_path / "query").mkdir()
    (tmp_path / "query" / "scan.pdf").write_bytes(b"%PDF")
    with pytest.raises(ValueError, match=r"holds no images \(1 other file\(s\) left out, e\.g\. "
                                         r"scan\.pdf: an image's name ends in one of \.png"):
        load_query(tmp_path / "query")


def test_predict_leaves_them_out_and_says_so(folders, protonet_run, capsys):
    out = folders / "out"
    assert main(["--threads", "1", "predict", "--checkpoint", str(protonet_run),
                 "--support", str(folders / "support"), "--query", str(folders / "query"),
                 "--out", str(out), "--no-progress"]) == 0
    captured = capsys.readouterr()
    assert [line.split("\t")[0] for line in captured.out.splitlines()] == [
        "q0.PNG", "q1.PNG", "q2.PNG"]
    assert "ignored 4 non-image (by suffix, e.g. " in captured.err
    assert "and 0 hidden entries" in captured.err
    res = json.loads((out / "results.json").read_text())
    assert sorted(p.rsplit("/", 1)[-1] for p in res["ignored"]) == [
        "README.txt", "Thumbs.db", "Thumbs.db", "notes.txt"]


def test_loaders_count_hidden_entries_as_the_training_scan_does(folders):
    """Hidden entries (``.DS_Store``, ``.hidden.png``, a ``.git`` folder) were dropped
    without a word, where training's folder scan counts them; metaloop's own cache folder
    beside the class folders is not counted (nor is it by training)."""
    (folders / "support" / "class_0" / ".DS_Store").write_bytes(b"\x00")
    (folders / "support" / ".metaloop-cache").mkdir()
    _png(folders / "query" / ".hidden.png", 7)
    _png(folders / "query" / ".git" / "inside.png", 8)      # one entry, not searched
    hidden, ignored = [], []
    load_support(folders / "support", ignored=ignored, hidden=hidden)
    qx, names = load_query(folders / "query", ignored=ignored, hidden=hidden)
    assert names == ["q0.PNG", "q1.PNG", "q2.PNG"] and len(ignored) == 4
    assert sorted(p.name for p in hidden) == [".DS_Store", ".git", ".hidden.png"]


def test_predict_counts_hidden_entries_on_stderr_as_train_does(tmp_path, protonet_run,
                                                                capsys):
    """predict's stderr counted the files that are not images by their suffix but not the
    hidden ones, which train's folder summary counts; it now says both, in train's words,
    and results.json carries the count."""
    for c in range(2):
        for i in range(2):
            _png(tmp_path / "support" / f"class_{c}" / f"{i}.png", 10 * c + i)
    (tmp_path / "support" / "class_0" / ".DS_Store").write_bytes(b"\x00\x01")
    for i in range(2):
        _png(tmp_path / "query" / f"q{i}.png", 100 + i)
    _png(tmp_path / "query" / ".hidden.png", 200)
    out = tmp_path / "out"
    assert main(["--threads", "1", "predict", "--checkpoint", str(protonet_run),
                 "--support", str(tmp_path / "support"), "--query", str(tmp_path / "query"),
                 "--out", str(out), "--no-progress"]) == 0
    captured = capsys.readouterr()
    assert [line.split("\t")[0] for line in captured.out.splitlines()] == ["q0.png", "q1.png"]
    assert "metaloop predict: ignored 0 non-image and 2 hidden entries" in captured.err
    res = json.loads((out / "results.json").read_text())
    assert res["hidden"] == 2 and res["ignored"] == []
