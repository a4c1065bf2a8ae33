"""The adaptation recipe: one task has no 95% CI (``metaloop adapt --tasks 1`` printed
``83.33 ± 0.00``); the default LoRA targets of an image model."""

import pytest
import torch

from metaloop.evaluate import mean_ci
from metaloop.recipes import adapt as recipe


def test_one_task_prints_no_ci(tmp_path):
    acc = [5 / 6]
    m, c = mean_ci(acc)
    res = {"lora": {"approach": 3, "accuracy": {"mean": m, "ci95": c}, "trainable": 10,
                    "adapt_seconds": 0.1, "per_task": {"accuracy": acc}},
           "meta-lora-fomaml": {"approach": 3, "accuracy": {"mean": 1.0, "ci95": None},
                                "trainable": 10, "adapt_seconds": 0.1,
                                "per_task": {"accuracy": [1.0]}}}
    text = recipe.table(res)
    assert "83.33 ± n/a" in text and "± 0.00" not in text
    diffs = recipe.paired(res, [("meta-lora-fomaml", "lora")])
    assert diffs["meta-lora-fomaml - lora"]["ci95"] is None
    assert "+16.67 ± n/a points" in recipe.paired_lines(diffs)
    recipe.bar_chart(res, tmp_path / "a.png", "t")
    assert (tmp_path / "a.png").read_bytes()[:4] == b"\x89PNG"


def test_the_default_lora_targets_of_an_image_model_are_its_convolutions():
    """The default was ``conv``, which names only Conv4's layers: a ResNet-12 run stopped
    every ``metaloop adapt`` without --approaches (or with lora, or --meta) with 'LoRA target
    modules ['conv'] match no Linear or Conv layer of ResNet12'."""
    pytest.importorskip("peft", reason="LoRA needs the text extra: pip install -e '.[text]'")
    from metaloop.adapt.lora import is_lora
    from metaloop.models import Conv4, ResNet12

    s = recipe.AdaptSettings(family="omniglot", approaches="lora", steps=1)
    assert recipe._lora_targets(s, "image", Conv4(1, 4)) == ["conv"]      # as stored before
    model = ResNet12(1, width=2, out_dim=3)
    assert recipe._lora_targets(s, "image", model) == ["conv1", "conv2", "conv3", "shortcut"]
    fn = recipe.strategies(s, model, "image", None)["lora"][1]
    adapted = fn(torch.rand(3, 1, 28, 28), torch.arange(3), None)
    layers = {n.split(".lora_")[0] for n in adapted.names if is_lora(n)}
    assert len(layers) == 16 and adapted(torch.rand(2, 1, 28, 28)).shape == (2, 3)
    assert recipe._lora_targets(recipe.AdaptSettings(lora_targets="conv1"), "image",
                                model) == ["conv1"]


@pytest.mark.parametrize("change, message", [
    ({"seed": 10**15}, r"seed 1000000000000000 is too large: .*seed \* 100003 \+ tasks"),
    ({"split_seed": 2**64}, r"split_seed 18446744073709551616 is too large"),
    ({"seed": -1}, r"seed must be an int >= 0, got -1"),
    ({"split_seed": True}, r"split_seed must be an int >= 0, got True"),
    ({"seed": None}, r"seed must be an int >= 0, got None"),     # was a TypeError: the bound
    ({"seed": "3"}, r"seed must be an int >= 0, got '3'"),       # was computed before the check
])
def test_a_seed_torch_cannot_take_is_named_before_the_model_loads(change, message):
    """``--seed 10**15`` failed after the model had loaded with torch's "Overflow when
    unpacking long long", naming no setting."""
    s = recipe.AdaptSettings(family="omniglot", model="no/such/model", **change)
    with pytest.raises(ValueError, match=message):
        recipe.prepare(s)
    with pytest.raises(ValueError, match="no/such/model"):         # the seeds pass: the model
        recipe.prepare(recipe.AdaptSettings(family="omniglot", model="no/such/model",
                                            seed=2**40))
