import pytest
import torch

from metaloop import TaskBatch


def _cls(B=2, S=4, Q=6, ways=2):
    return (torch.randn(B, S, 3), torch.arange(ways).repeat(B, S // ways),
            torch.randn(B, Q, 3), torch.arange(ways).repeat(B, Q // ways))


def test_valid_classification_and_regression():
    b = TaskBatch(*_cls())
    assert b.num_tasks == 2 and b.ways == 2 and b.is_classification
    r = TaskBatch(torch.randn(3, 5, 1), torch.randn(3, 5, 1), torch.randn(3, 7, 1),
                  torch.randn(3, 7, 1))
    assert not r.is_classification and len(r) == 3
    sx, sy, qx, qy = r.task(1)
    assert sx.shape == (5, 1) and qy.shape == (7, 1)
    assert r.slice(1, 3).num_tasks == 2


@pytest.mark.parametrize("field,value,match", [
    ("support_x", torch.randn(3, 4, 3), "number of tasks B"),
    ("query_x", torch.randn(2, 6, 5), "different feature shapes"),
    ("support_y", torch.zeros(2, 4, dtype=torch.int32), "int64"),
    ("support_y", torch.zeros(2, 3, dtype=torch.int64), "examples per task"),
    ("query_y", torch.full((2, 6), 5, dtype=torch.int64), "no support example"),
    ("support_y", torch.full((2, 4), -1, dtype=torch.int64), ">= 0"),
    ("support_x", torch.zeros(2, 4, 3, dtype=torch.int64), "floating point"),
    ("query_y", torch.randn(2, 6, 1), "both be int64 labels or both float"),
])
def test_bad_batches_name_the_field(field, value, match):
    args = dict(zip(("support_x", "support_y", "query_x", "query_y"), _cls()))
    args[field] = value
    with pytest.raises(ValueError, match=match):
        TaskBatch(**args)


def test_bad_regression_shapes_and_classes():
    with pytest.raises(ValueError, match=r"\[B, S, out\]"):
        TaskBatch(torch.randn(2, 5, 1), torch.randn(2, 5), torch.randn(2, 5, 1),
                  torch.randn(2, 5))
    with pytest.raises(ValueError, match="classes"):
        TaskBatch(*_cls(), classes=torch.zeros(2, 1, dtype=torch.int64))
    with pytest.raises(ValueError, match="torch.Tensor"):
        TaskBatch([1.0], *_cls()[1:])


def test_labels_beyond_the_classes_are_named_as_labels():
    # task-local labels 1..2 (not 0..1) with the two global class ids of each task
    sx, sy, qx, qy = _cls()
    with pytest.raises(ValueError, match=r"labels go up to 2 but classes \[2, 2\] names 2 "
                                         r"classes per task: labels are task-local, in \[0, 2\)"):
        TaskBatch(sx, sy + 1, qx, qy + 1, classes=torch.zeros(2, 2, dtype=torch.int64))


def test_float_class_labels_are_named():
    sx, sy, qx, qy = _cls()
    with pytest.raises(ValueError, match=r"torch.float32 support_y \[2, 4\], query_y \[2, 6\]; "
                                         r"classification labels must be int64"):
        TaskBatch(sx, sy.float(), qx, qy.float())


@pytest.mark.parametrize("i", [1.0, True, False, None, "1", torch.tensor(1.0)])
def test_task_refuses_an_index_that_is_not_an_int(i):
    """``task(1.0)`` gave torch's IndexError, and ``task(True)`` or ``task(None)`` a task
    with an extra leading dim of 1 (torch's indexing by a bool or None)."""
    b = TaskBatch(*_cls(B=3))
    with pytest.raises(ValueError, match=r"task\(i\): i must be an int task index in "
                                         r"\[-3, 3\) \(the batch has 3 tasks\), got "):
        b.task(i)


@pytest.mark.parametrize("i", [3, 4, -4])
def test_task_out_of_range_names_the_range(i):
    b = TaskBatch(*_cls(B=3))
    with pytest.raises(ValueError, match=rf"i={i} is out of range: the batch has 3 tasks, "
                                         rf"indices in \[-3, 3\)"):
        b.task(i)


def test_task_takes_ints_and_negative_indices_as_a_sequence_does():
    b = TaskBatch(*_cls(B=3))
    for i, j in ((-1, 2), (-3, 0), (torch.tensor(1), 1), (2, 2)):
        got = b.task(i)
        assert got[0].shape == (4, 3) and got[1].shape == (4,)
        assert all(torch.equal(g, w) for g, w in zip(got, (b.support_x[j], b.support_y[j],
                                                           b.query_x[j], b.query_y[j])))
