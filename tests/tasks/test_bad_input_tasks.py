"""Bad task data: a clear ValueError naming the field, not a torch error later."""

import numpy as np
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


def test_sample_takes_a_generator_not_a_seed():
    """``Episodes.sample(2, 0)`` failed inside torch.rand ("received an invalid combination
    of arguments ... generator=int")."""
    ep = ml.tasks.Episodes(torch.rand(40, 3), torch.arange(4).repeat_interleave(10), ways=2,
                           shots=2, queries=2)
    msg = (r"generator must be a torch.Generator or None, got int 0; for a seeded stream pass "
           r"torch.Generator\(\).manual_seed\(0\)")
    with pytest.raises(TypeError, match=r"Episodes.sample " + msg):
        ep.sample(2, 0)
    with pytest.raises(TypeError, match=r"Episodes.sample_flat " + msg):
        ep.sample_flat(2, 0)
    with pytest.raises(TypeError, match=r"Sinusoid.sample generator .*got str 'a'"):
        ml.tasks.Sinusoid(5, 5).sample(2, "a")
    assert ep.sample(2, None).support_x.shape == (2, 4, 3)
    g = torch.Generator().manual_seed(0)
    assert ep.sample(2, g).support_x.shape == (2, 4, 3)


def test_from_dataset_items_must_be_pairs_with_integer_labels():
    """(x, label, extra) triples were accepted with the extra field dropped; a string label
    gave a bare "invalid literal for int()", and a label 1.5 was read as 1."""
    triples = [(torch.rand(3), i % 4, 99) for i in range(40)]
    with pytest.raises(ValueError, match=r"from_dataset: item 0 must be an \(x, label\) pair, "
                                         r"got a tuple of 3 element\(s\)"):
        ml.tasks.Episodes.from_dataset(triples, ways=2, shots=2, queries=2)
    pairs = [(torch.rand(3), i % 4) for i in range(40)]
    with pytest.raises(ValueError, match=r"item 5 must be an \(x, label\) pair, got a list of "
                                         r"1 element"):
        ml.tasks.Episodes.from_dataset(pairs[:5] + [[torch.rand(3)]] + pairs[6:])
    for label, shown in (("b", r"str 'b'; for named classes .*class_names="),
                         (1.5, "float 1.5"), (True, "bool True"),
                         (torch.tensor([1, 2]), r"Tensor tensor\(\[1, 2\]\)")):
        bad = pairs[:3] + [(torch.rand(3), label)] + pairs[4:]
        with pytest.raises(ValueError, match=rf"from_dataset: item 3's label must be an "
                                             rf"integer class index, got {shown}"):
            ml.tasks.Episodes.from_dataset(bad, ways=2, shots=2, queries=2)
    ok = [(x, [np.int64(k), torch.tensor(k), float(k), np.array([k])][i % 4])
          for i, (x, k) in enumerate(pairs)]
    fam = ml.tasks.Episodes.from_dataset(ok, ways=2, shots=2, queries=2)
    assert fam.num_classes == 4 and fam.num_examples == 40


def test_taskbatch_classes_must_be_a_tensor():
    """A list of class ids failed with AttributeError: 'list' object has no attribute
    'device'."""
    x, y = torch.zeros(2, 3, 4), torch.arange(3).repeat(2, 1)
    with pytest.raises(ValueError, match=r"TaskBatch.classes must be a torch.Tensor "
                                         r"\(int64 \[B, ways\]\) or None, got list"):
        ml.TaskBatch(x, y, x, y, [[0, 1, 2], [3, 4, 5]])
    assert ml.TaskBatch(x, y, x, y, torch.tensor([[0, 1, 2], [3, 4, 5]])).ways == 3
