"""Episodes.from_tensors / select_split: bad data and split files get a ValueError naming the
file and the problem."""

import numpy as np
import pytest
import torch

from metaloop.tasks import Episodes
from metaloop.tasks.episodes import select_split

NAMES = [f"class_{i:02d}" for i in range(8)]


def _xy():
    x = np.random.default_rng(0).standard_normal((48, 16)).astype(np.float32)   # [N, D]
    return x, np.repeat(np.arange(8), 6)                                         # [N]


@pytest.mark.parametrize("name, content, match", [
    ("d.npz", b"", r"d\.npz is empty \(0 bytes\)"),
    ("d.pt", b"", r"d\.pt is empty \(0 bytes\)"),
    ("d.npz", b"hello world\n", r"d\.npz is not an \.npz archive"),
    ("d.npz", b"\x93NUMPY\x01\x00", r"d\.npz is not an \.npz archive"),
    ("d.pt", b"hello world\n", r"d\.pt is not a torch save"),
])
def test_unreadable_tensor_files_are_named(tmp_path, name, content, match):
    (tmp_path / name).write_bytes(content)
    with pytest.raises(ValueError, match=match):
        Episodes.from_tensors(tmp_path / name, ways=2, shots=1, queries=2)


def test_truncated_tensor_files_are_named(tmp_path):
    x, y = _xy()
    np.savez(tmp_path / "d.npz", x=x, y=y)
    torch.save({"x": torch.from_numpy(x), "y": torch.from_numpy(y)}, tmp_path / "d.pt")
    for name, match in (("d.npz", r"d\.npz is a corrupt \.npz archive"),
                        ("d.pt", r"d\.pt is not a torch save")):
        data = (tmp_path / name).read_bytes()
        (tmp_path / name).write_bytes(data[:len(data) // 2])
        with pytest.raises(ValueError, match=match):
            Episodes.from_tensors(tmp_path / name, ways=2, shots=1, queries=2)


def test_numpy_arrays_in_a_pt_file_are_refused_not_unpickled(tmp_path):
    x, y = _xy()
    torch.save({"x": x, "y": y}, tmp_path / "d.pt")
    with pytest.raises(ValueError, match=r"d\.pt holds numpy arrays .*Unsupported global"):
        Episodes.from_tensors(tmp_path / "d.pt", ways=2, shots=1, queries=2)


def test_string_images_are_named(tmp_path):
    x, y = _xy()
    np.savez(tmp_path / "d.npz", x=np.array(["a"] * 48), y=y)
    with pytest.raises(ValueError, match=r"d\.npz: x must be numeric .*got dtype <U1"):
        Episodes.from_tensors(tmp_path / "d.npz", ways=2, shots=1, queries=2, split="test")


def test_string_labels_are_named_with_the_way_to_keep_the_names(tmp_path):
    """A user's labels are often class names; the error shows how to save them, which
    from_tensors then reads (it said only that y must be numeric)."""
    import numpy

    x, y = _xy()
    words = np.array(["ant", "bee", "cat", "dog", "eel", "fox", "gnu", "hen"])[y]
    np.savez(tmp_path / "d.npz", x=x, y=words)
    with pytest.raises(ValueError, match=r"d\.npz: y must be int labels \[N\], got dtype "
                                         r"<U3; .*numpy\.unique\(y, return_inverse=True\)") as e:
        Episodes.from_tensors(tmp_path / "d.npz", ways=2, shots=1, queries=2, split="test")
    # the advice, followed, is read
    names, labels = numpy.unique(words, return_inverse=True)
    assert "numpy.savez(..., x=x, y=y, class_names=names)" in str(e.value)
    np.savez(tmp_path / "d.npz", x=x, y=labels, class_names=names)
    fam = Episodes.from_tensors(tmp_path / "d.npz", ways=2, shots=1, queries=2)
    assert fam.class_names == ["ant", "bee", "cat", "dog", "eel", "fox", "gnu", "hen"]


def test_empty_arrays_are_named(tmp_path):
    np.savez(tmp_path / "d.npz", x=np.zeros((0, 16), np.float32), y=np.zeros(0, np.int64))
    with pytest.raises(ValueError, match=r"d\.npz holds no examples"):
        Episodes.from_tensors(tmp_path / "d.npz", ways=2, shots=1, queries=2, split="test")


@pytest.mark.parametrize("suffix", [".npz", ".pt"])
def test_non_finite_features_are_named_with_rows_and_classes(tmp_path, suffix):
    x, y = _xy()
    x[3, 2], x[40, 0] = np.nan, np.inf                                  # classes 0 and 6
    path = tmp_path / f"d{suffix}"
    if suffix == ".npz":
        np.savez(path, x=x, y=y, class_names=np.array(NAMES))
    else:
        torch.save({"x": torch.from_numpy(x), "y": torch.from_numpy(y),
                    "class_names": NAMES}, path)
    for split in ("train", "test", None):
        with pytest.raises(ValueError, match=rf"d\{suffix}: x has non-finite values \(NaN or "
                                             r"inf\) in 2 row\(s\) \[3, 40\] of 2 class\(es\) "
                                             r"\['class_00', 'class_06'\]"):
            Episodes.from_tensors(path, ways=2, shots=1, queries=2, split=split)


def test_overlapping_split_files_are_named(tmp_path):
    x, y = _xy()
    np.savez(tmp_path / "d.npz", x=x, y=y, class_names=np.array(NAMES))
    (tmp_path / "tr.txt").write_text("class_00\nclass_01\nclass_02\nclass_03\n")
    (tmp_path / "va.txt").write_text("class_04\nclass_05\n")
    (tmp_path / "te.txt").write_text("class_06\nclass_07\nclass_03\n")
    files = {s: tmp_path / f for s, f in (("train", "tr.txt"), ("val", "va.txt"),
                                          ("test", "te.txt"))}
    for split in ("train", "val", "test"):
        with pytest.raises(ValueError, match=r"split files .*tr\.txt \(train\) and .*te\.txt "
                                             r"\(test\) share 1 class\(es\): \['class_03'\]"):
            Episodes.from_tensors(tmp_path / "d.npz", ways=2, shots=1, queries=2, split=split,
                                  split_files=files)
    (tmp_path / "te.txt").write_text("class_06\nclass_07\n")
    assert select_split(NAMES, "test", split_files=files) == ["class_06", "class_07"]


@pytest.mark.parametrize("dtype", ["u2", "u4", "u8"])
def test_unsigned_labels_in_a_file_are_read(tmp_path, dtype):
    """uint16/32/64 labels failed inside torch: NotImplementedError: "min_all" not
    implemented for 'UInt16' (a traceback from metaloop train)."""
    x, y = _xy()
    np.savez(tmp_path / "d.npz", x=x, y=y.astype(dtype))
    fam = Episodes.from_tensors(tmp_path / "d.npz", ways=2, shots=1, queries=2)
    assert fam.class_names == [str(i) for i in range(8)] and fam.num_examples == 48
    np.savez(tmp_path / "g.npz", x=x, y=(y * 10).astype(dtype))     # gaps: named by value
    fam = Episodes.from_tensors(tmp_path / "g.npz", ways=2, shots=1, queries=2)
    assert fam.class_names == [str(10 * i) for i in range(8)]


def test_big_endian_arrays_are_read_as_their_numbers(tmp_path):
    """Arrays in the other byte order (``>f4``) were refused with torch's "given numpy array
    has byte order different from the native byte order", not naming the file."""
    x, y = _xy()
    np.savez(tmp_path / "d.npz", x=x.astype(">f4"), y=y.astype(">i8"))
    g = torch.Generator().manual_seed(0)
    fam = Episodes.from_tensors(tmp_path / "d.npz", ways=2, shots=1, queries=2)
    ref = Episodes(x, y, ways=2, shots=1, queries=2)
    a, b = fam.sample(3, g), ref.sample(3, torch.Generator().manual_seed(0))
    assert torch.equal(a.support_x, b.support_x) and torch.equal(a.query_x, b.query_x)
    direct = Episodes(x.astype(">f4"), y.astype(">i4"), ways=2, shots=1, queries=2)
    assert torch.equal(direct.sample(3, torch.Generator().manual_seed(0)).query_x, b.query_x)


@pytest.mark.parametrize("x, y, match", [
    (np.zeros((4, 2), np.float32), np.array(list("aabb")),
     r"Episodes y must be int labels \[N\], got numpy <U1 \[4\]; for named classes .*"
     r"class_names="),
    (np.zeros((4, 2), np.float32), np.array([0, 0, 1, None], dtype=object),
     r"Episodes y must be int labels \[N\], got numpy object"),
    (np.array([["a"]] * 4), np.array([0, 0, 1, 1]),
     r"Episodes x must be uint8 images \(0..255\) or floating point, got numpy <U1"),
])
def test_non_numeric_arrays_are_named(x, y, match):
    """String or object labels (and inputs) failed inside torch: TypeError: can't convert
    np.ndarray of type numpy.str_."""
    with pytest.raises(ValueError, match=match):
        Episodes(x, y, ways=2, shots=1, queries=1)


def test_the_constructors_errors_name_the_tensor_file(tmp_path):
    x, y = _xy()
    np.savez(tmp_path / "floaty.npz", x=x, y=y.astype(np.float32))        # float labels
    with pytest.raises(ValueError, match=r"tensor file .*floaty\.npz: y must be int"):
        Episodes.from_tensors(tmp_path / "floaty.npz", ways=2, shots=1, queries=2)


@pytest.mark.parametrize("channels", [1, 3])
def test_channels_last_images_are_named(tmp_path, channels):
    x = np.random.default_rng(0).random((48, 28, 28, channels), dtype=np.float32)  # [N, H, W, C]
    np.savez(tmp_path / "hwc.npz", x=x, y=np.repeat(np.arange(8), 6))
    with pytest.raises(ValueError, match=r"hwc\.npz: .*looks channels-last \[N, H, W, C\]; "
                                         r"give \[N, C, H, W\]"):
        Episodes.from_tensors(tmp_path / "hwc.npz", ways=2, shots=1, queries=2)
    with pytest.raises(ValueError, match="looks channels-last"):
        Episodes(torch.from_numpy(x), torch.from_numpy(np.repeat(np.arange(8), 6)), 2, 1, 2)
    fam = Episodes.from_tensors(_saved(tmp_path, x.transpose(0, 3, 1, 2)), ways=2, shots=1,
                                queries=2)                                   # [N, C, H, W]
    assert fam.sample(1, torch.Generator().manual_seed(0)).support_x.shape[-3:] == \
        (channels, 28, 28)


def _saved(tmp_path, x):
    np.savez(tmp_path / "chw.npz", x=np.ascontiguousarray(x), y=np.repeat(np.arange(8), 6))
    return tmp_path / "chw.npz"


def test_an_npz_of_python_objects_says_so_not_that_it_is_corrupt(tmp_path):
    """np.load's "Object arrays cannot be loaded when allow_pickle=False" was reported as a
    corrupt archive."""
    np.savez(tmp_path / "obj.npz", x=np.zeros((4, 2), np.float32),
             y=np.array(["a", None, "b", "c"], dtype=object))
    with pytest.raises(ValueError, match=r"obj\.npz: its array 'y' holds Python objects "
                                         r"\(dtype object\), which loading would unpickle"):
        Episodes.from_tensors(tmp_path / "obj.npz", ways=2, shots=1, queries=1)
