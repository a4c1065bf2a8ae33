"""Continual fine-tuning: replay mixing, kept heads, forgetting metrics, scenarios.

``finetune_experience`` is the training function (``finetune``, its older name, still works);
``run_sequence`` learns a stream of experiences with one of the named ``STRATEGIES``; the
metrics follow the papers' definitions (Lopez-Paz & Ranzato's average accuracy and backward
transfer; Chaudhry et al.'s forgetting with its max restricted to the evaluations from when
the experience was learned: ``metrics``). ``user_experiences`` makes a stream from your own
image folder or tensor file.
"""

from metaloop.continual.finetune import (
    FinetuneResult,
    batch_loss,
    evaluate_experiences,
    finetune_experience,
    select_trainable,
)
from metaloop.continual.finetune import finetune as finetune  # the older name, not in __all__
from metaloop.continual.heads import (
    features,
    head_param_names,
    init_heads,
    init_params,
    logits_of_head,
)
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
from metaloop.continual.scenarios import load_labelled as load_labelled  # your own data
from metaloop.continual.scenarios import split_classes_of as split_classes_of
from metaloop.continual.scenarios import user_experiences as user_experiences
from metaloop.continual.sequence import (
    STRATEGIES,
    SequenceResult,
    merge_lora_params,
    run_sequence,
    strategy_options,
    with_lora,
)

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
    "finetune_experience",
    "full_buffer",
    "head_param_names",
    "init_heads",
    "init_params",
    "load_labelled",
    "logits_of_head",
    "merge_lora_params",
    "mixed_batches",
    "omniglot_alphabets",
    "replay_buffer",
    "replay_count",
    "reservoir_update",
    "run_sequence",
    "select_trainable",
    "split_classes_of",
    "split_fashion_mnist",
    "stream_forgetting",
    "strategy_options",
    "summarize",
    "two_task",
    "user_experiences",
    "with_lora",
]
