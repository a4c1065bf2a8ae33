"""Networks: MLP, Conv4, ResNet-12."""

from metaloop.models.conv4 import Conv4
from metaloop.models.mlp import MLP
from metaloop.models.resnet12 import ResNet12

__all__ = ["MLP", "Conv4", "ResNet12"]
