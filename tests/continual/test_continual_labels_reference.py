"""What trains and what the labels mean, against lists written by hand: the ``lora``
selection (adapters and heads), and the task labels of the Fashion-MNIST experiences (each
class's position in its group), on stand-in images that carry their class."""

from __future__ import annotations

import pytest
import torch

import metaloop.continual.scenarios as scenarios
from metaloop.continual.finetune import select_trainable


def test_the_lora_selection_is_the_adapters_and_every_head():
    params = {n: torch.zeros(1) for n in (
        "body.fc0.base_layer.weight", "body.fc0.lora_A.default.weight",
        "body.fc0.lora_B.default.weight", "body.fc1.weight",
        "heads.A.weight", "heads.A.bias", "heads.B.weight", "heads.B.bias")}
    assert sorted(select_trainable(params, "lora")) == sorted([
        "body.fc0.lora_A.default.weight", "body.fc0.lora_B.default.weight",
        "heads.A.weight", "heads.A.bias", "heads.B.weight", "heads.B.bias"])
    assert sorted(select_trainable(params, "head")) == sorted(
        ["heads.A.weight", "heads.A.bias", "heads.B.weight", "heads.B.bias"])


@pytest.mark.parametrize("setting", ["task", "class"])
def test_fashion_mnist_labels_are_the_position_in_the_group(monkeypatch, setting):
    def fake(root=None, split="train"):
        y = torch.arange(10).repeat(6 if split == "train" else 3)           # [60] or [30]
        x = (y * 20 + 5).to(torch.uint8)[:, None, None].expand(-1, 28, 28)  # class in ink
        return x.contiguous(), y

    monkeypatch.setattr(scenarios, "load_fashion_mnist", fake)
    groups = [(7, 2, 9), (4, 0)]
    exps = scenarios.fashion_mnist_experiences(groups, setting=setting, val_per_class=1)
    for grp, e in zip(groups, exps, strict=True):
        for split in (e.train, e.val, e.test):
            x, y = split
            original = ((x[:, 0] * 255).round().long() - 5) // 20                # [N]
            want = original if setting == "class" else torch.tensor(
                [grp.index(int(c)) for c in original])
            assert set(original.tolist()) == set(grp)
            assert torch.equal(y, want)
