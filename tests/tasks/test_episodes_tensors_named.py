"""``Episodes.from_tensors`` given tensors instead of a path, and negative labels: each is a
ValueError that names the problem and the way on."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from metaloop.tasks import Episodes


def _data(n_classes: int = 4, per_class: int = 4):
    y = torch.arange(n_classes).repeat_interleave(per_class)
    x = torch.randn(len(y), 3, generator=torch.Generator().manual_seed(0))
    return x, y


@pytest.mark.parametrize("args", [
    lambda x, y: (x, y),                       # from_tensors(x, y): y lands on ways
    lambda x, y: (x,),
    lambda x, y: (x.numpy(),),
    lambda x, y: ((x, y),),
], ids=["tensor-x-y", "tensor", "array", "tuple"])
def test_from_tensors_given_tensors_points_to_the_constructor(args):
    x, y = _data()
    with pytest.raises(ValueError, match=r"Episodes\.from_tensors reads a \.npz or \.pt "
                                         r"file") as e:
        Episodes.from_tensors(*args(x, y))
    text = str(e.value)
    assert "str or os.PathLike" in text and "ml.tasks.Episodes(x, y, ways=" in text
    if isinstance(args(x, y)[0], torch.Tensor):
        assert "a Tensor [16, 3]" in text


def test_from_tensors_still_reads_a_path(tmp_path):
    x, y = _data()
    np.savez(tmp_path / "d.npz", x=x.numpy(), y=y.numpy())
    for path in (tmp_path / "d.npz", str(tmp_path / "d.npz")):
        fam = Episodes.from_tensors(path, ways=2, shots=1, queries=1)
        assert fam.class_names == ["0", "1", "2", "3"]


def test_negative_labels_are_refused_with_the_remapping():
    x, y = _data()
    with pytest.raises(ValueError, match=r"labels must be non-negative ints, "
                                         r"found -10\.\.-7") as e:
        Episodes(x, y - 10, ways=2, shots=1, queries=1)     # no "[0, -6)" range
    text = str(e.value)
    assert "unlabelled" in text and "torch.unique(y, return_inverse=True)" in text
    with pytest.raises(ValueError, match=r"labels must be in \[0, 2\) \(max \+ 1\): "
                                         r"non-negative ints, found -2\.\.1; a negative "
                                         r"label is no class") as e:
        Episodes(x, y - 2, ways=2, shots=1, queries=1)
    assert "torch.unique(y, return_inverse=True)" in str(e.value)
    # one -1 among gapped labels is no class either
    with pytest.raises(ValueError, match="non-negative"):
        Episodes(x, torch.where(y == 0, -1, y * 10), ways=2, shots=1, queries=1)


def test_negative_labels_with_class_names_name_the_problem_not_the_remapping():
    x, y = _data()
    with pytest.raises(ValueError, match=r"labels must be in \[0, 4\) \(len\(class_names\)\): "
                                         r"non-negative ints, found -1\.\.2") as e:
        Episodes(x, y - 1, ways=2, shots=1, queries=1, class_names=list("abcd"))
    assert "non-negative" in str(e.value)
    assert "return_inverse" not in str(e.value)


def test_the_remapping_the_error_gives_works():
    x, y = _data()
    values, dense = torch.unique(y - 10, return_inverse=True)
    fam = Episodes(x, dense, ways=2, shots=1, queries=1,
                   class_names=[str(v) for v in values.tolist()])
    assert fam.class_names == ["-10", "-9", "-8", "-7"]
    assert fam.sample(2, generator=torch.Generator().manual_seed(0)).num_tasks == 2


def test_out_of_range_labels_without_negatives_keep_their_message():
    x, y = _data()
    with pytest.raises(ValueError, match=r"labels must be in \[0, 3\) \(len\(class_names\)\), "
                                         r"found 0\.\.3$"):
        Episodes(x, y, ways=2, shots=1, queries=1, class_names=list("abc"))


def test_the_docstring_says_labels_are_non_negative():
    doc = Episodes.__doc__ or ""
    assert "non-negative int ``[N]`` labels" in doc
    assert "torch.unique(y, return_inverse=True)" in doc
