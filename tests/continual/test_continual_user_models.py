"""Continual fine-tuning with the user's own body networks: a body with dropout is scored,
and distilled from, with dropout off; the body's own head is its ``head`` module wherever
it is registered; and a body the functions cannot use (no ``head`` keyword, torch
BatchNorm that would update running statistics on the model) is refused by name."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from metaloop.continual.finetune import batch_loss, evaluate_experiences, finetune_experience
from metaloop.continual.heads import init_params
from metaloop.continual.replay import Batch
from metaloop.continual.scenarios import Experience
from metaloop.continual.sequence import run_sequence, with_lora


def stream() -> list[Experience]:
    """Two two-class experiences of 8-d Gaussian blobs, 20 train / 10 val / 20 test each."""
    g = torch.Generator().manual_seed(0)
    centres = torch.randn(4, 8, generator=g) * 2
    out = []
    for t in range(2):
        y = torch.arange(2).repeat(25)                                   # [50]
        x = centres[2 * t + y] + torch.randn(50, 8, generator=g)         # [50, 8]
        out.append(Experience(f"e{t}", f"h{t}", 2, (0, 1), (x[:20], y[:20]),
                              (x[20:30], y[20:30]), (x[30:], y[30:])))
    return out


class DropoutBody(nn.Module):
    def __init__(self, norm: nn.Module | None = None):
        super().__init__()
        self.fc = nn.Linear(8, 32)
        self.norm = norm if norm is not None else nn.Identity()
        self.drop = nn.Dropout(0.5)
        self.head = nn.Linear(32, 1)

    def forward(self, x, head=True):
        h = self.drop(torch.relu(self.norm(self.fc(x))))
        return self.head(h) if head else h


class NoHeadKeyword(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(8, 16)
        self.out = nn.Linear(16, 1)

    def forward(self, x):
        return torch.relu(self.fc(x))


def test_a_body_with_dropout_is_scored_with_dropout_off_and_keeps_its_mode():
    torch.manual_seed(0)
    model = DropoutBody()                                 # a new module: training mode
    exps = stream()
    params = init_params(model, exps, torch.Generator().manual_seed(0))
    scores = [evaluate_experiences(model, params, exps) for _ in range(5)]
    assert all(s == scores[0] for s in scores)           # no dropout noise in the scores
    model.eval()
    assert evaluate_experiences(model, params, exps) == scores[0]
    model.train()
    assert model.training and model.drop.training        # its mode is restored
    res = finetune_experience(model, params, exps[0], replay_ratio=0.0, steps=4,
                              batch_size=8, eval_every=2)
    model.eval()
    want = evaluate_experiences(model, res.params, exps[:1])["e0"]
    assert res.curve["accuracy"]["e0"][-1] == want      # the curve is scored the same way


def test_a_body_without_a_head_keyword_is_named():
    exps = stream()
    with pytest.raises(ValueError, match=r"NoHeadKeyword.forward\(x\) has no head keyword"):
        init_params(NoHeadKeyword(), exps)
    params = init_params(DropoutBody(), exps)
    with pytest.raises(ValueError, match="no head keyword"):
        finetune_experience(NoHeadKeyword(), params, exps[0], replay_ratio=0.0, steps=1)


def test_torch_batchnorm_with_running_statistics_in_training_mode_is_named():
    exps = stream()
    model = DropoutBody(nn.BatchNorm1d(32))
    with pytest.raises(ValueError, match=r"norm \(BatchNorm1d\).*track_running_stats"):
        init_params(model, exps)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    model.eval()                                          # frozen statistics: accepted
    params = init_params(model, exps, torch.Generator().manual_seed(0))
    res = run_sequence(model, params, exps, "replay", steps=4, batch_size=8, eval_every=2,
                       generator=torch.Generator().manual_seed(0))
    assert res.matrix.shape == (2, 2)
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())
    model.train()
    with pytest.raises(ValueError, match="track_running_stats"):
        run_sequence(model, params, exps, "naive", steps=2, batch_size=8)
    # without running statistics it normalises by the batch and mutates nothing: accepted
    free = DropoutBody(nn.BatchNorm1d(32, track_running_stats=False))
    init_params(free, exps)


class HeadFirst(nn.Module):
    """A body whose own ``head`` is registered before its layers: its last ``nn.Linear``
    is ``g``, a body layer, not the head."""

    def __init__(self):
        super().__init__()
        self.head = nn.Linear(16, 1)
        self.f = nn.Linear(8, 16)
        self.g = nn.Linear(16, 16)

    def forward(self, x, head=True):
        h = torch.relu(self.g(torch.relu(self.f(x))))
        return self.head(h) if head else h


def test_the_own_head_is_the_head_module_wherever_it_is_registered():
    torch.manual_seed(0)
    model, exps = HeadFirst(), stream()
    params = init_params(model, exps, torch.Generator().manual_seed(0))
    assert sorted(k for k in params if not k.startswith("heads.")) == [
        "f.bias", "f.weight", "g.bias", "g.weight"]
    res = finetune_experience(model, params, exps[0], replay_ratio=0.0, steps=3,
                              batch_size=8, eval_every=3)
    assert not torch.equal(res.params["g.weight"], params["g.weight"])   # g trains
    body, start = with_lora(model, params, rank=2, generator=torch.Generator().manual_seed(0))
    adapted = sorted(k.split(".")[0] for k in start if ".lora_A." in k)
    assert adapted == ["f", "g"]                                       # not the own head


def test_the_kept_heads_teacher_runs_without_dropout():
    """With dropout p = 1 a training-mode pass zeroes the features; the teacher's targets
    must be the eval-mode (scored) model's logits, not the bias alone."""
    torch.manual_seed(0)
    model = DropoutBody()
    model.drop.p = 1.0
    exps = stream()
    params = init_params(model, exps, torch.Generator().manual_seed(0))
    x = exps[1].train[0][:6]                                               # [6, 8]
    batch = Batch(x, exps[1].train[1][:6], torch.full((6,), -1))
    kept = {"h0": (1.0, [0, 1])}
    got = batch_loss(model, params, batch, ["h1", "h0"], kept, params, temperature=2.0)
    model.eval()
    feats = model(x, head=False)                                   # the model as scored
    model.train()
    w0, b0 = params["heads.h0.weight"], params["heads.h0.bias"]
    b1 = params["heads.h1.bias"]                                   # h1 sees zero features
    student = b0.expand(6, 2) / 2                                  # zero features: the bias
    teacher = (feats @ w0.T + b0) / 2
    kl = (teacher.softmax(-1) * (teacher.log_softmax(-1) - student.log_softmax(-1))).sum(-1)
    ce = F.cross_entropy(b1.expand(6, 2), batch.y)
    torch.testing.assert_close(got, ce + 4 * kl.mean())
    assert model.training
