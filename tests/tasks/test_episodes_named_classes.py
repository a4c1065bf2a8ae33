"""Class names with no examples (a Hugging Face dataset filtered to some of its classes
keeps every ``ClassLabel`` name; a tensor file's ``class_names`` may list a class with no
rows) are no class: left out with one ``EmptyClassesWarning``, the other classes keeping
their names and labels; and the messages on a tensor file's names and labels name what is
wrong with them."""

import warnings

import numpy as np
import pytest
import torch

import metaloop as ml
from metaloop.tasks.episodes import EmptyClassesWarning, SmallClassesError

NAMES = ["a", "b", "c", "d"]


def _data(rows=4):
    """Classes a, c, d of ``rows`` examples each (b has none); each example's value is its
    label, so a drawn example tells its class."""
    y = np.repeat([0, 2, 3], rows)
    x = np.repeat(y[:, None], 3, axis=1).astype(np.float32)                  # [N, 3]
    return x, y


def _check_names_map(fam):
    """Every drawn example lies in the class its task names."""
    assert fam.class_names == ["a", "c", "d"] and fam.all_class_names == ["a", "c", "d"]
    batch = fam.sample(20, torch.Generator().manual_seed(0))
    for t in range(20):
        for k in range(fam.ways):
            name = fam.class_names[int(batch.classes[t, k])]
            xs = batch.query_x[t][batch.query_y[t] == k]
            assert set(xs[:, 0].tolist()) == {float(NAMES.index(name))}


def _one_warning(seen, *names):
    empty = [w for w in seen if issubclass(w.category, EmptyClassesWarning)]
    assert len(empty) == 1, [str(w.message) for w in seen]
    text = str(empty[0].message)
    for n in names:
        assert repr(n) in text
    return text


@pytest.mark.parametrize("suffix", [".npz", ".pt"])
def test_a_tensor_file_name_without_rows_is_left_out(tmp_path, suffix):
    x, y = _data()
    path = tmp_path / f"d{suffix}"
    if suffix == ".npz":
        np.savez(path, x=x, y=y, class_names=np.array(NAMES))
    else:
        torch.save({"x": torch.from_numpy(x), "y": torch.from_numpy(y),
                    "class_names": NAMES}, path)
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        fam = ml.tasks.Episodes.from_tensors(path, ways=2, shots=1, queries=1)
    text = _one_warning(seen, "b")
    assert str(path) in text and "1 name(s)" in text
    _check_names_map(fam)


def test_the_constructor_leaves_a_name_without_examples_out():
    x, y = _data()
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        fam = ml.tasks.Episodes(x, y, ways=3, shots=1, queries=2, class_names=NAMES)
    _one_warning(seen, "b")
    _check_names_map(fam)


def test_a_filtered_hugging_face_dataset_keeps_its_other_classes():
    datasets = pytest.importorskip("datasets")
    x, y = _data()
    feats = datasets.Features({"image": datasets.Sequence(datasets.Value("float32")),
                               "label": datasets.ClassLabel(names=NAMES)})
    y_all = np.concatenate([y, [1, 1]])                    # b has two rows before filtering
    x_all = np.concatenate([x, np.ones((2, 3), np.float32)])
    ds = datasets.Dataset.from_dict({"image": x_all.tolist(), "label": y_all.tolist()},
                                    features=feats).with_format("torch")
    ds = ds.filter(lambda r: r["label"] != 1)
    assert ds.features["label"].names == NAMES             # filter keeps every name
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        fam = ml.tasks.Episodes.from_dataset(ds, ways=2, shots=1, queries=1)
    assert "ClassLabel of column 'label'" in _one_warning(seen, "b")
    _check_names_map(fam)


def test_a_small_class_is_still_refused_beside_an_empty_name(tmp_path):
    x, y = _data()
    x, y = np.concatenate([x, x[:1] * 0 + 4]), np.concatenate([y, [4]])      # "e": 1 row
    path = tmp_path / "d.npz"
    np.savez(path, x=x, y=y, class_names=np.array(NAMES + ["e"]))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", EmptyClassesWarning)
        with pytest.raises(SmallClassesError, match=r"'e' \(1\)") as e:
            ml.tasks.Episodes.from_tensors(path, ways=2, shots=1, queries=1)
    assert "'b'" not in str(e.value)


def test_pt_class_names_of_numpy_strings_name_class_names(tmp_path):
    x, y = _data()
    path = tmp_path / "d.pt"
    torch.save({"x": torch.from_numpy(x), "y": torch.from_numpy(y),
                "class_names": list(np.array(NAMES))}, path)               # numpy.str_
    with pytest.raises(ValueError, match="'class_names' holds numpy scalars") as e:
        ml.tasks.Episodes.from_tensors(path, ways=2, shots=1, queries=1)
    assert "[str(n) for n in names]" in str(e.value)
    assert "dict of torch tensors" not in str(e.value)


def test_npz_object_class_names_do_not_advertise_string_labels(tmp_path):
    x, y = _data()
    path = tmp_path / "d.npz"
    np.savez(path, x=x, y=y, class_names=np.array(NAMES, dtype=object))
    with pytest.raises(ValueError, match="'class_names' holds Python objects") as e:
        ml.tasks.Episodes.from_tensors(path, ways=2, shots=1, queries=1)
    assert "class-name strings" not in str(e.value)
    assert "np.array([str(n) for n in names])" in str(e.value)
    # the fix it gives is read
    np.savez(path, x=x, y=y, class_names=np.array([str(n) for n in NAMES]))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", EmptyClassesWarning)
        assert ml.tasks.Episodes.from_tensors(path, ways=2, shots=1, queries=1).class_names \
            == ["a", "c", "d"]


@pytest.mark.parametrize("suffix", [".npz", ".pt"])
def test_whole_float_labels_are_refused_with_the_conversion(tmp_path, suffix):
    x, y = _data()
    path = tmp_path / f"d{suffix}"
    if suffix == ".npz":
        np.savez(path, x=x, y=y.astype(np.float64))
    else:
        torch.save({"x": torch.from_numpy(x), "y": torch.from_numpy(y).double()}, path)
    with pytest.raises(ValueError, match="y must be int labels") as e:
        ml.tasks.Episodes.from_tensors(path, ways=2, shots=1, queries=1)
    assert "y.astype(int)" in str(e.value) and "y.long()" in str(e.value)


def test_hugging_face_numpy_images_advise_the_torch_format():
    datasets = pytest.importorskip("datasets")
    from PIL import Image

    imgs = [Image.fromarray(np.full((8, 8, 3), 40 * k, np.uint8)) for k in range(3)
            for _ in range(3)]
    feats = datasets.Features({"image": datasets.Image(),
                               "label": datasets.ClassLabel(names=["p", "q", "r"])})
    ds = datasets.Dataset.from_dict({"image": imgs, "label": [k for k in range(3)
                                                              for _ in range(3)]},
                                    features=feats)
    with pytest.raises(ValueError, match="with_format") as e:
        ml.tasks.Episodes.from_dataset(ds.with_format("numpy"), ways=2, shots=1, queries=1)
    assert "permute" not in str(e.value)
    fam = ml.tasks.Episodes.from_dataset(ds.with_format("torch"), ways=2, shots=1, queries=1)
    assert fam.input_shape == (3, 8, 8)                   # the advice gives [C, H, W]


def test_a_split_or_a_continual_stream_of_the_file_has_no_empty_class(tmp_path):
    from metaloop.continual.scenarios import user_experiences

    x, y = _data(rows=10)
    path = tmp_path / "d.npz"
    np.savez(path, x=x, y=y, class_names=np.array(NAMES))
    with pytest.warns(EmptyClassesWarning, match="'b'"):
        fam = ml.tasks.Episodes.from_tensors(path, ways=1, shots=1, queries=1,
                                             split="train", fractions=(0.34, 0.33, 0.33))
    assert "b" not in fam.all_class_names
    with pytest.warns(EmptyClassesWarning, match="'b'"):
        exps = user_experiences(path, classes_per_experience=1, setting="class")
    assert [e.name for e in exps] == ["a", "c", "d"]


def test_the_split_is_drawn_over_every_listed_name_and_a_stored_one_still_reads(tmp_path):
    """The split of a file whose ``class_names`` lists a class without rows is the split
    drawn over all the listed names, less that class: the split a run made before empty
    names were left out stored, which its resume (``classes=`` that list) still reads."""
    from metaloop.tasks.episodes import select_split

    names = [f"c{i}" for i in range(20)]
    y = np.repeat([i for i in range(20) if i != 5], 6)                 # "c5": no rows
    x = np.random.default_rng(0).random((len(y), 1, 4, 4)).astype(np.float32)
    path = tmp_path / "d.npz"
    np.savez(path, x=x, y=y, class_names=np.array(names))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", EmptyClassesWarning)
        for split in ("train", "val", "test"):
            fam = ml.tasks.Episodes.from_tensors(path, ways=2, shots=1, queries=1,
                                                 split=split, fractions=(0.6, 0.2, 0.2))
            want = [c for c in select_split(names, split, (0.6, 0.2, 0.2), 0) if c != "c5"]
            assert sorted(fam.class_names) == sorted(want)
        stored = select_split(names, "train", (0.6, 0.2, 0.2), 0)
        assert "c5" in stored
        fam = ml.tasks.Episodes.from_tensors(path, ways=2, shots=1, queries=1, classes=stored)
        assert sorted(fam.class_names) == sorted(c for c in stored if c != "c5")
