"""TaskBatch.to's argument forms and the check that every query label has a support example."""

from __future__ import annotations

import pytest
import torch

from metaloop import TaskBatch


def _batch() -> TaskBatch:
    g = torch.Generator().manual_seed(0)
    y = torch.tensor([[0, 1, 2, 0, 1, 2]] * 2)                               # [B=2, 6]
    return TaskBatch(torch.randn(2, 6, 3, generator=g), y, torch.randn(2, 6, 3, generator=g),
                     y, torch.tensor([[4, 0, 7], [1, 2, 3]]))


@pytest.mark.parametrize("call", [
    lambda b: b.to(torch.float64),                      # Tensor.to(dtype) form
    lambda b: b.to("cpu", torch.float64),
    lambda b: b.to(dtype=torch.float64),
    lambda b: b.to(device="cpu", dtype=torch.float64),
])
def test_to_casts_the_inputs_in_every_form_tensor_to_takes(call):
    """``batch.to(torch.float64)`` raised torch's "invalid combination of arguments"
    TypeError: the dtype went to ``Tensor.to`` as the device."""
    b = _batch()
    moved = call(b)
    assert moved.support_x.dtype == moved.query_x.dtype == torch.float64
    assert moved.support_y.dtype == moved.query_y.dtype == moved.classes.dtype == torch.int64
    assert torch.equal(moved.support_x, b.support_x.double())
    assert torch.equal(moved.query_x, b.query_x.double())
    assert torch.equal(moved.query_y, b.query_y) and torch.equal(moved.classes, b.classes)


def test_to_casts_regression_targets_and_moves_without_a_dtype():
    g = torch.Generator().manual_seed(1)
    r = TaskBatch(*(torch.randn(2, n, 1, generator=g) for n in (3, 3, 4, 4)))
    half = r.to(torch.float16)
    assert all(t.dtype == torch.float16 for t in (half.support_x, half.support_y,
                                                  half.query_x, half.query_y))
    same = r.to("cpu")
    assert same.support_x.dtype == torch.float32 and torch.equal(same.query_y, r.query_y)


def test_to_refuses_two_dtypes_and_a_dtype_that_is_not_one():
    b = _batch()
    forms = r"to\(device\), to\(dtype\), to\(device, dtype\)"
    with pytest.raises(TypeError, match=rf"two dtypes, torch.float64 and torch.float32; "
                                        rf"it takes {forms}"):
        b.to(torch.float64, torch.float32)
    with pytest.raises(TypeError, match=rf"dtype must be a torch.dtype, got str 'float64'; "
                                        rf"it takes {forms}"):
        b.to("cpu", "float64")


def test_to_refuses_an_integer_dtype_by_name():
    with pytest.raises(ValueError, match=r"TaskBatch.to dtype casts the floating-point fields "
                                         r"and must be floating point, got torch.int64"):
        _batch().to(torch.int64)


@pytest.mark.parametrize("sy, qy, task, label, support", [
    ([[0, 2]], [[1]], 0, 1, "{0, 2}"),                       # below the support's largest
    ([[0, 1], [0, 2]], [[1, 0], [0, 1]], 1, 1, "{0, 2}"),    # only the second task
    ([[3, 3, 1]], [[1, 2, 3]], 0, 2, "{1, 3}"),
])
def test_a_query_label_no_support_example_has_is_named(sy, qy, task, label, support):
    """Only the largest labels were compared: support {0, 2} with query {1} passed."""
    sy, qy = torch.tensor(sy), torch.tensor(qy)
    b, s, q = sy.shape[0], sy.shape[1], qy.shape[1]
    with pytest.raises(ValueError, match=rf"TaskBatch.query_y of task {task} has label "
                                         rf"{label} that no support example has \(its "
                                         rf"support labels are {support}\)$"):
        TaskBatch(torch.zeros(b, s, 2), sy, torch.zeros(b, q, 2), qy)


def test_query_labels_the_support_has_pass_in_any_order_and_layout():
    # unsorted support with a gap in its labels, queries of a subset, an expanded (strided)
    # query_y: all accepted, without a warning
    sy = torch.tensor([[2, 0, 2, 5], [1, 1, 0, 3]])
    qy = torch.tensor([5, 0, 2]).expand(2, 3).clone()
    qy[1] = torch.tensor([3, 1, 0])
    b = TaskBatch(torch.zeros(2, 4, 2), sy, torch.zeros(2, 3, 2), qy)
    assert b.num_tasks == 2
    strided = torch.arange(3).expand(4, 3)                                     # not contiguous
    assert not strided.is_contiguous()
    assert TaskBatch(torch.zeros(4, 3, 1), strided, torch.zeros(4, 3, 1), strided).ways == 3
