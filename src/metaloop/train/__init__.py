"""The training loop, checkpoints and resume."""

from metaloop.train.checkpoint import load_checkpoint, save_checkpoint
from metaloop.train.loop import NonFiniteLossError, train

__all__ = ["NonFiniteLossError", "load_checkpoint", "save_checkpoint", "train"]

from metaloop._callable import make_callable  # noqa: E402

make_callable(__name__, train)
