"""Task families and the TaskBatch container."""

from metaloop.tasks.batch import TaskBatch
from metaloop.tasks.sinusoid import Sinusoid

__all__ = ["TaskBatch", "Sinusoid"]
