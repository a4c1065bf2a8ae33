"""Recorded and fixed BatchNorm statistics (non-transductive scoring) against plain arithmetic."""

import pytest
import torch
from torch.func import functional_call

from metaloop.models import Conv4
from metaloop.models.bn_stats import (
    STATS,
    batchnorm_layers,
    fixed_stats,
    recorded_stats,
    split_stats,
)


def _net():
    torch.manual_seed(0)
    return Conv4(1, 6, 3, pool="stride", image_size=12).double()


def test_recorded_stats_are_each_layers_input_mean_and_biased_variance():
    net = _net()
    x = torch.randn(7, 1, 12, 12, dtype=torch.float64)
    layers = batchnorm_layers(net)
    assert list(layers) == [f"body.{i}.bn" for i in range(4)]
    inputs = {}
    hooks = [m.register_forward_hook(lambda mod, a, o, n=n: inputs.__setitem__(n, a[0]))
             for n, m in layers.items()]
    with recorded_stats(layers, {}) as stats:
        out = net(x)
    for h in hooks:
        h.remove()
    assert torch.equal(out, net(x))                      # recording changes nothing
    for n, h in inputs.items():
        torch.testing.assert_close(stats[f"{STATS}{n}.mean"], h.mean((0, 2, 3)))
        torch.testing.assert_close(stats[f"{STATS}{n}.var"], h.var((0, 2, 3), unbiased=False))


def test_fixed_stats_reproduce_the_batch_and_score_each_row_alone():
    net = _net()
    support, query = (torch.randn(n, 1, 12, 12, dtype=torch.float64) for n in (6, 5))
    layers = batchnorm_layers(net)
    params = dict(net.named_parameters())
    with recorded_stats(layers, {}) as stats:
        plain = functional_call(net, params, (support,))
    with fixed_stats(layers, stats):                     # the support set, its own statistics
        again = functional_call(net, params, (support,))
        together = net(query)
        alone = torch.cat([net(query[i:i + 1]) for i in range(5)])   # 1x1 maps at the end
    torch.testing.assert_close(again, plain)
    torch.testing.assert_close(alone, together)
    assert not torch.allclose(together, net(query))      # batch statistics differ
    rest, only = split_stats({**params, **stats})
    assert rest.keys() == params.keys() and only.keys() == stats.keys()
    # gradients reach the parameters through the recorded statistics
    with recorded_stats(layers, {}) as live:
        functional_call(net, params, (support,))
    with fixed_stats(layers, live):
        loss = net(query).square().sum()
    g = torch.autograd.grad(loss, params["body.0.conv.weight"])[0]
    assert g.abs().max() > 0
    with pytest.raises(ValueError, match="no recorded statistics for"):
        with fixed_stats(layers, {}):
            pass
    with fixed_stats(layers, stats), pytest.raises(ValueError, match="already has fixed"):
        with fixed_stats(layers, stats):
            pass
    assert all(m.fixed is None for m in layers.values())   # restored, also after an error
