"""Approach 3b, soft prompts through peft prompt tuning: only the prompt (and head) train."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

from metaloop.adapt.soft_prompt import add_soft_prompt, is_prompt, soft_prompt_finetune
from metaloop.models import Conv4

pytest.importorskip("peft", reason="soft prompts need the text extra: pip install -e '.[text]'")
transformers = pytest.importorskip("transformers", reason="pip install -e '.[text]'")

sys.path.insert(0, str(Path(__file__).parent))
from _text_models import tiny_text  # noqa: E402


def _task():
    g = torch.Generator().manual_seed(0)
    x = torch.randint(1, 60, (6, 7), generator=g).float()
    x[1, 4:] = 0
    return x, torch.arange(3).repeat(2)


def test_soft_prompts_change_only_the_prompt_parameters():
    model = tiny_text()
    sp = add_soft_prompt(model, num_virtual_tokens=4)
    names = [n for n, _ in sp.named_parameters() if is_prompt(n)]
    assert names == ["encoder.prompt_encoder.default.embedding.weight"]
    vocab = model.encoder.embeddings.word_embeddings.weight              # [60, 32]
    rows = dict(sp.named_parameters())[names[0]]                          # [4, 32]
    assert all((vocab == r).all(1).any() for r in rows)      # sample_vocab: real token rows
    start = {n: p.detach().clone() for n, p in sp.named_parameters()}
    x, y = _task()
    a = soft_prompt_finetune(sp, x, y, steps=3, head_init="random")
    assert set(a.names) == {*names, "head.weight", "head.bias"}
    assert a.trainable == 4 * 32 + 3 * 32 + 3
    assert not torch.equal(a.params[names[0]], start[names[0]])        # the prompt moved
    for n, t in a.params.items():
        if n not in a.names:
            assert torch.equal(t, start[n]), n                          # nothing else did
    for n, p in sp.named_parameters():
        assert torch.equal(p, start[n]), n                              # and sp is untouched


def test_the_prompt_acts_through_attention_and_pooling_skips_it():
    model = tiny_text()
    sp = add_soft_prompt(model, num_virtual_tokens=3, init="random")
    x, _ = _task()
    f0, f1 = model(x, head=False), sp(x, head=False)
    assert f1.shape == f0.shape == (6, 32)
    assert not torch.allclose(f0, f1)
    assert not any(is_prompt(n) for n, _ in model.named_parameters())


def test_soft_prompt_errors():
    with pytest.raises(ValueError, match="soft prompts need a transformer TextEncoder, got Conv4"):
        add_soft_prompt(Conv4(1, 8))
    model = tiny_text()
    with pytest.raises(ValueError, match="num_virtual_tokens must be a positive int"):
        add_soft_prompt(model, 0)
    with pytest.raises(ValueError, match="^soft_prompt_finetune: TextEncoder has no soft "
                                         "prompt; call add_soft_prompt"):
        soft_prompt_finetune(model, *_task())
    with pytest.raises(ValueError, match="^soft_prompt_finetune: model must be a "
                                         "torch.nn.Module, got str"):
        soft_prompt_finetune("minilm", *_task())
    with pytest.raises(ValueError, match="^soft_prompt_finetune: lr must be a positive"):
        soft_prompt_finetune(add_soft_prompt(model, 2), *_task(), lr=0.0)
    with pytest.raises(ValueError, match="already has a soft prompt"):
        add_soft_prompt(add_soft_prompt(model, 2))
