"""CVAE samples of class c look like class c to a separately trained classifier."""

from __future__ import annotations

import torch

from metaloop.generative import CVAE, fit_generative, sample_classes, train_classifier
from metaloop.generative import data as gdata
from metaloop.generative.nets import logit_of_mean
from metaloop.generative.quality import accuracy, predict


def test_cvae_samples_are_classified_as_their_class(fashion_mnist_root):
    tr = gdata.load("fashion-mnist", "train", fashion_mnist_root)
    te = gdata.load("fashion-mnist", "test", fashion_mnist_root)
    x, y = tr.images[:4000], tr.labels[:4000]
    # the classifier sees other images than the CVAE, with another seed
    clf = train_classifier(tr.images[6000:10000], tr.labels[6000:10000], 10, epochs=2, seed=1,
                           progress=False)
    real_acc = accuracy(clf, gdata.to_unit(te.images[:2000]), te.labels[:2000])
    torch.manual_seed(0)
    model = CVAE(10, 2, hidden=(100, 100), output_bias=logit_of_mean(gdata.to_unit(x)))
    fit_generative(model, x, y, epochs=8, batch_size=100, lr=3e-3, progress=False)
    samples = sample_classes(model, range(10), 50, generator=torch.Generator().manual_seed(0))
    probs, _ = predict(clf, samples.reshape(-1, 1, 28, 28))
    acc = float((probs.argmax(-1) == torch.arange(10).repeat_interleave(50)).float().mean())
    assert real_acc > 0.6
    assert acc > 0.35, f"CVAE samples classified as their class {acc:.2f} (chance 0.10)"
