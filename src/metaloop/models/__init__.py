"""Networks: MLP, Conv4."""

from metaloop.models.conv4 import Conv4
from metaloop.models.mlp import MLP

__all__ = ["MLP", "Conv4"]
