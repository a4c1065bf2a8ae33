"""Class splits: deterministic, disjoint, covering, and named errors; split files."""

import pytest

from metaloop.tasks import read_split_file, split_classes
from metaloop.tasks.splits import read_split_files

NAMES = [f"c{i:02d}" for i in range(50)]


def test_split_is_deterministic_disjoint_covering_and_order_free():
    tr, va, te = split_classes(NAMES, (0.7, 0.1, 0.2), seed=3)
    assert (len(tr), len(va), len(te)) == (35, 5, 10)
    assert set(tr) | set(va) | set(te) == set(NAMES)
    assert not (set(tr) & set(va) or set(tr) & set(te) or set(va) & set(te))
    assert (tr, va, te) == split_classes(list(reversed(NAMES)), (0.7, 0.1, 0.2), seed=3)
    assert (tr, va, te) != split_classes(NAMES, (0.7, 0.1, 0.2), seed=4)
    assert tr == sorted(tr) and te == sorted(te)


def test_small_splits_keep_one_class_each():
    tr, va, te = split_classes(["a", "b", "c"], (0.8, 0.1, 0.1))
    assert len(tr) == len(va) == len(te) == 1
    tr, va, te = split_classes(["a", "b"], (0.5, 0.0, 0.5))
    assert (len(tr), va, len(te)) == (1, [], 1)



@pytest.mark.parametrize("fractions", [(0.1, 0.1, 0.8), (0.2, 0.0, 0.8), (0.1, 0.8, 0.1),
                                       (0.05, 0.15, 0.8), (0.34, 0.33, 0.33)])
def test_every_non_empty_fraction_gets_a_class(fractions):
    """A large test fraction took every class but one and left train empty: 3 classes at
    (0.1, 0.1, 0.8) split into train [], val ['b'], test ['a', 'c']."""
    for c in range(sum(f > 0 for f in fractions), 12):
        names = [f"k{i}" for i in range(c)]
        parts = split_classes(names, fractions, seed=1)
        assert sorted(sum(parts, [])) == sorted(names), (c, parts)
        for f, part in zip(fractions, parts):
            assert (len(part) >= 1) == (f > 0), (c, fractions, parts)
    assert [len(p) for p in split_classes(["a", "b", "c"], (0.1, 0.1, 0.8))] == [1, 1, 1]


def test_numpy_fractions_and_seed_are_numbers():
    """numpy float32 fractions were refused as not "three numbers >= 0", and a numpy int
    seed as not an int."""
    import numpy as np
    want = split_classes(NAMES, (0.5, 0.25, 0.25), seed=3)
    assert split_classes(NAMES, np.array([0.5, 0.25, 0.25], np.float32), seed=np.int64(3)) \
        == want
    with pytest.raises(ValueError, match="seed must be an int"):
        split_classes(NAMES, (0.5, 0.25, 0.25), seed=3.0)


@pytest.mark.parametrize("seed", [2 ** 64, -2 ** 63 - 1])
def test_a_seed_a_generator_cannot_take_is_named(seed):
    # it was torch's own "Overflow when unpacking long long", naming nothing
    with pytest.raises(ValueError, match=rf"split_classes seed {seed} is outside what a "
                                         rf"torch.Generator takes"):
        split_classes(NAMES, (0.5, 0.25, 0.25), seed=seed)

@pytest.mark.parametrize("names, fractions, match", [
    ([], (0.7, 0.1, 0.2), "at least one"),
    (["a", "a", "b"], (0.7, 0.1, 0.2), "duplicated class names"),
    (NAMES, (0.7, 0.2), "three numbers"),
    (NAMES, (0.7, -0.1, 0.4), "three numbers"),
    (NAMES, (0.7, 0.2, 0.2), "sum to 1"),
    (["a", "b"], (0.7, 0.1, 0.2), "cannot fill 3 non-empty splits"),
])
def test_bad_splits_are_named(names, fractions, match):
    with pytest.raises(ValueError, match=match):
        split_classes(names, fractions)


def test_split_files(tmp_path):
    f = tmp_path / "test.txt"
    f.write_text("# held out\nc01\n\nc07\n")
    assert read_split_file(f, known=NAMES) == ["c01", "c07"]
    f.write_text("c01\nnope\nc99\n")
    with pytest.raises(ValueError, match=r"names 2 unknown class\(es\): \['nope', 'c99'\]"):
        read_split_file(f, known=NAMES)
    f.write_text("c01\nc01\n")
    with pytest.raises(ValueError, match="twice"):
        read_split_file(f)
    with pytest.raises(ValueError, match="does not exist"):
        read_split_file(tmp_path / "missing.txt")


def test_split_file_that_is_not_utf8_names_the_byte(tmp_path):
    f = tmp_path / "test.txt"
    f.write_bytes(b"c01\nc\xff07\n")
    with pytest.raises(ValueError, match=r"test\.txt is not UTF-8 text: byte 0xff at offset 5 "
                                         r"\(line 2\)"):
        read_split_file(f, known=NAMES)


def test_split_files_must_not_share_classes(tmp_path):
    files = {s: tmp_path / f"{s}.txt" for s in ("train", "val", "test")}
    files["train"].write_text("c00\nc01\nc03\n")
    files["val"].write_text("c02\n")
    files["test"].write_text("c04\nc03\nc01\n")
    with pytest.raises(ValueError, match=r"split files .*train\.txt \(train\) and .*test\.txt "
                                         r"\(test\) share 2 class\(es\): \['c01', 'c03'\]"):
        read_split_files(files, known=NAMES)
    files["test"].write_text("c04\n")
    assert read_split_files(files, known=NAMES) == {"train": ["c00", "c01", "c03"],
                                                    "val": ["c02"], "test": ["c04"]}


def test_table_family_split_files_must_not_share_classes(tmp_path):
    """A text-table family's split files are checked together too, before its encoder loads."""
    from metaloop import build

    (tmp_path / "tr.txt").write_text("cooking\nmusic\n")
    (tmp_path / "va.txt").write_text("sports\n")
    (tmp_path / "te.txt").write_text("music\nweather\n")
    fcfg = {"train_classes": [], "val_classes": [], "test_classes": [],
            "split_files": [str(tmp_path / f) for f in ("tr.txt", "va.txt", "te.txt")],
            "split_fractions": [0.5, 0.0, 0.5], "split_seed": 0,
            "encoder": "/no/such/encoder", "max_length": 32}
    with pytest.raises(ValueError, match=r"tr.txt \(train\) and .*te.txt \(test\) share 1 "
                                         r"class\(es\): \['music'\]"):
        build._text_table(fcfg, "test", 1, 1)


def test_split_file_with_a_byte_order_mark(tmp_path):
    f = tmp_path / "train.txt"                       # as Windows editors save UTF-8
    f.write_bytes(b"\xef\xbb\xbfc01\r\nc02\r\n")
    assert read_split_file(f, known=NAMES) == ["c01", "c02"]
    f.write_bytes(b"\xef\xbb\xbfc01\nc\xff07\n")     # offsets still count the file's bytes
    with pytest.raises(ValueError, match=r"byte 0xff at offset 8 \(line 2\)"):
        read_split_file(f, known=NAMES)


@pytest.mark.parametrize("dtype", [float, "float32"])
def test_a_fraction_of_whole_classes_counts_them_all(dtype):
    """0.29 * 100 is 28.999999999999996 in floats, which floor() made 28 test classes."""
    import numpy as np
    names = [f"k{i:03d}" for i in range(100)]
    cast = float if dtype is float else np.float32
    tr, va, te = split_classes(names, (cast(0.61), cast(0.1), cast(0.29)), seed=0)
    assert (len(tr), len(va), len(te)) == (61, 10, 29)
    for c, want in ((10, 1), (30, 4), (7, 1)):                 # not whole: floored as before
        parts = split_classes([f"k{i}" for i in range(c)], (0.6, 0.15, 0.25), seed=0)
        assert len(parts[1]) == want, (c, parts)
