"""Inner loops and adaptation strategies."""

from metaloop.adapt.sgd import SGDAdapter, sgd_path

__all__ = ["SGDAdapter", "sgd_path"]
