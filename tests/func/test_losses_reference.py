"""The losses against hand-computed values: means over the examples, an odd count included."""

import math

import torch

from metaloop.func.losses import accuracy, cross_entropy, mse


def test_cross_entropy_is_the_mean_negative_log_softmax_of_three_examples():
    logits = torch.tensor([[2.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 0.0]])   # [3, 3]
    labels = torch.tensor([0, 2, 1])
    nll = [math.log(math.exp(2) + 2) - 2,                           # 2 - logsumexp
           math.log(math.e + 2),
           math.log(3)]
    got = cross_entropy(logits, labels)
    assert got.shape == ()
    assert math.isclose(float(got), sum(nll) / 3, rel_tol=1e-6)


def test_mse_is_the_mean_square_over_every_element():
    pred = torch.tensor([[1.0, 2.0], [3.0, 4.0], [0.0, 0.0]])          # [3, 2]
    target = torch.tensor([[0.0, 2.0], [1.0, 4.0], [0.0, 3.0]])
    assert math.isclose(float(mse(pred, target)), (1 + 0 + 4 + 0 + 0 + 9) / 6, rel_tol=1e-6)


def test_accuracy_is_the_fraction_of_argmax_hits():
    logits = torch.tensor([[0.1, 0.9], [0.8, 0.2], [0.3, 0.7]])        # [3, 2]
    labels = torch.tensor([1, 1, 1])
    assert math.isclose(float(accuracy(logits, labels)), 2 / 3, rel_tol=1e-6)
