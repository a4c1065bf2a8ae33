"""``invert_classifier`` takes NumPy integers and floats where it takes Python ones, and names
an empty target instead of misreading it."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from metaloop.generative.invert import (
    class_probabilities,
    confidence_report,
    invert_classifier,
)

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


class _FrozenBackbone(nn.Module):
    """A user's classifier whose BatchNorm backbone is kept in eval mode (frozen statistics)
    while the rest trains: a mixed mode that must survive inversion."""

    def __init__(self):
        super().__init__()
        self.backbone = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4),
                                      nn.ReLU(), nn.Flatten())
        self.drop = nn.Dropout(0.3)
        self.fc = nn.Linear(4 * 36, 3)

    def forward(self, x):
        return self.fc(self.drop(self.backbone(x)))


def test_each_module_of_a_user_classifier_gets_its_own_mode_back():
    torch.manual_seed(0)
    clf = _FrozenBackbone().double()
    clf.backbone.eval()
    modes = {n: m.training for n, m in clf.named_modules()}
    stats = {k: v.clone() for k, v in clf.state_dict().items()}
    _invert(clf, [0, 2], steps=3, jitter=1, until=0.99)
    class_probabilities(clf, torch.rand(2, *SHAPE, dtype=torch.float64))
    assert {n: m.training for n, m in clf.named_modules()} == modes
    assert not clf.backbone[1].training and clf.fc.training
    # and the frozen statistics were not updated by the inversion
    assert all(torch.equal(v, stats[k]) for k, v in clf.state_dict().items())


def test_images_made_against_a_float64_classifier_score_on_a_float32_one():
    inverted = _linear()                                           # float64
    independent = nn.Sequential(nn.Flatten(), nn.Linear(36, 3)).eval()   # float32
    images = _invert(inverted, [0, 2], steps=5)
    assert images.dtype == torch.float64
    report = confidence_report(images, [0, 2], inverted, independent)
    want = torch.softmax(independent(images.float()), -1)[[0, 1], [0, 2]]
    torch.testing.assert_close(report["confidence_independent"], want.detach())


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_class_probabilities_refuses_logits_that_make_nan_probabilities(bad):
    """A NaN logit (or +inf, whose softmax is inf/inf) would give NaN probabilities, which
    every confidence count then reads as "not confident" without a word."""
    def classifier(x):
        logits = x.flatten(1)[:, :3].clone()
        logits[x.flatten(1)[:, 3] == 1, 0] = bad             # the marked image
        return logits
    images = torch.rand(3, *SHAPE, dtype=torch.float64) / 2
    images[1, 0, 0, 3] = 1.0
    with pytest.raises(ValueError, match=r"NaN or infinite logits for 1 of 3 images \(the "
                                         r"first is image 1\)"):
        class_probabilities(classifier, images, batch_size=2)
    minus_inf = torch.tensor([0.0, -float("inf"), 0.0], dtype=torch.float64)
    finite = class_probabilities(lambda x: x.flatten(1)[:, :3] + minus_inf, images)
    # a logit of -inf is a probability of 0, not an error
    assert torch.isfinite(finite).all()
    assert torch.equal(finite[:, 1], torch.zeros(3, dtype=torch.float64))
