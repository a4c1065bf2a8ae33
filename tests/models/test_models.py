import pytest
import torch

from metaloop.models import MLP, Conv4
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
    with pytest.raises(ValueError, match="hidden"):
        MLP(1, (0,), 1)
    with pytest.raises(ValueError, match=r"\[N, 1, H, W\]"):
        Conv4()(torch.randn(2, 3, 28, 28))
