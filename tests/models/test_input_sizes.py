"""Conv4 and ResNet12 fed images below 16 pixels: a ValueError naming the size, not
max_pool2d's "Output size is too small" (a shape check: cheap, and fine under vmap)."""

import pytest
import torch

from metaloop.models import Conv4, ResNet12


@pytest.mark.parametrize("side", [1, 8, 10, 15])
def test_conv4_max_pool_names_inputs_below_16_pixels(side):
    net = Conv4(1, 8, 3)                                             # built for 28x28
    msg = (rf"Conv4 with pool 'max' needs inputs of at least 16x16 \(four 2x2 pools\), but "
           rf"input \[2, 1, {side}, {side}\] is {side}x{side}; it was built for 28x28")
    for head in (True, False):
        with pytest.raises(ValueError, match=msg):
            net(torch.rand(2, 1, side, side), head=head)
    with pytest.raises(ValueError, match=r"is 28x10"):
        net(torch.rand(2, 1, 28, 10))
    assert net(torch.rand(2, 1, 16, 16), head=False).shape == (2, 8)      # 16 is enough
    assert Conv4(1, 8, 3, pool="stride")(torch.rand(2, 1, side, side)).shape == (2, 3)


@pytest.mark.parametrize("side", [4, 8, 15])
def test_resnet12_names_inputs_below_16_pixels(side):
    net = ResNet12(1, 4, 3, image_size=16)
    with pytest.raises(ValueError, match=rf"ResNet12 needs inputs of at least 16x16 \(four 2x2 "
                                         rf"pools\), but input \[2, 1, {side}, {side}\] is "
                                         rf"{side}x{side}; it was built for 16x16"):
        net(torch.rand(2, 1, side, side))
    assert net(torch.rand(2, 1, 20, 20)).shape == (2, 3)          # the mean takes any >= 16
