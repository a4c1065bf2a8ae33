"""Task families and the TaskBatch container."""

from metaloop.tasks.augment import (
    Shifted,
    elastic_images,
    rotate_images,
    shift_images,
    stroke_images,
)
from metaloop.tasks.batch import TaskBatch
from metaloop.tasks.device import DeviceTasks
from metaloop.tasks.episodes import Episodes
from metaloop.tasks.fashion_mnist import FashionMNIST
from metaloop.tasks.omniglot import Omniglot
from metaloop.tasks.protocol import TaskFamily, check_family
from metaloop.tasks.sinusoid import Sinusoid
from metaloop.tasks.splits import read_split_file, split_classes
from metaloop.tasks.text_table import TextTable
from metaloop.tasks.wordnet import WordNet

__all__ = ["DeviceTasks", "Episodes", "FashionMNIST", "Omniglot", "Shifted", "Sinusoid",
           "TaskBatch", "TaskFamily", "TextTable", "WordNet", "check_family", "elastic_images",
           "read_split_file", "rotate_images", "shift_images", "split_classes",
           "stroke_images"]
