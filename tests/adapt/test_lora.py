"""Approach 3a, LoRA through peft: identity at init, merge, what trains, named errors."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

from metaloop.adapt.lora import adaptable_layers, add_lora, is_lora, lora_finetune, merge_lora
from metaloop.func.params import forward
from metaloop.models import Conv4

pytest.importorskip("peft", reason="LoRA needs the text extra: pip install -e '.[text]'")
transformers = pytest.importorskip("transformers", reason="pip install -e '.[text]'")

sys.path.insert(0, str(Path(__file__).parent))
from _checks import TiedHead  # noqa: E402
from _text_models import tiny_text  # noqa: E402


def _ids(n=6, length=9, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(1, 60, (n, length), generator=g).float()
    x[0, 5:] = 0                                                        # some padding
    return x


CASES = {
    "conv4": (lambda: Conv4(1, 8, out_dim=3), ["conv"],
              lambda: torch.rand(6, 1, 28, 28, generator=torch.Generator().manual_seed(0))),
    "bert": (tiny_text, ["query", "value"], _ids),
}


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("case", CASES)
def test_lora_at_init_and_merged_lora_leave_outputs_unchanged(case, dtype):
    """1e-6 on the logits. In float32 folding B A into W rounds differently from computing
    W x + B A x, and Conv4's batch normalisation amplifies that to ~1e-6, so float32 gets
    1e-5 there; float64 shows the merge is exact."""
    make, targets, data = CASES[case]
    model, x, y = make().to(dtype), data(), torch.arange(3).repeat(2)
    x = x.to(dtype) if case == "conv4" else x
    tol = 1e-5 if dtype == torch.float32 and case == "conv4" else 1e-6
    lora = add_lora(model, r=4, target_modules=targets)
    torch.testing.assert_close(lora(x), model(x), atol=1e-6, rtol=0)
    assert not any(is_lora(n) for n, _ in model.named_parameters())   # original untouched
    a = lora_finetune(lora, x, y, steps=5, lr=1e-2, head_lr=1e-1)
    assert any(float(t.abs().max()) > 0 for n, t in a.params.items() if ".lora_B." in n)
    merged = merge_lora(lora, a.params)
    assert not any("lora" in n or "base_layer" in n for n in merged.state_dict())
    assert sorted(merged.state_dict()) == sorted(model.state_dict())    # a plain model
    torch.testing.assert_close(merged(x), a(x), atol=tol, rtol=0)
    torch.testing.assert_close(merge_lora(lora)(x), model(x), atol=1e-6, rtol=0)


def test_only_lora_and_the_head_train_and_counts_are_reported():
    model = Conv4(1, 8, out_dim=5)
    lora = add_lora(model, r=2, target_modules=["body.0.conv", "body.3.conv"])
    x, y = CASES["conv4"][2](), torch.arange(3).repeat(2)
    a = lora_finetune(lora, x, y, steps=2)
    start = dict(lora.named_parameters())
    for n, t in a.params.items():
        if not (is_lora(n) or n.startswith("head.")):
            assert torch.equal(t, start[n]), n
    # lora_A: Conv2d(cin, r, 3x3, no bias); lora_B: Conv2d(r, cout, 1x1, no bias)
    expected = (2 * 1 * 9 + 8 * 2) + (2 * 8 * 9 + 8 * 2) + 3 * lora.feature_dim + 3
    assert a.trainable == expected
    assert sorted(n for n in a.names if is_lora(n)) == sorted(n for n in start if is_lora(n))


def test_target_modules_that_match_nothing_list_the_available_names():
    model = Conv4(1, 8)
    with pytest.raises(ValueError, match=r"\['attn'\] match no Linear or Conv layer of Conv4; "
                                         r"available: \['body.0.conv', 'body.1.conv'"):
        add_lora(model, target_modules=["conv", "attn"])
    assert adaptable_layers(tiny_text())[:2] == ["encoder.encoder.layer.0.attention.self.query",
                                                   "encoder.encoder.layer.0.attention.self.key"]
    with pytest.raises(ValueError, match="LoRA rank r must be a positive int"):
        add_lora(model, r=0)


def test_lora_finetune_needs_adapters():
    model = Conv4(1, 8)
    with pytest.raises(ValueError, match="^lora_finetune: Conv4 has no LoRA parameters; call "
                                         "add_lora first"):
        lora_finetune(model, torch.rand(3, 1, 28, 28), torch.arange(3))
    with pytest.raises(ValueError, match="has no LoRA layers to merge"):
        merge_lora(model)
    lora = add_lora(model, r=2, target_modules=["conv"])
    with pytest.raises(ValueError, match="^lora_finetune: the support set is empty"):
        lora_finetune(lora, torch.rand(0, 1, 28, 28), torch.zeros(0, dtype=torch.int64))
    with pytest.raises(ValueError, match="^lora_finetune: steps must be a non-negative int"):
        lora_finetune(lora, torch.rand(3, 1, 28, 28), torch.arange(3), steps=-1)
    out = forward(lora, dict(lora.named_parameters()), torch.rand(2, 1, 28, 28))
    assert out.shape == (2, 5)


def test_a_model_with_adapters_is_refused():
    """add_lora on a LoRA model (plain or meta-learned) nested peft adapters, with peft's
    'multiple adapters' warning, as it did on merge_lora's plain model (which kept peft's
    peft_config); it is a model without adapters that takes them."""
    from metaloop.meta.lora_meta import lora_learner
    lora = add_lora(Conv4(1, 8), r=2, target_modules=["conv"])
    with pytest.raises(ValueError, match="Conv4 already has LoRA adapters"):
        add_lora(lora, r=2, target_modules=["conv"])
    meta = lora_learner(tiny_text(), "fomaml", r=2).model          # adapters and buffers
    with pytest.raises(ValueError, match="TextEncoder already has LoRA adapters"):
        add_lora(meta, r=2)
    plain = merge_lora(lora)          # no adapters and no peft_config left: peft warned
    assert not any(is_lora(n) for n in plain.state_dict()) and not hasattr(plain, "peft_config")
    again = add_lora(plain, r=2, target_modules=["conv"])
    assert sum(is_lora(n) for n, _ in again.named_parameters()) == 8    # A and B, 4 convs


def test_a_head_tied_to_the_embedding_gets_no_adapters():
    # the head's weight goes by the embedding's name (embed.weight): the layer left out was
    # taken from that name, so the output layer was given LoRA
    new = add_lora(TiedHead(), r=2)
    adapted = sorted({n.partition(".lora_")[0] for n, _ in new.named_parameters() if is_lora(n)})
    assert adapted == ["body"]
