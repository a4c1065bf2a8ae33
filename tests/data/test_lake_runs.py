"""The official one-shot runs' layout (Lake's all_runs.zip): runs found, labels read from
class_labels.txt by file name, and named errors for what does not fit."""

from pathlib import Path

import pytest

from metaloop.data.lake_runs import read_lake_runs


def _run(root, name, answers, lines=None):
    """A run folder: training/classNN.png, test/itemNN.png (empty files: only names are
    read here), and class_labels.txt naming item i+1's class answers[i] + 1."""
    run = root / name
    (run / "training").mkdir(parents=True)
    (run / "test").mkdir()
    for k in range(len(answers)):
        (run / "training" / f"class{k + 1:02d}.png").write_bytes(b"")
        (run / "test" / f"item{k + 1:02d}.png").write_bytes(b"")
    text = lines if lines is not None else "".join(
        f"{name}/test/item{i + 1:02d}.png {name}/training/class{a + 1:02d}.png\n"
        for i, a in enumerate(answers))
    (run / "class_labels.txt").write_text(text)
    return run


def test_all_runs_and_one_run(tmp_path):
    _run(tmp_path, "run02", [0, 1, 2])
    _run(tmp_path, "run01", [2, 0, 1])
    (tmp_path / "notes").mkdir()                                   # not a run: skipped
    runs = read_lake_runs(tmp_path)
    assert [r.name for r in runs] == ["run01", "run02"]
    r = runs[0]
    assert [p.name for p in r.support] == ["class01.png", "class02.png", "class03.png"]
    assert [p.name for p in r.query] == ["item01.png", "item02.png", "item03.png"]
    assert r.labels == (2, 0, 1) and r.support[0].parent == tmp_path / "run01" / "training"
    (one,) = read_lake_runs(tmp_path / "run02")
    assert one.name == "run02" and one.labels == (0, 1, 2)


def test_lines_in_any_order_and_paths_from_anywhere(tmp_path):
    lines = ("/data/all_runs/run07/test/item02.png run07/training/class01.png\n\n"
             "test/item01.png training/class02.png\n")
    (r,) = read_lake_runs(_run(tmp_path, "run07", [1, 0], lines))
    assert r.labels == (1, 0)


@pytest.mark.parametrize("case,message", [
    ("missing", "does not exist"),
    ("no_run", "holds no one-shot run"),
    ("three_paths", r"class_labels.txt:1: expected a test image and its training image"),
    ("twice", "item01.png is listed twice"),
    ("no_file", "class09.png does not exist"),
    ("empty", "lists no test image"),
    ("test_is_training", "training/class01.png as both a test image and a training image"),
    ("training_is_test", "test/item01.png as both a test image and a training image"),
])
def test_bad_runs_are_named(tmp_path, case, message):
    root = tmp_path / "all_runs"
    lines = {"three_paths": "a b c\n", "empty": "\n",
             "twice": "test/item01.png training/class01.png\n"
                      "test/item01.png training/class02.png\n",
             "no_file": "test/item01.png training/class09.png\n",
             "test_is_training": "test/item01.png training/class01.png\n"
                                 "test/item02.png training/class02.png\n"
                                 "training/class01.png training/class01.png\n",
             "training_is_test": "test/item01.png training/class01.png\n"
                                 "test/item02.png test/item01.png\n"}.get(case)
    if case == "no_run":
        (root / "run01").mkdir(parents=True)
    elif case != "missing":
        _run(root, "run01", [0, 1], lines)
    with pytest.raises(ValueError, match=message):
        read_lake_runs(root)


def test_a_drawing_the_labels_do_not_list_is_named(tmp_path):
    """A run whose class_labels.txt lost a line was scored as a 2-way run, its third class
    and trial left out without a word; an unlisted extra image was ignored the same way."""
    lines = "".join(f"run01/test/item{i:02d}.png run01/training/class{i:02d}.png\n"
                    for i in (1, 2))
    run = _run(tmp_path, "run01", [0, 1, 2], lines)
    with pytest.raises(ValueError, match=r"run01/test holds 1 image\(s\) that .*class_labels"
                                         r".txt does not list: item03.png"):
        read_lake_runs(run)
    full = _run(tmp_path, "run02", [0, 1])
    (full / "test" / "item03.png").write_bytes(b"")
    with pytest.raises(ValueError, match="test holds 1 image.* item03.png"):
        read_lake_runs(full)
    (full / "test" / "item03.png").unlink()
    (full / "test" / "notes.txt").write_text("not a drawing")       # not an image: ignored
    (full / "test" / ".DS_Store").write_bytes(b"")
    assert read_lake_runs(full)[0].labels == (0, 1)


def test_runs_digest_names_the_contents_wherever_they_are(tmp_path):
    import hashlib
    import shutil

    from metaloop.data.lake_runs import runs_digest

    run = _run(tmp_path / "a", "run01", [1, 0])
    for i, f in enumerate(sorted((run / "training").iterdir()) + sorted((run / "test").iterdir())):
        f.write_bytes(bytes([i, 255 - i]))
    digest = runs_digest(read_lake_runs(tmp_path / "a"))
    # the documented layout, hashed by hand: the run's name, then each file's path inside
    # the run folder, its size and its bytes (labels, training images, test images)
    h = hashlib.sha256(b"run run01\n")
    for rel in ("class_labels.txt", "training/class01.png", "training/class02.png",
                "test/item01.png", "test/item02.png"):
        data = (run / rel).read_bytes()
        h.update(f"{rel} {len(data)}\n".encode() + data)
    assert digest == h.hexdigest()
    shutil.copytree(tmp_path / "a", tmp_path / "elsewhere" / "all_runs")
    assert runs_digest(read_lake_runs(tmp_path / "elsewhere" / "all_runs")) == digest
    (run / "test" / "item02.png").write_bytes(b"\x01\xfe")         # one image changed
    assert runs_digest(read_lake_runs(tmp_path / "a")) != digest


def test_the_zip_is_read_as_its_folder(tmp_path, monkeypatch):
    import shutil
    import zipfile

    from metaloop.data.lake_runs import runs_digest

    monkeypatch.setenv("METALOOP_DATA", str(tmp_path / "cache"))
    _run(tmp_path / "all_runs", "run01", [1, 0, 2])
    _run(tmp_path / "all_runs", "run02", [0, 2, 1])
    zipped = shutil.make_archive(str(tmp_path / "all_runs"), "zip", tmp_path / "all_runs")
    folder, from_zip = read_lake_runs(tmp_path / "all_runs"), read_lake_runs(zipped)
    assert [(r.name, r.labels) for r in from_zip] == [(r.name, r.labels) for r in folder]
    assert runs_digest(from_zip) == runs_digest(folder)
    cached = from_zip[0].support[0].parents[2]
    assert cached.parent == tmp_path / "cache" / "omniglot" / "lake_runs"
    assert [p.name for p in cached.parent.iterdir()] == [cached.name]    # no leftovers
    assert read_lake_runs(zipped)[0].support[0].parents[2] == cached     # unpacked once
    (tmp_path / "bad.zip").write_bytes(b"not a zip")
    with pytest.raises(ValueError, match="bad.zip is not a zip file"):
        read_lake_runs(tmp_path / "bad.zip")
    with zipfile.ZipFile(tmp_path / "evil.zip", "w") as z:
        z.writestr("../outside.txt", "x")
    with pytest.raises(ValueError, match="would unpack outside its folder"):
        read_lake_runs(tmp_path / "evil.zip")
    assert not (tmp_path / "cache" / "omniglot" / "outside.txt").exists()
    good = Path(zipped).read_bytes()                   # a member's bytes damaged: CRC fails
    at = good.index(b"run01/class_labels.txt") + 60
    (tmp_path / "damaged.zip").write_bytes(good[:at] + bytes([good[at] ^ 255]) + good[at + 1:])
    with pytest.raises(ValueError, match="damaged.zip is corrupt"):
        read_lake_runs(tmp_path / "damaged.zip")
    assert sorted(p.name for p in cached.parent.iterdir()) == [cached.name]   # nothing left


def test_a_zip_of_the_runs_folder_is_read_too(tmp_path, monkeypatch):
    """``zip -r all_runs.zip all_runs`` puts the runs inside one folder; a zip without runs
    is named as the user gave it, not by its unpacked copy in the cache."""
    import shutil

    monkeypatch.setenv("METALOOP_DATA", str(tmp_path / "cache"))
    _run(tmp_path / "data" / "all_runs", "run01", [1, 0, 2])
    zipped = shutil.make_archive(str(tmp_path / "nested"), "zip", tmp_path / "data", "all_runs")
    (r,) = read_lake_runs(zipped)
    assert r.name == "run01" and r.labels == (1, 0, 2)
    (tmp_path / "data" / "other" / "notes").mkdir(parents=True)
    empty = shutil.make_archive(str(tmp_path / "empty"), "zip", tmp_path / "data", "other")
    with pytest.raises(ValueError, match=r"empty\.zip holds no one-shot run"):
        read_lake_runs(empty)


def test_labels_that_are_not_utf8_text_are_named_and_a_bom_is_read(tmp_path):
    """A UnicodeDecodeError named no file; a BOM (a Windows editor's save) made the first
    path unreadable."""
    run = _run(tmp_path, "run01", [1, 0])
    good = (run / "class_labels.txt").read_bytes()
    (run / "class_labels.txt").write_bytes(good + b"test/item\xe9.png training/class01.png\n")
    with pytest.raises(ValueError, match=r"run01/class_labels\.txt is not UTF-8 text: byte "
                                         r"0xe9 at offset \d+ \(line 3\)"):
        read_lake_runs(run)
    (run / "class_labels.txt").write_bytes(b"\xef\xbb\xbf" + good)
    (r,) = read_lake_runs(run)
    assert r.labels == (1, 0)


def test_a_zip_that_would_unpack_too_much_is_refused_before_unpacking(tmp_path, monkeypatch):
    """A zip whose members declare more bytes than one-shot runs take (a zip bomb: 300 MiB of
    zeros from a few hundred kB), or that holds more members than any runs zip, is refused
    naming it, and nothing is unpacked into the cache."""
    import zipfile

    from metaloop.data import lake_runs

    monkeypatch.setenv("METALOOP_DATA", str(tmp_path / "cache"))
    with zipfile.ZipFile(tmp_path / "bomb.zip", "w", zipfile.ZIP_DEFLATED,
                         compresslevel=1) as z:
        z.writestr("run01/class_labels.txt", "run01/test/item01.png run01/training/class01.png\n")
        with z.open("run01/test/item01.png", "w", force_zip64=True) as f:
            for _ in range(300):
                f.write(bytes(1 << 20))
    assert (tmp_path / "bomb.zip").stat().st_size < 2 << 20
    with pytest.raises(ValueError, match=r"bomb\.zip: its members declare 314572849 bytes "
                                         r"together \(the largest, 'run01/test/item01\.png', "
                                         r"314572800\), more than a zip of one-shot runs"):
        read_lake_runs(tmp_path / "bomb.zip")
    with zipfile.ZipFile(tmp_path / "many.zip", "w") as z:
        for i in range(lake_runs.MAX_RUNS_MEMBERS + 1):
            z.writestr(f"run01/test/x{i}.txt", "")
    with pytest.raises(ValueError, match=rf"many\.zip holds {lake_runs.MAX_RUNS_MEMBERS + 1} "
                                         rf"members, more than a zip of one-shot runs can"):
        read_lake_runs(tmp_path / "many.zip")
    lake = tmp_path / "cache" / "omniglot" / "lake_runs"
    assert not lake.exists() or not any(lake.iterdir())
