"""Task families and the TaskBatch container."""

from metaloop.tasks.augment import Shifted, rotate_images, shift_images
from metaloop.tasks.batch import TaskBatch
from metaloop.tasks.fashion_mnist import FashionMNIST
from metaloop.tasks.omniglot import Omniglot
from metaloop.tasks.sinusoid import Sinusoid
from metaloop.tasks.wordnet import WordNet

__all__ = ["FashionMNIST", "Omniglot", "Shifted", "Sinusoid", "TaskBatch", "WordNet",
           "rotate_images", "shift_images"]
