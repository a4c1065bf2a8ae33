"""``Episodes``' boolean arguments must be True or False: a string such as ``"False"``
read as True (``drop_small="False"`` dropped the small classes)."""

import re

import numpy as np
import pytest
import torch

import metaloop as ml


def _data():
    """Three classes of 4 examples and one of 1."""
    x = torch.randn(13, 2)
    y = torch.cat([torch.arange(3).repeat_interleave(4), torch.tensor([3])])
    return x, y


@pytest.mark.parametrize("value", ["False", "True", None, 2, 0.0])
def test_drop_small_that_is_no_flag_is_refused_by_name(value):
    with pytest.raises(ValueError, match="^" + re.escape(
            f"Episodes drop_small must be True or False, got {value!r}") + "$"):
        ml.tasks.Episodes(*_data(), ways=2, shots=1, queries=1, drop_small=value)


@pytest.mark.parametrize("value, dropped", [(True, ["3"]), (1, ["3"]), (False, None),
                                            (0, None)])
def test_drop_small_true_or_false_keeps_its_meaning(value, dropped):
    if dropped is None:
        with pytest.raises(ml.tasks.episodes.SmallClassesError):
            ml.tasks.Episodes(*_data(), ways=2, shots=1, queries=1, drop_small=value)
        return
    fam = ml.tasks.Episodes(*_data(), ways=2, shots=1, queries=1, drop_small=value)
    assert fam.dropped == dropped and fam.drop_small is True


def test_from_tensors_names_the_file_and_the_flag(tmp_path):
    x, y = _data()
    path = tmp_path / "t.npz"
    np.savez(path, x=x.numpy(), y=y.numpy())
    with pytest.raises(ValueError, match=rf"^tensor file {path}: drop_small must be True or "
                                         rf"False, got 'no'$"):
        ml.tasks.Episodes.from_tensors(path, ways=2, shots=1, queries=1, drop_small="no")


@pytest.mark.parametrize("flag", ["drop_small", "skip_corrupt"])
def test_from_folder_refuses_a_string_flag_before_it_reads_the_folder(image_folder, flag):
    with pytest.raises(ValueError, match=rf"^Episodes.from_folder {flag} must be True or "
                                         rf"False, got 'False'$"):
        ml.tasks.Episodes.from_folder(image_folder, ways=2, shots=1, queries=1,
                                      cache_dir=image_folder.parent / "cache",
                                      **{flag: "False"})
    assert not (image_folder.parent / "cache").exists()
