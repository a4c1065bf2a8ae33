import pytest
import torch
import torch.nn.functional as F

from metaloop.models import ResNet12

DT = torch.float64


def bn_ref(x, w, b, eps=1e-5):
    """Batch-statistics BatchNorm by hand (biased variance)."""
    mean = x.mean((0, 2, 3), keepdim=True)
    var = ((x - mean) ** 2).mean((0, 2, 3), keepdim=True)
    return (x - mean) / torch.sqrt(var + eps) * w[:, None, None] + b[:, None, None]


def resnet12_ref(p, x, slope=0.1):
    """Lee et al.'s ResNet-12 written out with functional ops on the parameter dict."""
    for i in range(4):
        q = f"body.{i}."

        def cbn(h, k, q=q):
            h = F.conv2d(h, p[f"{q}conv{k}.weight"], padding=1)
            return bn_ref(h, p[f"{q}bn{k}.weight"], p[f"{q}bn{k}.bias"])
        h = F.leaky_relu(cbn(x, 1), slope)
        h = F.leaky_relu(cbn(h, 2), slope)
        h = cbn(h, 3)
        s = bn_ref(F.conv2d(x, p[f"{q}shortcut.weight"]), p[f"{q}bn_shortcut.weight"],
                   p[f"{q}bn_shortcut.bias"])
        x = F.max_pool2d(F.leaky_relu(h + s, slope), 2)
    return x.mean((2, 3))


def test_widths_shapes_and_parameter_count():
    m = ResNet12(1, 64, 5)
    assert m.feature_dim == 640
    assert [b.conv1.out_channels for b in m.body] == [64, 160, 320, 640]
    assert m(torch.randn(2, 1, 28, 28)).shape == (2, 5)
    assert m(torch.randn(2, 1, 28, 28), head=False).shape == (2, 640)
    convs = sum(9 * a * b + 2 * 9 * b * b + a * b for a, b in
                zip((1, 64, 160, 320), (64, 160, 320, 640)))       # three 3x3 + the 1x1
    bns = sum(4 * 2 * b for b in (64, 160, 320, 640))
    assert sum(p.numel() for p in m.parameters()) == convs + bns + 640 * 5 + 5
    assert ResNet12(3, 8, 4, image_size=84)(torch.randn(2, 3, 84, 84)).shape == (2, 4)


def test_forward_and_gradients_equal_a_functional_reference():
    torch.manual_seed(0)
    m = ResNet12(1, 4, 3, image_size=20).double()
    p = dict(m.named_parameters())
    x = torch.randn(6, 1, 20, 20, dtype=DT)
    got, ref = m(x, head=False), resnet12_ref(p, x)
    torch.testing.assert_close(got, ref, rtol=1e-12, atol=1e-12)
    w = torch.randn_like(ref)
    names = [n for n in p if not n.startswith("head.")]
    g1 = torch.autograd.grad((got * w).sum(), [p[n] for n in names])
    g2 = torch.autograd.grad((resnet12_ref(p, x) * w).sum(), [p[n] for n in names])
    for n, a, b in zip(names, g1, g2):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12, msg=n)


@pytest.mark.parametrize("kw,message", [
    ({"width": 0}, "width must be a positive int"),
    ({"image_size": 8}, "image_size must be >= 16"),
    ({"in_channels": 2.0}, "in_channels must be a positive int"),
])
def test_bad_arguments(kw, message):
    with pytest.raises(ValueError, match=message):
        ResNet12(**kw)


def test_bad_input_shape_is_named():
    with pytest.raises(ValueError, match=r"ResNet12 expects \[N, 1, H, W\]"):
        ResNet12()(torch.randn(2, 3, 28, 28))


@pytest.mark.parametrize("kw,message", [
    ({"width": True}, "width must be a positive int, got True"),
    ({"in_channels": True}, "in_channels must be a positive int, got True"),
    ({"negative_slope": "0.1"}, r"negative_slope must be a number in \[0, 1\), got '0.1'"),
    ({"negative_slope": -0.1}, r"negative_slope must be a number in \[0, 1\), got -0.1"),
    ({"negative_slope": float("nan")}, r"negative_slope must be a number in \[0, 1\)"),
])
def test_bad_arguments_are_named_at_construction(kw, message):
    """A bool was taken as a width of 1, and a bad slope failed at the first forward pass
    (a string) or built a net of another activation (a negative slope)."""
    with pytest.raises(ValueError, match=message):
        ResNet12(**kw)
    assert ResNet12(1, 2, 3, image_size=16, negative_slope=0)(torch.randn(2, 1, 16, 16)).shape \
        == (2, 3)


def test_84x84_features_are_the_mean_of_the_last_5x5_map():
    """The docstring's readout: MetaOptNet flattens this map (640 x 5 x 5 on 84x84 at width
    64); here the features are its spatial mean, 10 * width of them."""
    torch.manual_seed(0)
    m = ResNet12(3, 4, 5, image_size=84)
    x = torch.randn(2, 3, 84, 84)
    fmap = m.body(x)
    assert fmap.shape == (2, 40, 5, 5) and m.feature_dim == 40
    torch.testing.assert_close(m(x, head=False), fmap.mean((2, 3)))
