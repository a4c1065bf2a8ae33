"""The soft-prompted predictor against the pretrained transformer run by hand: the P prompt
vectors prepended to the token embeddings (attended to, never padding), the text's real
tokens mean-pooled and normalised, then the adapted head (Lester et al. 2021)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from metaloop.adapt.soft_prompt import add_soft_prompt, soft_prompt_finetune

pytest.importorskip("peft", reason="soft prompts need the text extra: pip install -e '.[text]'")
pytest.importorskip("transformers", reason="pip install -e '.[text]'")

sys.path.insert(0, str(Path(__file__).parent))
from _text_models import tiny_text  # noqa: E402

PROMPT = "encoder.prompt_encoder.default.embedding.weight"


def _ids():
    g = torch.Generator().manual_seed(0)
    x = torch.randint(1, 60, (6, 7), generator=g).float()
    x[1, 4:] = 0                                                        # padding (id 0)
    return x, torch.arange(3).repeat(2)


@torch.no_grad()
def _reference(bert, prompt, head_w, head_b, x):
    """Logits [N, C]: ``bert`` (the pretrained transformer, eval mode) on the prompt [P, H]
    followed by the token embeddings, pooled over the real tokens."""
    ids = x.long()
    real = ids != 0                                                     # [N, L]
    tokens = bert.get_input_embeddings()(ids)                           # [N, L, H]
    n, p = ids.shape[0], prompt.shape[0]
    embeds = torch.cat([prompt.expand(n, -1, -1), tokens], 1)          # [N, P + L, H]
    mask = torch.cat([torch.ones(n, p, dtype=torch.long), real.long()], 1)
    h = bert(inputs_embeds=embeds, attention_mask=mask)[0][:, p:]       # [N, L, H]
    m = real.unsqueeze(-1).to(h.dtype)
    f = F.normalize((h * m).sum(1) / m.sum(1), dim=-1)                 # [N, H]
    return f @ head_w.T + head_b


def test_the_adapted_soft_prompt_predictor_is_the_prompted_transformer():
    model = tiny_text()
    x, y = _ids()
    sp = add_soft_prompt(model, num_virtual_tokens=4)
    assert not sp.training                                 # dropout off when it predicts
    a = soft_prompt_finetune(sp, x, y, steps=3, lr=0.1, head_lr=0.5)
    prompt = a.params[PROMPT]                                           # [4, 32]
    assert not torch.equal(prompt, dict(sp.named_parameters())[PROMPT])
    want = _reference(model.encoder, prompt, a.params["head.weight"], a.params["head.bias"], x)
    torch.testing.assert_close(a(x), want, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(a(x), want, rtol=1e-5, atol=1e-5)         # every call alike
