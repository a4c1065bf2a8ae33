"""metaloop: make models good at being fine-tuned, and fine-tune them well."""

from metaloop import tasks
from metaloop.tasks import TaskBatch

__all__ = [
    "TaskBatch",
    "tasks",
]
__version__ = "0.1.0"
