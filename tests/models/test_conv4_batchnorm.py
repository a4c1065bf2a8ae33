"""metaloop's ``BatchNorm`` on ``[N, C]`` and ``[N, C, L]`` inputs, as torch's BatchNorm1d:
the vmap refusals suggest it in place of torch's layers, but ``[N, C]`` raised IndexError
("tuple index out of range")."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import metaloop as ml
from metaloop.models.bn_stats import fixed_stats, recorded_stats
from metaloop.models.conv4 import BatchNorm


@pytest.mark.parametrize("shape", [(6, 3), (6, 3, 5), (6, 3, 4, 4)])
def test_batch_statistics_as_torch_batchnorm(shape):
    """Each shape normalises as F.batch_norm in training mode (BatchNorm1d/2d without
    running statistics), and under vmap (plain arithmetic) as outside it."""
    torch.manual_seed(0)
    bn = BatchNorm(3).double()
    with torch.no_grad():
        bn.weight.uniform_(0.5, 2.0)
        bn.bias.normal_()
    x = torch.randn(2, *shape, dtype=torch.float64)
    ref = F.batch_norm(x[0], None, None, bn.weight, bn.bias, True, 0.0, 1e-5)
    assert torch.allclose(bn(x[0]), ref, rtol=0, atol=1e-12)
    batched = torch.func.vmap(bn)(x)
    assert torch.allclose(batched[0], ref, rtol=0, atol=1e-12)
    assert torch.allclose(batched[1], bn(x[1]), rtol=0, atol=1e-12)


def test_fixed_statistics_on_features():
    """Support statistics recorded on [N, C] features normalise other features with them."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(4, 3), BatchNorm(3))
    layers = {"1": net[1]}
    s, q = torch.randn(8, 4), torch.randn(5, 4)
    with recorded_stats(layers, {}) as stats:
        fs = net(s)
    with fixed_stats(layers, stats):
        fq, fs2 = net(q), net(s)
    h = net[0](q)
    mean, var = stats[next(k for k in stats if k.endswith(".mean"))], \
        stats[next(k for k in stats if k.endswith(".var"))]
    assert torch.allclose(fq, (h - mean) / torch.sqrt(var + 1e-5) * net[1].weight
                          + net[1].bias, atol=1e-6)
    assert torch.allclose(fs2, fs, atol=1e-6)


@pytest.mark.parametrize("shape", [(6,), (2, 6, 3, 4, 4), (6, 4), (6, 4, 5)])
def test_other_shapes_are_refused_naming_the_ones_taken(shape):
    with pytest.raises(ValueError, match=rf"BatchNorm\(3\) takes \[N, C\], \[N, C, L\] or "
                                         rf"\[N, C, H, W\] with C=3 channels \(as BatchNorm1d "
                                         rf"and BatchNorm2d\), got \[{', '.join(map(str, shape))}"
                                         rf"\]"):
        BatchNorm(3)(torch.randn(*shape))


def test_one_example_of_features_has_no_batch_statistics():
    with pytest.raises(ValueError, match=r"needs more than one value per channel, but its "
                                         r"input \[1, 3\] has one \(a single example"):
        BatchNorm(3)(torch.randn(1, 3))


def test_it_replaces_batchnorm1d_where_the_vmap_refusal_suggests_it():
    """MAML(batching='vmap') refuses torch's BatchNorm1d in second order and names
    metaloop.models.conv4.BatchNorm; a model with it in that place meta-trains under vmap
    with the loop's meta-gradient (float64)."""
    def net(norm):
        torch.manual_seed(0)
        return nn.Sequential(nn.Linear(4, 6), norm(6), nn.Tanh(), nn.Linear(6, 3)).double()
    g = torch.Generator().manual_seed(0)
    fam = ml.tasks.Episodes(torch.randn(40, 4, generator=g), torch.arange(40) % 4, ways=3,
                            shots=2, queries=2)
    b = fam.sample(2, torch.Generator().manual_seed(0)).to(dtype=torch.float64)
    with pytest.raises(ValueError, match=r"metaloop.models.conv4.BatchNorm"):
        ml.meta.MAML(net(lambda c: nn.BatchNorm1d(c, track_running_stats=False)), 0.3, 2,
                     loss="ce", batching="vmap")
    model = net(BatchNorm)
    got = ml.meta.MAML(model, 0.3, 2, loss="ce", batching="vmap").meta_gradient(b)
    ref = ml.meta.MAML(model, 0.3, 2, loss="ce", batching="loop").meta_gradient(b)
    for n in ref:
        assert torch.allclose(got[n], ref[n], rtol=0, atol=1e-12), n
