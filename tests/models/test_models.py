import pytest
import torch
import torch.nn.functional as F

from metaloop.models import MLP, Conv4, ResNet12
from metaloop.models.bn_stats import batchnorm_layers, fixed_stats, recorded_stats
from metaloop.models.conv4 import BatchNorm


def test_mlp_and_conv4_shapes_and_features():
    m = MLP(1, (40, 40), 1)
    assert m(torch.randn(7, 1)).shape == (7, 1)
    assert m(torch.randn(7, 1), head=False).shape == (7, 40)
    for pool, d in (("max", 64), ("stride", 64)):
        c = Conv4(1, 64, 5, pool=pool)
        assert c.feature_dim == d
        assert c(torch.randn(3, 1, 28, 28)).shape == (3, 5)
    assert Conv4(3, 32, 5, image_size=84).feature_dim == 32 * 25


def test_conv4_readout_flatten_keeps_the_spatial_map():
    torch.manual_seed(0)
    mean, flat = Conv4(1, 8, 5, pool="stride"), Conv4(1, 8, 5, pool="stride", readout="flatten")
    flat.body.load_state_dict(mean.body.state_dict())
    assert (mean.readout, flat.feature_dim) == ("mean", 8 * 2 * 2)    # 28 -> 14 -> 7 -> 4 -> 2
    x = torch.randn(3, 1, 28, 28)
    fmap = flat.body(x)                                               # [3, 8, 2, 2]
    assert torch.equal(flat.features(x), fmap.flatten(1))
    assert torch.allclose(mean.features(x), fmap.mean((2, 3)))
    assert flat(x).shape == (3, 5)
    a, b = Conv4(1, 8, 5, pool="max"), Conv4(1, 8, 5, pool="max", readout="mean")
    b.load_state_dict(a.state_dict())                                 # max-pool ends at 1x1
    assert a.readout == "flatten" and torch.equal(a.features(x), b.features(x))


def test_batchnorm_uses_batch_statistics_and_has_no_buffers():
    bn = BatchNorm(4)
    assert list(bn.buffers()) == []
    x = torch.randn(8, 4, 5, 5) * 3 + 2
    y = bn(x)
    assert torch.allclose(y.mean((0, 2, 3)), torch.zeros(4), atol=1e-5)
    bn.eval()                                  # MAML normalises with batch statistics at test
    assert torch.allclose(bn(x), y)
    ref = torch.func.vmap(bn)(x[None])[0]      # the arithmetic path used under torch.func
    assert torch.allclose(ref, y, atol=1e-5)


def test_bad_model_arguments():
    with pytest.raises(ValueError, match="pool"):
        Conv4(pool="avg")
    with pytest.raises(ValueError, match="readout"):
        Conv4(pool="stride", readout="sum")
    with pytest.raises(ValueError, match="hidden"):
        MLP(1, (0,), 1)


def test_mlp_hidden_must_be_a_sequence_of_widths():
    """QA repro: MLP(hidden=40) raised 'TypeError: Value after * must be an iterable'."""
    with pytest.raises(ValueError, match=r"hidden must be a sequence of hidden-layer widths, "
                                         r"e.g. \(40, 40\), got 40; for one hidden layer "
                                         r"pass \(40,\)"):
        MLP(1, 40, 1)
    with pytest.raises(ValueError, match="hidden must be a sequence"):
        MLP(1, "40", 1)
    with pytest.raises(ValueError, match="hidden must be a positive int, got 0"):
        MLP(1, (w for w in (8, 0)), 1)                 # a generator is checked too
    with pytest.raises(ValueError, match="in_dim must be a positive int, got True"):
        MLP(True, (4,), 1)
    m = MLP(3, [5, 6], 2)
    assert [tuple(p.shape) for p in m.parameters()] == [(5, 3), (5,), (6, 5), (6,), (2, 6), (2,)]
    assert MLP(3, (), 2)(torch.randn(4, 3)).shape == (4, 2)
    with pytest.raises(ValueError, match=r"\[N, 1, H, W\]"):
        Conv4()(torch.randn(2, 3, 28, 28))


@pytest.mark.parametrize("size", [2, 8, 15])
def test_max_pool_needs_16_pixels_and_stride_takes_any_size(size):
    """Four 2x2 max-pools take 15 -> 7 -> 3 -> 1 -> 0: a RuntimeError from max_pool2d came
    out of the constructor (and ``metaloop train``); now a ValueError names the minimum.
    The stride-2 convolutions round up (1 -> 1) and read any size."""
    with pytest.raises(ValueError, match=rf"image_size must be >= 16 with pool 'max' .*got "
                                         rf"{size}; use pool 'stride'"):
        Conv4(1, 4, 3, pool="max", image_size=size)
    assert Conv4(1, 4, 3, pool="max", image_size=16)(torch.randn(2, 1, 16, 16)).shape == (2, 3)
    for side in (1, size):
        net = Conv4(1, 4, 3, pool="stride", image_size=side)
        assert net(torch.randn(2, 1, side, side)).shape == (2, 3)


def test_inputs_of_the_wrong_size_are_named():
    """An image size other than the one Conv4 was built for (its head would not fit), or an
    MLP input whose last dimension is not ``in_dim``: a ValueError naming the shapes, not a
    matmul error."""
    with pytest.raises(ValueError, match=r"built for 28x28 inputs \(8 features.*\[2, 1, 84, 84\] "
                                         r"gives 200; build it with image_size=84"):
        Conv4(1, 8, 5)(torch.randn(2, 1, 84, 84))
    assert Conv4(1, 8, 5)(torch.randn(2, 1, 84, 84), head=False).shape == (2, 200)
    # a non-square image (a tensors family; the net is built from its width): "build it with
    # image_size=40", the size it was built with, was no way out
    with pytest.raises(ValueError, match=r"built for 40x40 inputs \(32 features.*\[2, 1, 20, "
                                         r"40\] gives 16; it reads square images: pad or "
                                         r"resize them to a square"):
        Conv4(1, 8, 5, image_size=40)(torch.randn(2, 1, 20, 40))
    assert Conv4(1, 8, 5, pool="stride")(torch.randn(2, 1, 84, 84)).shape == (2, 5)
    with pytest.raises(ValueError, match=r"MLP expects inputs \[\.\.\., in_dim=784\], got shape "
                                         r"\[2, 1, 28, 28\]"):
        MLP(784, (8,), 5)(torch.randn(2, 1, 28, 28))
    assert MLP(3, (4,), 2)(torch.randn(5, 7, 3)).shape == (5, 7, 2)    # any leading dims
    with pytest.raises(ValueError, match=r"in_dim=1\], got shape \[\]"):   # was an IndexError
        MLP(1, (4,), 1)(torch.tensor(0.5))


def test_batchnorm_equals_torch_batch_norm_in_training_mode():
    """Both paths (the fused kernel, and the arithmetic one under torch.func) normalise with
    the batch's mean and biased variance, eps inside the square root, then the affine."""
    torch.manual_seed(0)
    bn = BatchNorm(4, eps=1e-3).double()
    with torch.no_grad():
        bn.weight.uniform_(0.5, 2.0)
        bn.bias.normal_()
    x = torch.randn(3, 4, 5, 7, dtype=torch.float64) * 3 + 1
    ref = F.batch_norm(x, None, None, bn.weight, bn.bias, training=True, eps=1e-3)
    mean, var = x.mean((0, 2, 3)), x.var((0, 2, 3), unbiased=False)
    by_hand = ((x - mean[:, None, None]) / (var[:, None, None] + 1e-3).sqrt()
               * bn.weight[:, None, None] + bn.bias[:, None, None])
    torch.testing.assert_close(ref, by_hand, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(bn(x), ref, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(torch.func.vmap(bn)(x[None])[0], ref, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("side", [1, 14, 16])
def test_batchnorm_refuses_one_value_per_channel(side):
    """A single image whose map has shrunk to 1x1 (the stride net up to 16x16) has no batch
    statistics: F.batch_norm raised its own error, while the arithmetic path under vmap
    silently replaced every feature by the BatchNorm bias. Both now name the problem."""
    net = Conv4(1, 4, 3, pool="stride", image_size=side)
    one = torch.randn(1, 1, side, side)
    msg = r"BatchNorm on batch statistics needs more than one value per channel, .*\[1, 4, 1, 1\]"
    with pytest.raises(ValueError, match=msg):
        net(one)
    with pytest.raises(ValueError, match=msg):
        torch.func.vmap(net)(one[None])
    assert net(torch.randn(2, 1, side, side)).shape == (2, 3)          # two images: fine
    layers = batchnorm_layers(net)
    with recorded_stats(layers, {}) as stats:
        net(torch.randn(4, 1, side, side))
    with fixed_stats(layers, stats):                                   # given statistics: fine
        assert net(one).shape == (1, 3)
    assert Conv4(1, 4, 3, pool="stride", image_size=17)(torch.randn(1, 1, 17, 17)).shape == (1, 3)


@pytest.mark.parametrize("kw", [{"in_channels": True}, {"hidden": True}, {"out_dim": False},
                                {"image_size": True}])
def test_conv4_refuses_bools_for_sizes(kw):
    """``Conv4(hidden=True)`` built a net of one filter per block (a bool is an int)."""
    name = next(iter(kw))
    with pytest.raises(ValueError, match=rf"Conv4 {name} must be a positive int, got "
                                         rf"{kw[name]}"):
        Conv4(**{"pool": "stride", **kw})


def test_fixed_statistics_of_another_width_are_named():
    """Statistics recorded on a narrower net under the same layer names: a broadcasting error
    from the arithmetic, or, for one channel, silent broadcasting; now a ValueError."""
    torch.manual_seed(0)
    narrow, wide = (Conv4(1, c, 3, pool="stride", image_size=12) for c in (4, 8))
    x = torch.randn(5, 1, 12, 12)
    with recorded_stats(batchnorm_layers(narrow), {}) as stats:
        narrow(x)
    with fixed_stats(batchnorm_layers(wide), stats), pytest.raises(
            ValueError, match=r"fixed statistics must be \[C\] for input \[5, 8, 6, 6\] of C=8 "
                              r"channels, got mean \[4\] and var \[4\]"):
        wide(x)
    one = {k: v[:1] for k, v in stats.items()}                     # [1]: used to broadcast
    with fixed_stats(batchnorm_layers(narrow), one), pytest.raises(ValueError, match="got mean"):
        narrow(x)


@pytest.mark.parametrize("pool,readout,side,maps", [
    ("max", "flatten", 28, 1), ("max", "flatten", 84, 5), ("max", "flatten", 56, 3),
    ("stride", "flatten", 28, 2), ("stride", "flatten", 84, 6), ("stride", "flatten", 56, 4),
    ("stride", "mean", 84, 6), ("max", "mean", 84, 5),
])
def test_conv4_feature_sizes_of_the_papers_inputs(pool, readout, side, maps):
    """Vinyals et al. / ProtoNet (max-pool, flattened: 64 on 28x28, 1600 on 84x84) and the
    MAML / Reptile stride nets (28 -> 14 -> 7 -> 4 -> 2)."""
    net = Conv4(3, 64, 5, pool=pool, image_size=side, readout=readout)
    assert net.body(torch.randn(2, 3, side, side)).shape == (2, 64, maps, maps)
    assert net.feature_dim == (64 * maps * maps if readout == "flatten" else 64)
    convs = 3 * 64 * 9 + 64 + 3 * (64 * 64 * 9 + 64)
    assert sum(p.numel() for p in net.parameters()) == convs + 4 * 2 * 64 + \
        net.feature_dim * 5 + 5


@pytest.mark.parametrize("model, x", [
    (MLP(in_dim=4, hidden=(8,), out_dim=2), torch.zeros(3, 4, dtype=torch.int64)),
    (Conv4(in_channels=1, hidden=8, out_dim=2), torch.zeros(3, 1, 28, 28, dtype=torch.uint8)),
    (ResNet12(in_channels=1, width=8, out_dim=2), torch.zeros(3, 1, 28, 28, dtype=torch.uint8)),
], ids=["MLP", "Conv4", "ResNet12"])
def test_non_float_inputs_are_named_not_a_torch_dtype_error(model, x):
    with pytest.raises(ValueError, match=rf"{type(model).__name__} expects floating-point "
                                         rf".*got {x.dtype}"):
        model(x)
