"""Classifier inversion (``invert_classifier``): ascent on a fixed classifier, pixel bounds, the
documented effect of each regulariser, the report, and named errors for bad input."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import metaloop as ml
from metaloop.generative.invert import confidence_report, invert_classifier, total_variation

SHAPE = (1, 6, 6)


def _sharpen(clf: nn.Module, seed: int) -> nn.Module:
    """Weights ~ N(0, 1): logits large enough for confident classes (the default init's are
    too small for pixels in [0, 1] to reach them)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in clf.parameters():
            p.copy_(torch.randn(p.shape, generator=g))
    return clf.double().eval()


def _linear(seed: int = 0, k: int = 3) -> nn.Module:
    """A fixed linear classifier on 1x6x6 images."""
    return _sharpen(nn.Sequential(nn.Flatten(), nn.Linear(36, k)), seed)


def _mlp(seed: int = 0, k: int = 4) -> nn.Module:
    """A fixed, nonlinear one: conv, tanh, linear."""
    return _sharpen(nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.Tanh(), nn.Flatten(),
                                  nn.Linear(4 * 36, k)), seed)


def _target_prob(clf, x, target):
    with torch.no_grad():
        return torch.softmax(clf(x), -1)[torch.arange(len(x)), target]


def _invert(clf, target, **kw):
    kw = {"image_shape": SHAPE, "generator": torch.Generator().manual_seed(0), **kw}
    return invert_classifier(clf, target, **kw)


@pytest.mark.parametrize("make, target", [(_linear, [0, 2, 2]), (_mlp, [1, 2, 3, 3])])
def test_target_probability_rises_monotonically(make, target):
    # Adam is deterministic, so the run with k steps is the first k steps of a longer run
    clf, target = make(), torch.tensor(target)
    probs = torch.stack([_target_prob(clf, _invert(clf, target, steps=k, lr=0.1), target)
                         for k in range(41)])                           # [41, n]
    assert (probs[1:] > probs[:-1]).all(), probs
    assert (probs[0] < 0.01).all() and (probs[-1] > 0.97).all()


def test_pixels_stay_in_unit_interval_and_shapes_hold():
    clf = _mlp()
    x = _invert(clf, 3, n=5, steps=60, lr=5.0)                         # a huge step size
    assert x.shape == (5, *SHAPE) and x.dtype == torch.float64
    assert not x.requires_grad
    assert x.min() >= 0 and x.max() <= 1
    assert ((x < 1e-3) | (x > 1 - 1e-3)).float().mean() > 0.5         # saturated, still bounded
    init = torch.rand(2, *SHAPE, dtype=torch.float64)
    y = _invert(clf, [0, 1], init=init, steps=30, lr=1.0, l2=0.1, tv=0.1, jitter=1)
    assert y.shape == init.shape and 0 <= y.min() and y.max() <= 1


def test_init_image_and_zero_steps():
    clf = _linear()
    img = torch.rand(*SHAPE, dtype=torch.float64)
    x0 = _invert(clf, [1, 2, 0], init=img, steps=0)
    assert torch.allclose(x0, img.clamp(0.01, 0.99).expand(3, *SHAPE))
    x = _invert(clf, 2, init=img[None], steps=20)
    assert x.shape == (1, *SHAPE)
    assert _target_prob(clf, x, 2) > _target_prob(clf, img[None], 2)
    # the default shape is the generative models' 28x28 and the default n is len(target)
    big = nn.Sequential(nn.Flatten(), nn.Linear(784, 3))
    assert invert_classifier(big, [0, 1], steps=1).shape == (2, 1, 28, 28)


def test_same_seed_same_images_and_classifier_left_alone():
    clf = nn.Sequential(nn.Flatten(), nn.Dropout(0.5), nn.Linear(36, 3)).double()
    clf.train()
    a = _invert(clf, 1, n=3, steps=10, jitter=2)
    b = _invert(clf, 1, n=3, steps=10, jitter=2)
    assert torch.equal(a, b)                                           # eval mode: no dropout
    assert clf.training                                                # mode restored
    assert all(p.grad is None for p in clf.parameters())
    assert not torch.equal(a, _invert(clf, 1, n=3, steps=10, jitter=2,
                                      generator=torch.Generator().manual_seed(1)))


TARGET = [1, 2, 3, 1]


def test_tv_gives_smoother_images_than_no_penalty():
    clf, t = _mlp(), torch.tensor(TARGET)
    plain = _invert(clf, t, steps=100)
    smooth = _invert(clf, t, steps=100, tv=3.0)
    assert (total_variation(smooth) < 0.7 * total_variation(plain)).all()
    assert (_target_prob(clf, smooth, t) > 0.9).all()                  # still the target


def test_l2_gives_darker_images_than_no_penalty():
    clf, t = _mlp(), torch.tensor(TARGET)
    plain = _invert(clf, t, steps=100)
    sparse = _invert(clf, t, steps=100, l2=3.0)
    assert (sparse.square().mean((1, 2, 3)) < 0.75 * plain.square().mean((1, 2, 3))).all()
    assert (_target_prob(clf, sparse, t) > 0.9).all()


def test_jitter_makes_images_that_work_when_shifted():
    clf, t = _mlp(), torch.tensor(TARGET)

    def shifted(x):                          # mean p(target) over the 9 shifts by <= 1 pixel
        return torch.stack([_target_prob(clf, torch.roll(x, (dy, dx), (2, 3)), t)
                            for dy in (-1, 0, 1) for dx in (-1, 0, 1)]).mean()

    plain = _invert(clf, t, steps=300)
    jittered = _invert(clf, t, steps=300, jitter=1)
    assert (plain - jittered).abs().max() > 0.1
    assert shifted(jittered) > 2 * shifted(plain)


def test_until_stops_each_image_at_the_probability():
    clf, target = _mlp(), torch.tensor(TARGET)
    short = _invert(clf, target, steps=200, until=0.8)
    longer = _invert(clf, target, steps=400, until=0.8)
    p = _target_prob(clf, short, target)
    assert (p >= 0.8).all() and (p < 0.95).all()
    assert torch.equal(short, longer)                                  # frozen once there
    full = _invert(clf, target, steps=200)
    assert (_target_prob(clf, full, target) > p).all()


def test_confidence_report():
    a, b = _mlp(0), _mlp(1)
    target = torch.tensor([0, 1, 2, 3, 0])
    x = _invert(a, target, steps=80)
    r = confidence_report(x, target, a, b, confident=0.9)
    assert r["confidence_inverted"].shape == (5,) and r["predicted_independent"].shape == (5,)
    assert torch.allclose(r["confidence_inverted"], _target_prob(a, x, target))
    assert torch.allclose(r["confidence_independent"], _target_prob(b, x, target))
    assert r["accuracy_inverted"] == 1.0
    assert r["fraction_confident_inverted"] == float(
        (r["confidence_inverted"] >= 0.9).float().mean())
    assert r["accuracy_independent"] == float(
        (r["predicted_independent"] == target).float().mean())
    assert 0 <= r["mean_confidence_independent"] <= 1
    assert confidence_report(x, 2, a, b)["accuracy_inverted"] == pytest.approx(0.2)  # int
    with pytest.raises(ValueError, match=r"target class\(es\) \[7\] out of range"):
        confidence_report(x, 7, a, b)
    with pytest.raises(ValueError, match="target has 2 classes for 5 images"):
        confidence_report(x, [0, 1], a, b)
    with pytest.raises(ValueError, match=r"images must be a tensor \[n, C, H, W\]"):
        confidence_report(x[0], 0, a, b)


def test_exported_from_the_package():
    assert ml.generative.invert_classifier is invert_classifier
    assert {"invert_classifier", "confidence_report",
            "total_variation"} <= set(ml.generative.__all__)


def test_total_variation():
    assert torch.equal(total_variation(torch.full((2, 1, 4, 4), 0.3)), torch.zeros(2))
    checks = (torch.arange(16).reshape(1, 1, 4, 4) % 2).double()        # vertical stripes
    assert torch.allclose(total_variation(checks), torch.tensor([1.0], dtype=torch.float64))
    with pytest.raises(ValueError, match=r"\[N, C, H, W\]"):
        total_variation(torch.zeros(4, 4))


@pytest.mark.parametrize("target, message", [
    (3, r"target class\(es\) \[3\] out of range: the classifier has 3 classes, 0..2"),
    (-1, r"target class\(es\) \[-1\] out of range"),
    ([0, 5, 1], r"target class\(es\) \[5\] out of range"),
    (torch.tensor([0, 9]), r"target class\(es\) \[9\] out of range"),
    (1.0, "target must be integer class indices"),
    ([0, 1.5], "target must be integer class indices"),
    (torch.tensor([0.0, 1.0]), "target must be integer class indices, got dtype torch.float32"),
    (True, "target must be integer class indices, got the bool"),
    (torch.tensor([True]), "target must be integer class indices, got dtype torch.bool"),
    (torch.zeros(2, 2, dtype=torch.int64), r"1-D tensor \[n\], got shape \[2, 2\]"),
    ("cat", "target must be"),
])
def test_bad_targets_raise_named_errors(target, message):
    with pytest.raises(ValueError, match=message):
        _invert(_linear(), target, steps=1)


def test_target_length_must_match_n():
    with pytest.raises(ValueError, match="target has 2 classes for n = 3 images"):
        _invert(_linear(), [0, 1], n=3, steps=1)


class _Vector(nn.Module):
    def forward(self, x):
        return x.flatten(1).sum(1)                                     # [n], not [n, K]


@pytest.mark.parametrize("classifier, message", [
    (3, "classifier must be an nn.Module or a callable"),
    ("resnet", "classifier must be an nn.Module or a callable"),
    (_Vector(), r"float logits \[n, n_classes\] with n = 2 and n_classes >= 2, got "
                r"torch.float32 \[2\]"),
    (lambda x: x.flatten(1)[:, :1], r"n_classes >= 2, got torch.float32 \[2, 1\]"),
    (lambda x: torch.zeros(3, 4), r"with n = 2 .* got torch.float32 \[3, 4\]"),
    (lambda x: torch.zeros(2, 4, dtype=torch.int64), r"got torch.int64 \[2, 4\]"),
    (lambda x: [0.1, 0.9], "must return a logits tensor"),
    (nn.Linear(36, 3), r"the classifier failed on images of shape \[2, 1, 6, 6\]"),
    (nn.Sequential(nn.Flatten(), nn.Linear(10, 3)), r"image_shape \(C, H, W\) = \(1, 6, 6\)"),
])
def test_bad_classifiers_raise_named_errors(classifier, message):
    with pytest.raises(ValueError, match=message):
        invert_classifier(classifier, 0, n=2, steps=1, image_shape=SHAPE)


@pytest.mark.parametrize("kwargs, message", [
    ({"image_shape": (6, 6)}, r"image_shape must be \(C, H, W\) with positive ints"),
    ({"image_shape": (1, 0, 6)}, r"image_shape must be \(C, H, W\)"),
    ({"image_shape": 36}, r"image_shape must be \(C, H, W\)"),
    ({"init": torch.rand(6, 6)}, r"init images must be float \[n, C, H, W\] or \[C, H, W\]"),
    ({"init": torch.rand(1, 1, 5, 6)}, r"do not match image_shape \(1, 6, 6\)"),
    ({"init": torch.rand(3, 1, 6, 6), "n": 2}, "init has 3 images but n = 2"),
    ({"init": torch.full((1, 6, 6), 1.5)}, r"finite pixels in \[0, 1\]"),
    ({"init": torch.full((1, 6, 6), float("nan"))}, r"finite pixels in \[0, 1\]"),
    ({"init": torch.zeros(1, 6, 6, dtype=torch.uint8)}, "init images must be float"),
    ({"init": "zeros"}, "init must be 'noise' or an image tensor"),
    ({"init": [0.5]}, "init must be 'noise' or an image tensor, got list"),
])
def test_bad_image_shapes_and_inits_raise_named_errors(kwargs, message):
    kwargs = {"image_shape": SHAPE, **kwargs}
    with pytest.raises(ValueError, match=message):
        invert_classifier(_linear(), 0, steps=1, **kwargs)


@pytest.mark.parametrize("kwargs, message", [
    ({"l2": -0.1}, "l2 penalty must be a finite number >= 0, got -0.1"),
    ({"tv": -1}, "tv penalty must be a finite number >= 0, got -1"),
    ({"tv": float("inf")}, "tv penalty must be a finite number >= 0"),
    ({"jitter": -1}, "jitter must be an int >= 0, got -1"),
    ({"jitter": 6}, r"jitter must be smaller than the image's height and width \(6, 6\)"),
    ({"steps": -1}, "steps must be an int >= 0, got -1"),
    ({"steps": 2.5}, "steps must be an int >= 0, got 2.5"),
    ({"lr": 0}, "lr must be a finite number > 0, got 0"),
    ({"n": 0}, "n must be an int >= 1, got 0"),
    ({"until": 0}, r"until must be a probability in \(0, 1\], got 0"),
    ({"until": 1.5}, r"until must be a probability in \(0, 1\]"),
])
def test_bad_options_raise_named_errors(kwargs, message):
    with pytest.raises(ValueError, match=message):
        _invert(_linear(), 0, **{"steps": 1, **kwargs})


@pytest.mark.parametrize("confident", [2.0, 0.0, -0.5, float("nan"), "0.9", True])
def test_confidence_report_needs_a_probability_for_confident(confident):
    a, b = _mlp(0), _mlp(1)
    like = _invert(a, 0, steps=1)                                  # the classifier's dtype
    x = torch.rand(3, *like.shape[1:], dtype=like.dtype)
    with pytest.raises(ValueError, match=r"confident must be a probability in \(0, 1\]"):
        confidence_report(x, 0, a, b, confident=confident)


def test_confidence_report_checks_images_and_classifiers_as_invert_does():
    a, b = _mlp(0), _mlp(1)
    like = _invert(a, 0, steps=1)                                  # the classifier's dtype
    x = torch.rand(3, *like.shape[1:], dtype=like.dtype)
    with pytest.raises(ValueError, match="finite pixels in"):
        confidence_report(torch.full_like(x, float("nan")), 0, a, b)
    with pytest.raises(ValueError, match="finite pixels in"):
        confidence_report(x + 1, 0, a, b)
    with pytest.raises(ValueError, match=r"float pixels .*uint8 \(divide uint8 images by 255\)"):
        confidence_report((x * 255).to(torch.uint8), 0, a, b)
    with pytest.raises(ValueError, match="must return a logits tensor .* got list"):
        confidence_report(x, 0, lambda z: [0.0], b)
    with pytest.raises(ValueError, match="n_classes >= 2"):
        confidence_report(x, 0, a, lambda z: torch.zeros(len(z), 1))
