"""Class lists matched in Unicode NFC: ``Episodes(classes=...)``, ``Episodes.subset``, a
config's class lists and a table's ``classes`` (or split files) find a class typed composed
(``"caf\\xe9"``) that the data spells decomposed (``"cafe\\u0301"``, as macOS writes names),
and the other way round; the family keeps the data's spelling. Two spellings of one name are
refused, naming both."""

import re
import types
import unicodedata

import numpy as np
import pytest
import torch
from PIL import Image

from metaloop import build, config
from metaloop.tasks import Episodes, TextTable
from metaloop.tasks.episodes import check_distinct_classes, check_examples, class_positions

NFC = "caf\xe9"                                   # é as one code point
NFD = "cafe\u0301"                                # e and a combining acute accent
assert NFC != NFD and unicodedata.normalize("NFC", NFD) == NFC
FORMS = [(NFC, NFD), (NFD, NFC)]                  # (typed, the data's spelling)


def _vectors(names):
    """6 examples of 4-d vectors per class, labelled in the order of ``names``."""
    x = torch.randn(6 * len(names), 4, generator=torch.Generator().manual_seed(0))
    return x, torch.arange(len(names)).repeat_interleave(6)


def _table(path, labels):
    rows = "".join(f"text {i} of class {k},{lab}\n"
                   for k, lab in enumerate(labels) for i in range(4))
    path.write_text("text,label\n" + rows, encoding="utf-8")
    return path


# ---- Episodes ------------------------------------------------------------------------


@pytest.mark.parametrize("typed,data", FORMS)
def test_episodes_classes_in_either_form_find_the_class_as_the_data_spells_it(typed, data):
    x, y = _vectors([data, "tea", "milk"])
    fam = Episodes(x, y, 2, 1, 2, [data, "tea", "milk"], classes=["milk", typed])
    assert fam.class_names == ["milk", data]
    assert fam.all_class_names == [data, "tea", "milk"]
    batch = fam.sample(3, generator=torch.Generator().manual_seed(0))
    assert set(batch.classes.flatten().tolist()) <= {0, 1}
    sub = Episodes(x, y, 2, 1, 2, [data, "tea", "milk"]).subset([typed, "tea"])
    assert sub.class_names == [data, "tea"]


def test_a_class_typed_in_both_forms_is_refused_naming_both_spellings():
    x, y = _vectors([NFC, "tea", "milk"])
    want = re.escape(f"Episodes classes lists the class {NFC!r} twice, spelled in two "
                     f"Unicode forms ({ascii(NFC)} and {ascii(NFD)})")
    with pytest.raises(ValueError, match=want):
        Episodes(x, y, 2, 1, 2, [NFC, "tea", "milk"], classes=[NFC, "tea", NFD])
    with pytest.raises(ValueError, match=r"Episodes\.subset classes lists the class"):
        Episodes(x, y, 2, 1, 2, [NFC, "tea", "milk"]).subset([NFD, NFC])
    with pytest.raises(ValueError, match=r"lists 1 class\(es\) more than once: \['tea'\]"):
        Episodes(x, y, 2, 1, 2, [NFC, "tea", "milk"], classes=["tea", "tea"])


def test_two_class_names_equal_in_nfc_are_refused_naming_both():
    x, y = _vectors([NFC, NFD])
    want = re.escape(f"class_names {NFC!r} and {NFD!r} differ only in their Unicode form "
                     f"({ascii(NFC)} and {ascii(NFD)})")
    with pytest.raises(ValueError, match="Episodes " + want):
        Episodes(x, y, 2, 1, 2, [NFC, NFD])
    with pytest.raises(ValueError, match="support: " + want):
        check_examples(x, y, [NFC, NFD], "support:")


def test_an_unknown_class_is_still_named_as_typed():
    x, y = _vectors([NFC, "tea"])
    with pytest.raises(ValueError, match=r"names 1 unknown class\(es\): \['cofe'\]"):
        Episodes(x, y, 2, 1, 2, [NFC, "tea"], classes=["cofe", NFD])


def test_class_positions_and_check_distinct_classes():
    assert class_positions([NFD, "x", "b"], ["a", "b", NFC]) == ([2, 1], ["x"])
    assert class_positions([NFC], [NFD]) == ([0], [])
    check_distinct_classes("these", [NFC, "cafe"])                   # different: fine
    with pytest.raises(ValueError, match=r"^these lists the class"):
        check_distinct_classes("these", [NFD, NFC])


@pytest.mark.parametrize("typed,data", FORMS)
def test_a_tensor_file_with_class_names_takes_classes_in_either_form(tmp_path, typed, data):
    x, y = _vectors([data, "tea", "milk"])
    np.savez(tmp_path / "t.npz", x=x.numpy(), y=y.numpy(),
             class_names=np.array([data, "tea", "milk"]))
    fam = Episodes.from_tensors(tmp_path / "t.npz", 2, 1, 2, classes=[typed, "tea"])
    assert fam.class_names == [data, "tea"]


@pytest.mark.parametrize("typed", [NFC, NFD])
def test_a_folder_macos_wrote_takes_classes_in_either_form(tmp_path, typed):
    root = tmp_path / "photos"
    for c, name in enumerate([NFD, "tea", "milk"]):
        (root / name).mkdir(parents=True)
        for i in range(3):
            a = np.random.default_rng([c, i]).integers(0, 256, (8, 8), dtype=np.uint8)
            Image.fromarray(a).save(root / name / f"{i}.png")
    fam = Episodes.from_folder(root, 2, 1, 2, image_size=8, classes=["tea", typed],
                               cache_dir=tmp_path / "cache")
    assert fam.class_names == ["tea", NFC]                 # folder names are NFC


# ---- text tables ---------------------------------------------------------------------


@pytest.mark.parametrize("typed,data", FORMS)
def test_table_classes_in_either_form_find_the_label_as_the_table_spells_it(tmp_path, typed,
                                                                             data):
    path = _table(tmp_path / "t.csv", [data, "tea", "milk"])
    fam = TextTable(path, ways=2, shots=1, queries=2, classes=[typed, "tea"])
    assert fam.class_names == [data, "tea"]
    assert fam.all_class_names == sorted([data, "tea", "milk"])
    assert fam.wordings([0]) == [{"name": data}]
    assert len(fam.texts) == 8


def test_table_classes_listed_twice_are_refused(tmp_path):
    path = _table(tmp_path / "t.csv", [NFD, "tea", "milk"])
    with pytest.raises(ValueError, match=re.escape(
            f"text table {path}: classes lists the class {NFC!r} twice, spelled in two "
            f"Unicode forms ({ascii(NFC)} and {ascii(NFD)})")):
        TextTable(path, ways=2, shots=1, queries=2, classes=[NFC, "tea", NFD])
    with pytest.raises(ValueError, match=r"classes lists 1 class\(es\) more than once"):
        TextTable(path, ways=2, shots=1, queries=2, classes=["tea", "milk", "tea"])
    with pytest.raises(ValueError, match=r"has no class\(es\) \['cofe'\]; its labels are"):
        TextTable(path, ways=2, shots=1, queries=2, classes=["cofe", "tea"])


@pytest.mark.parametrize("typed,data", FORMS)
def test_a_table_config_with_split_files_in_either_form(tmp_path, monkeypatch, typed, data):
    """A table config's split files, read without the table (``build._text_table``), name
    its labels in NFC; the family finds them as the table spells them."""
    labels = [data, "tea", "milk", "juice", "soda", "water"]
    path = _table(tmp_path / "t.csv", labels)
    files = []
    for split, names in (("train", [typed, "tea", "milk"]), ("val", ["juice", "soda"]),
                         ("test", ["water", "soda"][:1])):
        f = tmp_path / f"{split}.txt"
        f.write_text("\n".join(names) + "\n", encoding="utf-8")
        files.append(str(f))
    cfg = config.validate({"family": {"name": "table", "root": str(path), "ways": 2,
                                      "shots": 1, "queries": 2, "split_files": files},
                           "model": {"name": "text"}, "method": {"name": "protonet"}})
    tokenize = lambda texts: torch.arange(len(texts))[:, None].float()  # noqa: E731
    monkeypatch.setattr(build, "text_encoder",
                        lambda source, max_length: types.SimpleNamespace(tokenize=tokenize))
    fam = build.user_family(cfg["family"], "train", 1, 2)
    assert isinstance(fam, TextTable)
    assert fam.class_names == sorted([data, "tea", "milk"])
    assert data in fam.class_names and fam.input_shape == (1,)


@pytest.mark.parametrize("first,second", FORMS)
def test_a_config_whose_splits_share_a_class_in_two_spellings_is_refused(tmp_path, first,
                                                                         second):
    """``train_classes = ["café"]`` and ``test_classes = ["cafe\\u0301"]`` name one class
    (matched in NFC), so the splits would share it: refused as an exact repeat is."""
    np.savez(tmp_path / "t.npz", x=np.zeros((4, 2), np.float32), y=np.arange(4) % 2)
    cfg = config.validate({"family": {"name": "tensors", "root": str(tmp_path / "t.npz"),
                                      "ways": 2, "shots": 1, "queries": 1,
                                      "train_classes": [first, "tea"],
                                      "test_classes": [second, "milk"]},
                           "model": {"name": "mlp"}, "method": {"name": "protonet"}})
    with pytest.raises(ValueError, match="train_classes and test_classes share classes"):
        config.check_combinations(cfg)


@pytest.mark.parametrize("typed,data", FORMS)
def test_classes_gone_from_the_data_are_matched_in_nfc(tmp_path, typed, data):
    """A run's class list is checked against its data in NFC: only the class really gone
    is named, not the one spelled in the other form."""
    x, y = _vectors([data, "tea"])
    np.savez(tmp_path / "t.npz", x=x.numpy(), y=y.numpy(), class_names=np.array([data, "tea"]))
    fcfg = {"name": "tensors", "root": str(tmp_path / "t.npz"), "split_files": [],
            "train_classes": [typed, "gone"], "val_classes": [], "test_classes": []}
    assert build._classes_gone(fcfg, [typed, "gone"]) == ["gone"]
