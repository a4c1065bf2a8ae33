"""The functional core: parameter dicts, partition/combine, functional forward, losses."""

from metaloop.func.losses import accuracy, get_loss
from metaloop.func.params import (
    combine,
    detach,
    forward,
    last_linear_names,
    params_of,
    partition,
)

__all__ = [
    "accuracy",
    "combine",
    "detach",
    "forward",
    "get_loss",
    "last_linear_names",
    "params_of",
    "partition",
]
