"""Bad task data: a clear ValueError naming the field, not a torch error later."""

import pytest
import torch

import metaloop as ml


def test_taskbatch_refuses_support_and_query_of_different_dtypes():
    y = torch.arange(3).repeat(2, 1)
    with pytest.raises(ValueError, match=r"support_x \(torch.float32\) and query_x "
                                         r"\(torch.float64\) must have the same dtype"):
        ml.TaskBatch(torch.zeros(2, 3, 4), y, torch.zeros(2, 3, 4, dtype=torch.float64), y)
    with pytest.raises(ValueError, match=r"support_y \(torch.float32\) and query_y "
                                         r"\(torch.float64\)"):
        ml.TaskBatch(torch.zeros(2, 3, 1), torch.zeros(2, 3, 1), torch.zeros(2, 3, 1),
                     torch.zeros(2, 3, 1, dtype=torch.float64))


def test_sinusoid_ranges_must_be_finite_pairs():
    with pytest.raises(ValueError, match=r"amplitude must be a \(low, high\) pair of finite "
                                         r"numbers, got \(0.1, inf\)"):
        ml.tasks.Sinusoid(amplitude=(0.1, float("inf")))
    with pytest.raises(ValueError, match=r"x_range must be a \(low, high\) pair.*got 5"):
        ml.tasks.Sinusoid(x_range=5)
    with pytest.raises(ValueError, match=r"phase must be a \(low, high\) pair"):
        ml.tasks.Sinusoid(phase=(0.0, 1.0, 2.0))


def test_episodes_refuse_non_finite_float_inputs():
    x = torch.rand(12, 4)
    x[7, 1] = float("nan")
    y = torch.arange(3).repeat_interleave(4)                       # row 7 is class 1
    with pytest.raises(ValueError, match=r"non-finite values \(NaN or inf\) in 1 row\(s\) "
                                         r"\[7\] of 1 class\(es\) \['b'\]"):
        ml.tasks.Episodes(x, y, ways=2, shots=1, queries=1, class_names=["a", "b", "c"])


def test_taskbatch_refuses_fields_on_different_devices():
    z = torch.zeros(2, 3, 1)
    with pytest.raises(ValueError, match=r"different devices: support_x cpu, support_y cpu, "
                                         r"query_x meta, query_y meta"):
        ml.TaskBatch(z, z, z.to("meta"), z.to("meta"))
