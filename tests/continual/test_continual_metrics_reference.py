"""The forgetting metrics against the papers' definitions written out as plain loops, on
accuracy matrices whose every window matters: an experience scored before it was learned, a
final accuracy above the best earlier one (negative forgetting), and rows that differ from
columns."""

from __future__ import annotations

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

# R[i][j]: accuracy on experience j after training on experience i.
# - column 0 ends above its best earlier value (0.80 > 0.70): f_0 = 0.70 - 0.80 < 0, which a
#   max over the final row as well would clip to 0;
# - experience 1 scores 0.90 in row 0, before it was learned: the max for f_1 starts at
#   row 1 (0.50), so f_1 = 0.50 - 0.30 = 0.20, not 0.90 - 0.30;
# - experience 2's column differs from row 2, so a transposed matrix changes every number.
R = [[0.60, 0.90, 0.10, 0.40],
     [0.70, 0.50, 0.20, 0.30],
     [0.65, 0.45, 0.85, 0.05],
     [0.80, 0.30, 0.55, 0.95]]


def _reference(rows):
    """Chaudhry et al.'s forgetting and Lopez-Paz & Ranzato's BWT and ACC, loop by loop."""
    t = len(rows)
    f = [max(rows[l][j] for l in range(j, t - 1)) - rows[t - 1][j] for j in range(t - 1)]
    bwt = sum(rows[t - 1][j] - rows[j][j] for j in range(t - 1)) / (t - 1)
    acc = sum(rows[t - 1][j] for j in range(t)) / t
    old = sum(rows[t - 1][j] for j in range(t - 1)) / (t - 1)
    retained = sum(rows[t - 1][j] for j in range(t - 1)) / sum(rows[j][j] for j in range(t - 1))
    return f, bwt, acc, old, retained


def test_the_matrix_keeps_rows_as_training_time_and_columns_as_experiences():
    r = accuracy_matrix(R)
    assert r.tolist() == R
    by_name = accuracy_matrix([dict(zip("abcd", row)) for row in R], names=list("abcd"))
    assert by_name.tolist() == R


def test_every_metric_matches_the_definitions():
    f, bwt, acc, old, retained = _reference(R)
    assert f == pytest.approx([-0.10, 0.20, 0.30])     # the window checks written out
    r = accuracy_matrix(R)
    assert experience_forgetting(r).tolist() == pytest.approx(f, abs=1e-12)
    assert stream_forgetting(r) == pytest.approx(sum(f) / len(f), abs=1e-12)
    assert backward_transfer(r) == pytest.approx(bwt, abs=1e-12)
    assert average_accuracy(r) == pytest.approx(acc, abs=1e-12)
    s = summarize(r)
    assert s == pytest.approx({"new_accuracy": 0.95, "old_accuracy": old, "retained": retained,
                               "forgetting": sum(f) / len(f), "bwt": bwt,
                               "average_accuracy": acc}, abs=1e-12)


@pytest.mark.parametrize("seed", range(5))
def test_random_matrices_match_the_definitions(seed):
    g = torch.Generator().manual_seed(seed)
    t = 2 + seed
    rows = torch.rand(t, t, generator=g, dtype=torch.float64).tolist()
    f, bwt, acc, old, retained = _reference(rows)
    r = accuracy_matrix(rows)
    assert experience_forgetting(r).tolist() == pytest.approx(f, abs=1e-12)
    s = summarize(r)
    assert s["forgetting"] == pytest.approx(sum(f) / len(f), abs=1e-12)
    assert s["bwt"] == pytest.approx(bwt, abs=1e-12)
    assert s["average_accuracy"] == pytest.approx(acc, abs=1e-12)
    assert s["old_accuracy"] == pytest.approx(old, abs=1e-12)
    assert s["retained"] == pytest.approx(retained, abs=1e-12)
