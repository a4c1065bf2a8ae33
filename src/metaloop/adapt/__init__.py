"""Inner loops and adaptation strategies."""

from metaloop.adapt.newton_head import newton_head, svm_head
from metaloop.adapt.ridge_head import head_logits, ridge_head
from metaloop.adapt.sgd import SGDAdapter, sgd_path, sgd_path_func

__all__ = [
    "SGDAdapter",
    "head_logits",
    "newton_head",
    "ridge_head",
    "sgd_path",
    "sgd_path_func",
    "svm_head",
]
