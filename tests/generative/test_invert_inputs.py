"""``invert_classifier`` takes NumPy integers and floats where it takes Python ones, and names
an empty target instead of misreading it."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from metaloop.generative.invert import invert_classifier

SHAPE = (1, 6, 6)


def _linear() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(36, 3)).double().eval()


def _invert(clf, target, **kw):
    kw = {"image_shape": SHAPE, "generator": torch.Generator().manual_seed(0), "steps": 5, **kw}
    return invert_classifier(clf, target, **kw)


def test_numpy_numbers_give_the_same_images_as_python_numbers():
    clf = _linear()
    want = _invert(clf, [0, 2], steps=7, lr=0.25, l2=0.1, tv=0.5, jitter=1, until=0.9)
    got = _invert(clf, [np.int64(0), np.int32(2)], steps=np.int64(7), lr=np.float32(0.25),
                  l2=np.float64(0.1), tv=np.float32(0.5), jitter=np.int8(1),
                  until=np.float64(0.9), image_shape=tuple(np.array(SHAPE)))
    assert torch.equal(got, want)
    assert invert_classifier(clf, 1, n=np.int64(3), steps=1, image_shape=SHAPE).shape == (
        3, *SHAPE)


@pytest.mark.parametrize("target", [[], torch.zeros(0, dtype=torch.int64), np.array([], int)])
def test_an_empty_target_is_named(target):
    with pytest.raises(ValueError, match="target is empty"):
        _invert(_linear(), target)


@pytest.mark.parametrize("kwargs, message", [
    ({"steps": np.float64(2.0)}, "steps must be an int >= 0"),
    ({"jitter": np.bool_(True)}, "jitter must be an int >= 0"),
    ({"lr": np.float32("nan")}, "lr must be a finite number > 0"),
    ({"until": np.float64(1.5)}, r"until must be a probability in \(0, 1\]"),
    ({"l2": np.float64(-1)}, "l2 penalty must be a finite number >= 0"),
])
def test_bad_numpy_numbers_are_still_named(kwargs, message):
    with pytest.raises(ValueError, match=message):
        _invert(_linear(), 0, **kwargs)
