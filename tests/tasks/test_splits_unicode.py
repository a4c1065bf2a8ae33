"""Class names compared in Unicode NFC: a split file typed composed matches class folders
macOS wrote decomposed (and the other way round); two names that differ only in that form
are refused, naming both spellings."""

import re
import unicodedata

import numpy as np
import pytest
from PIL import Image

from metaloop.data.folder import load_folder, scan_folder
from metaloop.tasks import Episodes, read_split_file, split_classes
from metaloop.tasks.splits import read_split_files

NFC = "caf\xe9"                                   # é as one code point
NFD = "cafe\u0301"                                # e and a combining acute accent
assert NFC != NFD and unicodedata.normalize("NFC", NFD) == NFC


def _folder(root, names):
    for c, name in enumerate(names):
        (root / name).mkdir(parents=True)
        for i in range(2):
            a = np.random.default_rng([c, i]).integers(0, 256, (8, 8), dtype=np.uint8)
            Image.fromarray(a).save(root / name / f"{i}.png")
    return root


def test_a_split_file_in_either_form_finds_the_class_as_the_data_spells_it(tmp_path):
    for typed, data in ((NFC, NFD), (NFD, NFC)):
        f = tmp_path / "train.txt"
        f.write_text(f"{typed}\nthé\n", encoding="utf-8")
        assert read_split_file(f, known=[data, "th\xe9", "x"]) == [data, "th\xe9"]
    f.write_text(f"{NFD}\n", encoding="utf-8")
    assert read_split_file(f) == [NFC]                    # without known: NFC


def test_a_split_file_listing_one_class_in_both_forms_lists_it_twice(tmp_path):
    f = tmp_path / "train.txt"
    f.write_text(f"{NFC}\n{NFD}\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"lists classes twice: \['café'\]"):
        read_split_file(f, known=[NFC])


def test_two_split_files_sharing_a_class_in_two_forms_are_refused(tmp_path):
    (tmp_path / "a.txt").write_text(f"{NFC}\n", encoding="utf-8")
    (tmp_path / "b.txt").write_text(f"{NFD}\nx\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"\(train\) and .*b\.txt \(test\) share 1 class"):
        read_split_files({"train": tmp_path / "a.txt", "test": tmp_path / "b.txt"},
                         known=[NFD, "x"])


def test_a_name_matching_two_classes_of_the_data_is_refused(tmp_path):
    f = tmp_path / "train.txt"
    f.write_text(f"{NFC}\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"matches two classes of the data that differ only "
                                         r"in their Unicode form \('caf\\xe9' and "
                                         r"'cafe\\u0301'\)"):
        read_split_file(f, known=[NFC, NFD, "x"])
    assert read_split_file(tmp_path / "train.txt", known=[NFC, NFC, "x"]) == [NFC]


def test_split_classes_refuses_names_equal_in_nfc():
    with pytest.raises(ValueError, match=re.escape(
            f"class names {NFC!r} and {NFD!r} differ only in their Unicode form "
            f"({ascii(NFC)} and {ascii(NFD)})")):
        split_classes([NFC, "b", NFD, "d"], (0.5, 0.0, 0.5))


def test_folder_class_names_are_nfc_and_files_keep_their_own_spelling(tmp_path):
    root = _folder(tmp_path / "photos", [NFD, "tea"])
    scan = scan_folder(root)
    assert scan.classes == [NFC, "tea"]
    assert scan.files[0] == [f"{NFD}/0.png", f"{NFD}/1.png"]
    data = load_folder(root, image_size=8)
    assert data.class_names == [NFC, "tea"] and data.labels.tolist() == [0, 0, 1, 1]
    # the reported reproduction: a split file typed in NFC against folders written in NFD
    (tmp_path / "train.txt").write_text(f"{NFC}\ntea\n", encoding="utf-8")
    fam = Episodes.from_folder(root, ways=2, shots=1, queries=1, image_size=8, split="train",
                               split_files={"train": tmp_path / "train.txt"})
    assert fam.class_names == [NFC, "tea"] and fam.num_examples == 4


def test_two_class_folders_equal_in_nfc_are_refused_naming_both(tmp_path):
    root = _folder(tmp_path / "photos", [NFC, NFD])
    with pytest.raises(ValueError, match=re.escape(    # sorted by name: "e" before "\xe9"
            f"class folders {NFD!r} and {NFC!r} have names that differ only in their Unicode "
            f"form ({ascii(NFD)} and {ascii(NFC)}; macOS")):
        scan_folder(root)
    with pytest.raises(ValueError, match=r"differ only in their Unicode form"):
        load_folder(root, image_size=8)
    nested = _folder(tmp_path / "groups" / "g", [NFD])             # class_depth=2: joined
    _folder(tmp_path / "groups" / "h", [NFC])
    assert scan_folder(nested.parent, class_depth=2).classes == [f"g/{NFC}", f"h/{NFC}"]
