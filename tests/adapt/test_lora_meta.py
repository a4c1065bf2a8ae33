"""Meta-learning over LoRA: a parameter partition makes MAML / Reptile adapt and meta-learn
only the LoRA adapters and the head; the pretrained weights never move."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

from metaloop.adapt.lora import is_lora
from metaloop.meta.lora_meta import lora_learner, trainable_only
from metaloop.models import Conv4
from metaloop.tasks.batch import TaskBatch

pytest.importorskip("peft", reason="LoRA needs the text extra: pip install -e '.[text]'")
transformers = pytest.importorskip("transformers", reason="pip install -e '.[text]'")

sys.path.insert(0, str(Path(__file__).parent))
from _text_models import tiny_text  # noqa: E402


def _batch(b=2, ways=3, shots=1, queries=2, length=6):
    g = torch.Generator().manual_seed(0)
    sx = torch.randint(1, 60, (b, ways * shots, length), generator=g).float()
    qx = torch.randint(1, 60, (b, ways * queries, length), generator=g).float()
    sy = torch.arange(ways).repeat_interleave(shots).expand(b, -1).contiguous()
    qy = torch.arange(ways).repeat_interleave(queries).expand(b, -1).contiguous()
    return TaskBatch(sx, sy, qx, qy)


def test_trainable_only_turns_the_rest_into_buffers():
    model = Conv4(1, 8, out_dim=3)
    part = trainable_only(model, lambda n: n.startswith("head."))
    assert [n for n, _ in part.named_parameters()] == ["head.weight", "head.bias"]
    assert "body.0.conv.weight" in dict(part.named_buffers())
    x = torch.rand(4, 1, 28, 28)
    assert torch.equal(part(x), model(x))
    assert len(list(model.parameters())) == 18                      # the original is intact
    with pytest.raises(ValueError, match="keeps no parameter"):
        trainable_only(model, ["nope"])


@pytest.mark.parametrize("method", ["fomaml", "maml", "reptile"])
def test_meta_learning_moves_only_lora_and_the_inner_loop_adapts_only_lora_and_head(method):
    model = tiny_text()
    learner = lora_learner(model, method, r=2, target_modules=["query", "value"],
                           inner_lr=0.5, inner_steps=2, head_init="learned")
    names = [n for n, _ in learner.model.named_parameters()]
    assert names and all(is_lora(n) or n.startswith("head.") for n in names)
    frozen = {n: b.clone() for n, b in learner.model.named_buffers()}
    start = {n: p.detach().clone() for n, p in learner.model.named_parameters()}
    batch = _batch()
    grads, metrics = learner.meta_gradient(batch, with_metrics=True)
    assert set(grads) == set(names) and "accuracy" in metrics
    opt = torch.optim.Adam(learner.model.parameters(), lr=1e-2)
    for n, p in learner.model.named_parameters():
        p.grad = grads[n]
    opt.step()
    assert any(not torch.equal(p, start[n]) for n, p in learner.model.named_parameters()
               if ".lora_" in n)
    for n, b in learner.model.named_buffers():
        assert torch.equal(b, frozen[n]), n                       # pretrained weights fixed
    adapted = learner.adapt(*batch.task(0)[:2])
    assert set(adapted) == set(names)                           # the inner loop's partition
    assert learner.predict(adapted, batch.query_x[0]).shape == (6, 3)


def test_zero_head_meta_learns_lora_alone_and_unknown_methods_fail():
    learner = lora_learner(tiny_text(), "fomaml", r=2, inner_lr=0.5, inner_steps=2)
    grads = learner.meta_gradient(_batch())
    assert float(grads["head.weight"].abs().max()) == 0.0         # a new zero head per task
    assert any(float(g.abs().max()) > 0 for n, g in grads.items() if ".lora_" in n)
    with pytest.raises(ValueError, match="method must be one of"):
        lora_learner(tiny_text(), "anil")


@pytest.mark.parametrize("scale", [float("inf"), float("nan"), 0.0, -1.0, True])
def test_a_logit_scale_that_is_not_a_finite_positive_number_is_named(scale):
    """inf was accepted: every inner and outer loss was NaN (inf x a zero head's logits)."""
    with pytest.raises(ValueError, match="logit_scale must be a finite number > 0"):
        lora_learner(tiny_text(), "fomaml", r=2, logit_scale=scale)
