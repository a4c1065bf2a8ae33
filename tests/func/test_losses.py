"""accuracy: shape, dtype and emptiness checks (ValueErrors), values unchanged; the losses'
checks of a model's output."""

from __future__ import annotations

import pytest
import torch

from metaloop.func import accuracy
from metaloop.func.losses import cross_entropy, mse


def test_accuracy_values():
    logits = torch.tensor([[2.0, 0.0], [0.0, 1.0], [3.0, 1.0], [0.0, 5.0]])
    assert float(accuracy(logits, torch.tensor([0, 1, 1, 1]))) == 0.75
    batched = torch.stack([logits, -logits])                       # [B, N, C]
    assert float(accuracy(batched, torch.tensor([[0, 1, 0, 1], [1, 0, 1, 0]]))) == 1.0
    vm = torch.func.vmap(accuracy)(batched, torch.tensor([[0, 1, 0, 1], [0, 0, 0, 0]]))
    assert vm.tolist() == [1.0, 0.5]


@pytest.mark.parametrize("logits,labels,message", [
    (torch.zeros(2, 3), torch.zeros(3, dtype=torch.long),
     r"labels \[3\] must be logits \[2, 3\] without its last \(class\) dimension"),
    (torch.zeros(2, 3), torch.zeros(2, 1, dtype=torch.long), r"labels \[2, 1\] must be"),
    (torch.zeros(0, 3), torch.zeros(0, dtype=torch.long),
     r"no examples \(logits \[0, 3\], labels \[0\]\)"),
    (torch.zeros(3), torch.zeros((), dtype=torch.long), r"logits must be float \[N, C\]"),
    (torch.zeros(2, 0), torch.zeros(2, dtype=torch.long), r"with C >= 1"),
    (torch.zeros(2, 3, dtype=torch.long), torch.zeros(2, dtype=torch.long),
     r"logits must be float"),
    (torch.zeros(2, 3), torch.zeros(2), r"labels must be integer class indices \[N\], got "
                                        r"torch.float32"),
    ([[0.0, 1.0]], torch.zeros(1, dtype=torch.long), "must be tensors, got list"),
])
def test_accuracy_bad_inputs_are_value_errors(logits, labels, message):
    """QA repro: a shape mismatch raised torch's RuntimeError; empty input returned NaN."""
    with pytest.raises(ValueError, match=message):
        accuracy(logits, labels)


def test_accuracy_of_low_precision_logits_is_an_exact_float32_fraction():
    """bf16 logits (under --precision bf16) gave 0.259765625 for 13 of 50: the fraction was
    rounded to bf16."""
    logits = torch.randn(50, 5).bfloat16()
    labels = logits.float().argmax(-1)
    labels[:37] = (labels[:37] + 1) % 5                          # 13 of 50 right
    acc = accuracy(logits, labels)
    assert acc.dtype == torch.float32 and float(acc) == pytest.approx(13 / 50, abs=1e-7)
    assert accuracy(logits.double(), labels).dtype == torch.float64


def test_a_model_output_that_is_not_a_tensor_is_named():
    """QA repro: a model returning (logits, features) failed with "AttributeError: 'tuple'
    object has no attribute 'shape'" inside the loss."""
    out = (torch.zeros(4, 3), torch.zeros(4, 8))
    with pytest.raises(ValueError, match="cross_entropy: the model's output must be one "
                                         "tensor of predictions .*got tuple"):
        cross_entropy(out, torch.zeros(4, dtype=torch.int64))
    with pytest.raises(ValueError, match="mse: the model's output must be one tensor .*got "
                                         "dict"):
        mse({"logits": torch.zeros(4, 1)}, torch.zeros(4, 1))


def test_losses_of_no_examples_are_named_not_nan():
    with pytest.raises(ValueError, match=r"cross_entropy: no examples \(logits \[0, 5\]\)"):
        cross_entropy(torch.zeros(0, 5), torch.zeros(0, dtype=torch.int64))
    with pytest.raises(ValueError, match=r"mse: no examples \(predictions \[0, 1\]\)"):
        mse(torch.zeros(0, 1), torch.zeros(0, 1))


def test_cross_entropy_names_integer_logits():
    with pytest.raises(ValueError, match="cross_entropy: logits must be float .* torch.int64"):
        cross_entropy(torch.zeros(4, 5, dtype=torch.int64), torch.zeros(4, dtype=torch.int64))


def test_accuracy_of_nan_logits_is_nan_and_masked_classes_still_count():
    """QA repro: all-NaN logits (one NaN support feature makes every prototype NaN) scored the
    fraction of class-0 labels, 0.4 here, since argmax takes NaN for the largest."""
    labels = torch.tensor([0, 0, 1, 2, 3])
    assert torch.isnan(accuracy(torch.full((5, 4), float("nan")), labels))
    one = torch.eye(4)[labels.clamp(max=3)] * 3.0
    one[4, 1] = float("nan")                                       # one query's row
    assert torch.isnan(accuracy(one, labels))
    per_task = torch.func.vmap(accuracy)(torch.stack([one, torch.eye(4)[labels] * 3.0]),
                                         torch.stack([labels, labels]))
    assert torch.isnan(per_task[0]) and float(per_task[1]) == 1.0
    masked = torch.eye(4)[labels] * 3.0
    masked[:, 3] = float("-inf")                                   # a class masked out
    assert float(accuracy(masked, labels)) == pytest.approx(0.8)   # query 4 (class 3) wrong
