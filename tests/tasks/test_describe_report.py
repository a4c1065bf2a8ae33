"""One line on what an image folder held and what of it was not read: ``describe_report``
words it for ``Episodes.describe`` (``metaloop train``), the forgetting recipe's
``describe_folder`` (``metaloop forgetting``) and the vae recipe (``metaloop vae``), so the
three commands say the same of the same folder."""

import argparse
import re
import shutil

import numpy as np
import pytest
from PIL import Image

from metaloop.data.folder import load_folder
from metaloop.recipes import generative
from metaloop.recipes.forgetting import describe_folder
from metaloop.tasks import Episodes

REPORT = {"images": 40, "classes": 5, "ignored": 2, "hidden": 1, "loose": ["a.png", "b.png"],
          "ignored_files": ["cat/notes.txt"], "empty": ["owls", "bats"],
          "skipped": ["dog/broken.png"], "dropped": [], "duplicates": ["cat/copy.png"],
          "cache": "/data/.metaloop-cache/x", "cache_status": "hit"}


def test_describe_report_words_each_kind_of_entry_left_out():
    from metaloop.tasks.episodes import describe_report

    assert describe_report(REPORT, 4, ["emu"], 16) == (
        "40 images in 5 classes (cache hit: /data/.metaloop-cache/x); 4 classes in use; "
        "ignored 2 non-image (by suffix, e.g. cat/notes.txt) and 1 hidden entries; "
        "left out 2 class folder(s) without images, e.g. 'owls'; "
        "left out 2 image(s) outside any class folder, e.g. a.png (a class's images go in a "
        "folder named after it); "
        "skipped 1 unreadable image(s), e.g. dog/broken.png; "
        "left out 1 exact copy(ies) of an image of the same class, e.g. cat/copy.png; "
        "dropped 1 class(es) with fewer than 16 images, e.g. 'emu'")
    tidy = {**REPORT, "ignored": 0, "hidden": 0, "loose": [], "ignored_files": [], "empty": [],
            "skipped": [], "duplicates": []}
    assert describe_report(tidy, 5) == ("40 images in 5 classes (cache hit: "
                                        "/data/.metaloop-cache/x); 5 classes in use")


@pytest.fixture
def untidy(tmp_path):
    """4 classes (the last of 2 images), an exact copy, a non-image, a hidden file, a class
    folder without images and an image outside any class folder."""
    root = tmp_path / "photos"
    for c, (name, n) in enumerate((("cat", 4), ("dog", 4), ("emu", 4), ("owl", 2))):
        (root / name).mkdir(parents=True)
        for i in range(n):
            a = np.random.default_rng([c, i]).integers(0, 256, (8, 8), dtype=np.uint8)
            Image.fromarray(a).save(root / name / f"{i}.png")
    shutil.copy(root / "cat" / "0.png", root / "cat" / "copy.png")
    (root / "cat" / "notes.txt").write_text("not an image")
    (root / "dog" / ".DS_Store").write_bytes(b"\0")
    (root / "bats").mkdir()
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(root / "loose.png")
    return root


def _uncached(line: str) -> str:
    """The line without the cache's status and folder, which differ between decodings."""
    return re.sub(r"\(cache [^)]*\)", "(cache)", line)


def test_episodes_describe_is_describe_report_of_its_report(untidy):
    from metaloop.tasks.episodes import describe_report, folder_report

    fam = Episodes.from_folder(untidy, 2, 1, 2, image_size=8, drop_small=True)
    line = fam.describe()
    assert line == describe_report(fam.report, fam.num_classes, fam.dropped, 3)
    assert _uncached(line) == (
        "14 images in 4 classes (cache); 3 classes in use; "
        "ignored 1 non-image (by suffix, e.g. cat/notes.txt) and 1 hidden entries; "
        "left out 1 class folder(s) without images, e.g. 'bats'; "
        "left out 1 image(s) outside any class folder, e.g. loose.png (a class's images go "
        "in a folder named after it); "
        "left out 1 exact copy(ies) of an image of the same class, e.g. cat/copy.png; "
        "dropped 1 class(es) with fewer than 3 images, e.g. 'owl'")
    report = folder_report(load_folder(untidy, image_size=8), ["owl"])
    assert report == {**fam.report, "cache_status": "hit"}


def test_forgetting_and_vae_say_of_a_folder_what_train_says(untidy, capsys):
    """Every class in use and none dropped: the three lines are one, exact copies included
    (the recipes' line left them out)."""
    train = Episodes.from_folder(untidy, 1, 1, 1, image_size=8).describe()
    assert "left out 1 exact copy(ies)" in train
    forgetting = describe_folder(load_folder(untidy, image_size=8))
    assert _uncached(forgetting) == _uncached(train)
    args = argparse.Namespace(data=str(untidy), image_size=8, invert="never")
    with generative._described(args):
        pass
    err = capsys.readouterr().err.splitlines()
    assert [_uncached(ln) for ln in err] == [f"data {untidy}: {_uncached(train)}"]


def test_applied_invert_is_public_and_keeps_colour_images():
    from metaloop.generative.data import applied_invert

    assert applied_invert("auto", 3) == "never"                     # colour: as it is
    assert [applied_invert(m, 1) for m in ("auto", "always", "never")] == [
        "auto", "always", "never"]
    assert applied_invert("always", 3) == "always"


def test_the_vae_line_does_not_go_through_the_forgetting_recipe(untidy, monkeypatch,
                                                               capsys):
    """Each recipe calls ``describe_report`` itself: the vae recipe's line does not change
    with the forgetting recipe's ``describe_folder``."""
    from metaloop.recipes import forgetting

    def elsewhere(data):
        raise AssertionError("the vae recipe called the forgetting recipe")

    monkeypatch.setattr(forgetting, "describe_folder", elsewhere)
    with generative._described(argparse.Namespace(data=str(untidy), image_size=8)):
        pass
    assert capsys.readouterr().err.startswith(f"data {untidy}: 14 images in 4 classes")
