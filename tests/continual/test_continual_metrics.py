"""Forgetting metrics against a hand-computed accuracy matrix."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from metaloop.continual.metrics import (
    accuracy_matrix,
    average_accuracy,
    backward_transfer,
    experience_forgetting,
    stream_forgetting,
    summarize,
)

# R[i][j]: accuracy on experience j after training on experience i. Experience 0 peaks after
# experience 1 (0.95 > 0.90), so forgetting (best minus final) differs from -BWT (diagonal
# minus final).
R = [[0.90, 0.10, 0.20],
     [0.95, 0.80, 0.30],
     [0.50, 0.70, 0.95]]


def test_metrics_match_the_hand_computed_values():
    r = accuracy_matrix(R)
    assert r.dtype == torch.float64 and r.shape == (3, 3)
    # f_0 = max(0.90, 0.95) - 0.50 = 0.45; f_1 = 0.80 - 0.70 = 0.10
    assert torch.allclose(experience_forgetting(r), torch.tensor([0.45, 0.10], dtype=r.dtype))
    assert stream_forgetting(r) == pytest.approx(0.275)
    # BWT = ((0.50 - 0.90) + (0.70 - 0.80)) / 2
    assert backward_transfer(r) == pytest.approx(-0.25)
    assert average_accuracy(r) == pytest.approx((0.50 + 0.70 + 0.95) / 3)
    s = summarize(r)
    assert s["new_accuracy"] == pytest.approx(0.95)
    assert s["old_accuracy"] == pytest.approx(0.60)
    assert s["retained"] == pytest.approx((0.50 + 0.70) / (0.90 + 0.80))
    assert s["forgetting"] == pytest.approx(0.275) and s["bwt"] == pytest.approx(-0.25)


def test_two_task_matrix():
    r = accuracy_matrix([[0.88, 0.21], [0.53, 0.96]])
    s = summarize(r)
    assert s["forgetting"] == pytest.approx(0.35) and s["bwt"] == pytest.approx(-0.35)
    assert s["retained"] == pytest.approx(0.53 / 0.88)


def test_rows_by_name_and_no_forgetting():
    rows = [{"a": 0.9, "b": 0.5}, {"b": 0.8, "a": 0.9}]
    r = accuracy_matrix(rows, names=["a", "b"])
    assert r.tolist() == [[0.9, 0.5], [0.9, 0.8]]
    assert stream_forgetting(r) == 0.0 and backward_transfer(r) == 0.0


def test_retained_is_nan_when_nothing_was_learned():
    assert math.isnan(summarize(accuracy_matrix([[0.0, 0.0], [0.0, 1.0]]))["retained"])


@pytest.mark.parametrize("rows,match", [
    ([[0.5, 0.5]], "T rows of T values"),
    ([[0.5], [0.5, 0.5]], "T rows of T values"),
    ([], "T rows of T values"),
    ([[50.0, 1.0], [1.0, 1.0]], r"in \[0, 1\]"),
    ([[float("nan"), 1.0], [1.0, 1.0]], r"in \[0, 1\]"),
])
def test_bad_matrices(rows, match):
    with pytest.raises(ValueError, match=match):
        accuracy_matrix(rows)


def test_bad_inputs_to_the_metrics():
    with pytest.raises(ValueError, match="names="):
        accuracy_matrix([{"a": 1.0}])
    with pytest.raises(ValueError, match=r"lack \(row, experience\)"):
        accuracy_matrix([{"a": 1.0}], names=["b"])
    with pytest.raises(ValueError, match="at least two experiences"):
        stream_forgetting(torch.ones(1, 1, dtype=torch.float64))
    with pytest.raises(ValueError, match="square"):
        backward_transfer(torch.ones(2, 3))


@pytest.mark.parametrize("dtype", [torch.int64, torch.int32, torch.uint8])
def test_an_integer_matrix_is_read_as_float(dtype):
    r = torch.tensor([[1, 0], [0, 1]], dtype=dtype)          # 0/1 accuracies, tiny test sets
    assert average_accuracy(r) == 0.5
    assert stream_forgetting(r) == 1.0
    assert backward_transfer(r) == -1.0
    assert summarize(r)["average_accuracy"] == 0.5


def test_a_bool_matrix_is_refused():
    with pytest.raises(ValueError, match="got dtype torch.bool"):
        average_accuracy(torch.eye(2, dtype=torch.bool))


@pytest.mark.parametrize("rows", [torch.eye(2, dtype=torch.float64), torch.eye(2),
                                  np.eye(2)])
def test_accuracy_matrix_takes_a_tensor_or_array_of_rows(rows):
    assert torch.equal(accuracy_matrix(rows), torch.eye(2, dtype=torch.float64))


@pytest.mark.parametrize("rows, match", [(torch.ones(2), "2-d"), ("ab", "list of T rows"),
                                         (3, "list of T rows")])
def test_accuracy_matrix_names_rows_it_cannot_read(rows, match):
    with pytest.raises(ValueError, match=match):
        accuracy_matrix(rows)


def test_accuracy_matrix_refuses_repeated_names():
    rows = [{"a": 1.0, "b": 0.5}, {"a": 0.5, "b": 1.0}]
    with pytest.raises(ValueError, match=r"names must be distinct, got \['a'\]"):
        accuracy_matrix(rows, names=["a", "a"])
