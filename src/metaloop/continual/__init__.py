"""Continual fine-tuning: replay mixing, kept heads, forgetting metrics, scenarios.

``finetune`` is the training function; ``run_sequence`` learns a stream of experiences with
one of the named ``STRATEGIES``; the metrics follow Avalanche's names.
"""

from metaloop.continual import lora
from metaloop.continual.finetune import (
    FinetuneResult,
    batch_loss,
    evaluate_experiences,
    finetune,
    select_trainable,
)
from metaloop.continual.heads import features, head_logits, head_names, init_heads, init_params
from metaloop.continual.metrics import (
    accuracy_matrix,
    average_accuracy,
    backward_transfer,
    experience_forgetting,
    stream_forgetting,
    summarize,
)
from metaloop.continual.replay import (
    Batch,
    ReplayBuffer,
    full_buffer,
    mixed_batches,
    replay_buffer,
    replay_count,
    reservoir_update,
)
from metaloop.continual.scenarios import (
    SCENARIOS,
    Experience,
    fashion_mnist_experiences,
    omniglot_alphabets,
    split_fashion_mnist,
    two_task,
)
from metaloop.continual.sequence import STRATEGIES, SequenceResult, run_sequence, strategy_options

__all__ = [
    "SCENARIOS",
    "STRATEGIES",
    "Batch",
    "Experience",
    "FinetuneResult",
    "ReplayBuffer",
    "SequenceResult",
    "accuracy_matrix",
    "average_accuracy",
    "backward_transfer",
    "batch_loss",
    "evaluate_experiences",
    "experience_forgetting",
    "fashion_mnist_experiences",
    "features",
    "finetune",
    "full_buffer",
    "head_logits",
    "head_names",
    "init_heads",
    "init_params",
    "lora",
    "mixed_batches",
    "omniglot_alphabets",
    "replay_buffer",
    "replay_count",
    "reservoir_update",
    "run_sequence",
    "select_trainable",
    "split_fashion_mnist",
    "stream_forgetting",
    "strategy_options",
    "summarize",
    "two_task",
]
