"""LoRA and soft-prompt fine-tuning refuse steps=0 without warm-up, as ``finetune`` does: the
adapters and the prompt would stay as made and the new head untrained."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))
from _text_models import tiny_text  # noqa: E402


@pytest.fixture
def enc():
    pytest.importorskip("peft", reason="LoRA and soft prompts need the text extra")
    return tiny_text(out_dim=2)


@pytest.fixture
def task():
    return torch.tensor([[5.0, 7.0], [6.0, 8.0], [9.0, 4.0], [3.0, 2.0]]), torch.tensor(
        [0, 1, 0, 1])


def test_lora_finetune_refuses_steps_0_without_warmup(enc, task):
    from metaloop.adapt.lora import add_lora, lora_finetune
    lora = add_lora(enc, r=2, target_modules=["query"])
    with pytest.raises(ValueError, match=r"^lora_finetune: steps=0 without warmup trains "
                                         r"nothing"):
        lora_finetune(lora, *task, steps=0)
    warm = lora_finetune(lora, *task, steps=0, warmup="ridge")     # the warm-up phase alone
    assert warm(task[0]).shape == (4, 2) and warm.info["steps"] == 0


def test_soft_prompt_finetune_refuses_steps_0_without_warmup(enc, task):
    from metaloop.adapt.soft_prompt import add_soft_prompt, soft_prompt_finetune
    sp = add_soft_prompt(enc, 2)
    with pytest.raises(ValueError, match=r"^soft_prompt_finetune: steps=0 without warmup "
                                         r"trains nothing"):
        soft_prompt_finetune(sp, *task, steps=0, head_init="random")
    assert soft_prompt_finetune(sp, *task, steps=1)(task[0]).shape == (4, 2)
