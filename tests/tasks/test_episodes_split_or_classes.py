"""``classes=`` replaces the class split: ``Episodes.from_folder`` / ``from_tensors`` refuse a
split given beside it (which it used to override silently), as ``TextTable`` does."""
import numpy as np
import pytest
from PIL import Image

from metaloop.tasks import Episodes


@pytest.fixture
def folder(tmp_path):
    root = tmp_path / "imgs"
    rng = np.random.default_rng(0)
    for c in "abcd":
        (root / c).mkdir(parents=True)
        for i in range(3):
            Image.fromarray(rng.integers(0, 255, (8, 8), dtype=np.uint8)).save(
                root / c / f"{i}.png")
    return root


@pytest.fixture
def tensors(tmp_path):
    path = tmp_path / "data.npz"
    np.savez(path, x=np.zeros((12, 1, 4, 4), np.float32), y=np.repeat(np.arange(4), 3))
    return path


@pytest.mark.parametrize("extra", [{"split": "bogus"}, {"split": "test"},
                                   {"fractions": (0.5, 0.25, 0.25)}, {"seed": 3},
                                   {"split_files": {"train": "x.txt"}}])
def test_a_split_beside_classes_is_refused_naming_both(folder, tensors, extra):
    name = next(iter(extra))
    with pytest.raises(ValueError, match=rf"from_folder got classes= and {name}=.*not both"):
        Episodes.from_folder(folder, ways=2, shots=1, queries=1, image_size=8,
                             classes=["a", "b"], **extra)
    with pytest.raises(ValueError, match=rf"from_tensors got classes= and {name}=.*not both"):
        Episodes.from_tensors(tensors, ways=2, shots=1, queries=1, classes=["0", "1"],
                              **extra)


def test_classes_alone_or_with_the_default_split_still_work(folder, tensors):
    fam = Episodes.from_folder(folder, ways=2, shots=1, queries=1, image_size=8,
                               classes=["a", "c"], fractions=[0.7, 0.1, 0.2], seed=0)
    assert fam.class_names == ["a", "c"]
    fam = Episodes.from_tensors(tensors, ways=2, shots=1, queries=1, classes=["1", "3"])
    assert fam.class_names == ["1", "3"]
