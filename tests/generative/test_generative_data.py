"""Data sets and binarisation for the generative models."""

from __future__ import annotations

import pytest
import torch

from metaloop.generative import data as gdata


def test_binarisation():
    images = torch.tensor([[0, 255, 128, 64]], dtype=torch.uint8).repeat(2000, 1)
    a = gdata.binarize_static(images)
    assert torch.equal(a, gdata.binarize_static(images))            # static: fixed
    assert not torch.equal(gdata.binarize_dynamic(images), gdata.binarize_dynamic(images))
    assert set(a.unique().tolist()) <= {0.0, 1.0}
    assert a[:, 0].sum() == 0 and a[:, 1].sum() == 2000
    assert abs(float(a[:, 2].mean()) - 128 / 255) < 0.05
    assert torch.equal(gdata.eval_pixels(images, "none"), gdata.to_unit(images))
    with pytest.raises(ValueError, match="unknown binarisation 'sometimes'"):
        gdata.eval_pixels(images, "sometimes")


def test_unknown_data_set_or_split():
    with pytest.raises(ValueError, match="unknown data set 'mnist'"):
        gdata.load("mnist", "train")
    with pytest.raises(ValueError, match="unknown split 'valid'"):
        gdata.load("fashion-mnist", "valid")


def test_omniglot_lake_split(omniglot_root):
    tr = gdata.load("omniglot", "train", omniglot_root)
    assert tr.images.shape == (19280, 1, 28, 28) and tr.images.dtype == torch.uint8
    assert tr.n_classes == 30 and len(tr.class_names) == 30
    assert tr.labels.min() == 0 and tr.labels.max() == 29
    assert tr.images.float().mean() < 128                            # ink = 255 on black


def test_fashion_mnist(fashion_mnist_root):
    te = gdata.load("fashion-mnist", "test", fashion_mnist_root)
    assert te.images.shape == (10000, 1, 28, 28) and te.n_classes == 10
    assert te.class_names[9] == "Ankle boot"


def test_omniglot_mixed_split_has_the_iwae_sizes(omniglot_root):
    tr = gdata.load("omniglot-mixed", "train", omniglot_root)
    te = gdata.load("omniglot-mixed", "test", omniglot_root)
    assert len(tr.images) == 24345 and len(te.images) == 8070 and tr.n_classes == 50
    assert set(te.labels.unique().tolist()) <= set(tr.labels.unique().tolist())


def test_binarisation_entropy_is_the_entropy_of_the_enumerated_binarisations():
    import itertools
    import math

    images = torch.tensor([[[0, 255], [128, 64]], [[200, 30], [255, 7]]], dtype=torch.uint8)
    got = gdata.binarization_entropy(images)
    assert got.shape == (2,) and got.dtype == torch.float64
    for img, h in zip(images, got):
        p = [v / 255 for v in img.flatten().tolist()]
        total = 0.0                      # -sum over all 16 binary images of P log P
        for bits in itertools.product((0, 1), repeat=4):
            prob = math.prod(pi if b else 1 - pi for pi, b in zip(p, bits))
            total -= prob * math.log(prob) if prob > 0 else 0.0
        assert float(h) == pytest.approx(total, rel=1e-12)
    assert float(gdata.binarization_entropy(images[:1, :1, :1])) == 0.0   # pure black
    with pytest.raises(ValueError, match="expected uint8 images"):
        gdata.binarization_entropy(images.float())


@pytest.mark.parametrize("labels, n_classes, fraction, match", [
    (torch.tensor([0, 0, 1, 1, 2, 2]), 2, 0.5, r"labels must be in \[0, 2\).*got \[2\]"),
    (torch.tensor([0, 0, -1, 1]), 2, 0.5, r"got \[-1\]"),
    (torch.tensor([0, 0, 1, 1]), 0, 0.5, "n_classes must be an int >= 1, got 0"),
    (torch.tensor([0, 0, 1, 1]), 2, 1.5, "test_fraction must be a number strictly between"),
    (torch.tensor([0, 0, 1, 1]), 2, -1.0, "test_fraction must be a number strictly between"),
    (torch.tensor([0, 0, 1, 1]), 2, 0.0, "test_fraction must be a number strictly between"),
    (torch.tensor([0.0, 1.0]), 2, 0.5, "labels must be an integer tensor"),
])
def test_split_indices_refuses_what_would_break_its_cover(labels, n_classes, fraction, match):
    with pytest.raises(ValueError, match=match):
        gdata.split_indices(labels, n_classes, fraction)


def test_split_indices_parts_cover_every_example():
    lab = torch.tensor([0, 0, 1, 1, 2, 2])
    tr, te = gdata.split_indices(lab, 3, 0.5)
    assert sorted(tr.tolist() + te.tolist()) == list(range(6))
