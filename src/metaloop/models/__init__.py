"""Networks: MLP, Conv4, ResNet-12; the text-encoder wrapper (``TextEncoder``; loading it
needs the ``text`` extra)."""

from metaloop.models.conv4 import Conv4
from metaloop.models.mlp import MLP
from metaloop.models.resnet12 import ResNet12
from metaloop.models.text import TextEncoder

__all__ = ["MLP", "Conv4", "ResNet12", "TextEncoder"]
