"""Inner loops and adaptation strategies (approaches 0-3 of the lecture)."""

from metaloop.adapt.finetune import finetune, lpft
from metaloop.adapt.heads import fit_head, init_head, warm_head
from metaloop.adapt.learned_lr import InnerLRs
from metaloop.adapt.linear_probe import linear_probe
from metaloop.adapt.lora import add_lora, lora_finetune, merge_lora
from metaloop.adapt.newton_head import NewtonConvergenceWarning, newton_head, svm_head
from metaloop.adapt.probe import Probe, fit_probe
from metaloop.adapt.prompting import optimize_prompt, zero_shot
from metaloop.adapt.proto_head import (
    proto_head,
    proto_logits,
    prototypes,
    refine_prototypes,
    refine_prototypes_jointly,
)
from metaloop.adapt.ridge_head import head_logits, ridge_head
from metaloop.adapt.sgd import SGDAdapter, sgd_path, sgd_path_func
from metaloop.adapt.soft_prompt import add_soft_prompt, soft_prompt_finetune

__all__ = [
    "InnerLRs",
    "NewtonConvergenceWarning",
    "Probe",
    "SGDAdapter",
    "add_lora",
    "add_soft_prompt",
    "finetune",
    "fit_head",
    "fit_probe",
    "head_logits",
    "init_head",
    "linear_probe",
    "lora_finetune",
    "lpft",
    "merge_lora",
    "newton_head",
    "optimize_prompt",
    "proto_head",
    "proto_logits",
    "prototypes",
    "refine_prototypes",
    "refine_prototypes_jointly",
    "ridge_head",
    "sgd_path",
    "sgd_path_func",
    "soft_prompt_finetune",
    "svm_head",
    "warm_head",
    "zero_shot",
]
