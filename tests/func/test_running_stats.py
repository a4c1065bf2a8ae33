"""What docs/concepts.md says of a torch BatchNorm's running statistics: a training-mode
layer updates them on every call, as any training-mode forward does; a layer in eval mode,
or built with track_running_stats=False, leaves the model exactly as it was."""

from pathlib import Path

import pytest
import torch
from torch import nn

import metaloop as ml


class BNNet(nn.Module):
    def __init__(self, track=True):
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3, padding=1)
        self.bn = nn.BatchNorm2d(4, track_running_stats=track)
        self.head = nn.Linear(4, 3)

    def forward(self, x, head=True):
        h = torch.relu(self.bn(self.conv(x))).mean((2, 3))
        return self.head(h) if head else h


def _changed(model, before):
    return sorted(k for k, v in model.state_dict().items() if not torch.equal(v, before[k]))


def _run_everything(model):
    learner = ml.meta.MAML(model, inner_lr=0.1, loss="ce", batching="loop")
    y = torch.arange(3).repeat(2)
    g = torch.Generator().manual_seed(0)
    batch = ml.TaskBatch(torch.randn(2, 6, 1, 5, 5, generator=g), y[None].repeat(2, 1),
                         torch.randn(2, 6, 1, 5, 5, generator=g), y[None].repeat(2, 1))
    learner.meta_loss(batch)
    learner.predict(learner.adapt(batch.support_x[0], y), batch.query_x[0])
    fam = ml.tasks.Episodes(torch.randn(30, 1, 5, 5, generator=g), torch.arange(3).repeat(10),
                            ways=3, shots=1, queries=2)
    ml.evaluate(learner, fam, tasks=2, steps=(0, 1), progress=False)


@pytest.mark.parametrize("how", ["eval mode", "track_running_stats=False"])
def test_batchnorm_kept_out_of_training_mode_leaves_the_model_as_it_was(how):
    model = BNNet(track=how == "eval mode")
    if how == "eval mode":
        model.bn.eval()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    _run_everything(model)
    assert _changed(model, before) == []


def test_training_mode_batchnorm_updates_its_running_statistics_as_documented():
    model = BNNet()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    _run_everything(model)
    assert _changed(model, before) == ["bn.num_batches_tracked", "bn.running_mean",
                                       "bn.running_var"]
    doc = (Path(__file__).parents[2] / "docs" / "concepts.md").read_text()
    assert "updates its `running_mean`, `running_var`" in doc
    assert "`track_running_stats=False`" in doc
