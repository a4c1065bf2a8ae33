import math

import pytest
import torch

from metaloop.tasks import Sinusoid


def test_shapes_ranges_and_true_function():
    fam = Sinusoid(shots=5, queries=7)
    b, a, p = fam.sample_with_params(400, torch.Generator().manual_seed(0))
    assert b.support_x.shape == (400, 5, 1) and b.query_y.shape == (400, 7, 1)
    assert float(a.min()) >= 0.1 and float(a.max()) <= 5.0
    assert float(p.min()) >= 0.0 and float(p.max()) <= math.pi
    x = torch.cat([b.support_x, b.query_x], 1)
    assert float(x.min()) >= -5 and float(x.max()) <= 5
    y = torch.cat([b.support_y, b.query_y], 1)
    expected = a[:, None, None] * torch.sin(x.double() - p[:, None, None])
    assert torch.allclose(y.double(), expected, atol=1e-5)
    assert a.mean().item() == pytest.approx(2.55, abs=0.2)       # U[0.1, 5]


def test_same_seed_same_tasks_other_seed_other_tasks():
    fam = Sinusoid()
    a = fam.sample(4, torch.Generator().manual_seed(3))
    b = fam.sample(4, torch.Generator().manual_seed(3))
    c = fam.sample(4, torch.Generator().manual_seed(4))
    assert torch.equal(a.support_y, b.support_y)
    assert not torch.equal(a.support_y, c.support_y)


@pytest.mark.parametrize("kw", [dict(shots=0), dict(queries=-1), dict(shots=2.5),
                                dict(amplitude=(5, 1))])
def test_bad_arguments(kw):
    with pytest.raises(ValueError):
        Sinusoid(**kw)
    with pytest.raises(ValueError, match="positive int"):
        Sinusoid().sample(0)


@pytest.mark.parametrize("n", [-1, 0, 2.0, True])
def test_sample_params_names_a_bad_task_count(n):
    with pytest.raises(ValueError, match="number of tasks must be a positive int"):
        Sinusoid().sample_params(n)


def test_sample_params_takes_a_generator_not_a_seed():
    with pytest.raises(TypeError, match="Sinusoid.sample_params"):
        Sinusoid().sample_params(2, 0)
