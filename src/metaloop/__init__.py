"""metaloop: make models good at being fine-tuned, and fine-tune them well.

``ml.train(...)`` and ``ml.evaluate(...)`` call ``metaloop.train.train`` and
``metaloop.evaluate.evaluate``; the subpackages themselves stay importable.
"""

from metaloop import (
    adapt,
    build,
    config,
    continual,
    data,
    evaluate,
    func,
    generative,
    meta,
    models,
    recipes,
    runs,
    tasks,
    train,
)
from metaloop.evaluate import mean_ci
from metaloop.runs import Run, load_run
from metaloop.tasks import TaskBatch
from metaloop.train import NonFiniteLossError

__all__ = [
    "NonFiniteLossError",
    "Run",
    "TaskBatch",
    "adapt",
    "build",
    "config",
    "continual",
    "data",
    "evaluate",
    "func",
    "generative",
    "load_run",
    "mean_ci",
    "meta",
    "models",
    "recipes",
    "runs",
    "tasks",
    "train",
]
__version__ = "0.1.0"
