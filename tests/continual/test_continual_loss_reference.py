"""The fine-tuning loss, the replayed examples, the reservoir, the strategies' replay ratios
and the curve's scores against independent computations: the loss and the accuracies written
out in float64 with ``torch.func.functional_call`` and plain tensor arithmetic, the replay
draws counted over many batches, and Algorithm R as a loop."""

from __future__ import annotations

import math

import pytest
import torch
from torch.func import functional_call

from metaloop.continual.finetune import batch_loss, finetune_experience
from metaloop.continual.heads import init_params
from metaloop.continual.replay import (
    Batch,
    empty_buffer,
    full_buffer,
    mixed_batches,
    replay_count,
    reservoir_update,
)
from metaloop.continual.scenarios import Experience
from metaloop.continual.sequence import run_sequence, strategy_options
from metaloop.models import MLP

D = 5


def _exp(name: str, head: str, classes: int, n: int, marker: float) -> Experience:
    x = torch.full((n, D), marker, dtype=torch.float64)
    y = torch.arange(n) % classes
    return Experience(name, head, classes, tuple(range(classes)), (x, y), (x[:0], y[:0]),
                      (x, y))


def _reference_loss(model, params, teacher, x, y, source, heads, kept, temperature):
    """Mean cross-entropy of every example under its own head, plus for each kept head
    ``w T^2 mean_new sum_c p_t (log p_t - log p_s)`` on its outputs, in plain torch."""
    body = {k: v for k, v in params.items() if not k.startswith("heads.")}
    feats = functional_call(model, body, (x,), {"head": False})                  # [B, F]
    ce = []
    for i in range(len(y)):
        h = heads[int(source[i]) + 1]
        logits = feats[i] @ params[f"heads.{h}.weight"].T + params[f"heads.{h}.bias"]
        ce.append(torch.logsumexp(logits, 0) - logits[y[i]])
    loss = torch.stack(ce).sum() / len(y)
    new = source == -1
    t_body = {k: v for k, v in teacher.items() if not k.startswith("heads.")}
    t_feats = functional_call(model, t_body, (x[new],), {"head": False})          # [n, F]
    for h, (w, outputs) in kept.items():
        s = feats[new] @ params[f"heads.{h}.weight"].T + params[f"heads.{h}.bias"]
        t = t_feats @ teacher[f"heads.{h}.weight"].T + teacher[f"heads.{h}.bias"]
        log_ps = torch.log_softmax(s[:, outputs] / temperature, -1)
        log_pt = torch.log_softmax(t[:, outputs] / temperature, -1)
        kl = (log_pt.exp() * (log_pt - log_ps)).sum(-1).mean()
        loss = loss + w * temperature ** 2 * kl
    return loss


def test_batch_loss_and_its_gradient_match_the_loss_written_out():
    torch.manual_seed(0)
    model = MLP(D, (7,), 1).double()
    exps = [_exp("a", "A", 2, 4, 1.0), _exp("b", "B", 3, 4, 2.0), _exp("c", "C", 4, 4, 3.0)]
    teacher = init_params(model, exps, torch.Generator().manual_seed(1))
    g = torch.Generator().manual_seed(2)
    params = {k: (v + 0.3 * torch.randn(v.shape, generator=g, dtype=v.dtype)).requires_grad_()
              for k, v in teacher.items()}                  # the student has drifted
    # five new examples (head C), three replayed from experience 0 (A), two from 1 (B)
    x = torch.randn(10, D, generator=g, dtype=torch.float64)
    source = torch.tensor([-1, -1, -1, -1, -1, 0, 0, 0, 1, 1])
    y = torch.tensor([0, 3, 2, 1, 3, 1, 0, 1, 2, 0])
    heads = ["C", "A", "B"]
    kept = {"A": (0.7, [0, 1]), "B": (1.3, [0, 2])}        # B keeps two of its three outputs
    got = batch_loss(model, params, Batch(x, y, source), heads, kept, teacher, temperature=2.5)
    want = _reference_loss(model, params, teacher, x, y, source, heads, kept, 2.5)
    assert torch.allclose(got, want, rtol=1e-12, atol=1e-12)
    grads = torch.autograd.grad(got, list(params.values()))
    ref = torch.autograd.grad(want, list(params.values()))
    for name, a, b in zip(params, grads, ref, strict=True):
        assert torch.allclose(a, b, rtol=1e-10, atol=1e-12), name
    # without kept heads: only the cross-entropies, so the kept heads' own terms were counted
    plain = batch_loss(model, params, Batch(x, y, source), heads, None, teacher)
    assert torch.allclose(plain, _reference_loss(model, params, teacher, x, y, source, heads,
                                                 {}, 2.5), rtol=1e-12, atol=1e-12)
    assert not torch.allclose(plain, got)


def test_replayed_examples_are_drawn_uniformly_from_the_buffer_with_their_sources():
    earlier = [_exp("a", "A", 2, 6, 1.0), _exp("b", "B", 2, 14, 2.0)]
    buffer = full_buffer(earlier)
    buffer = buffer._replace(x=buffer.x + torch.arange(20, dtype=torch.float64)[:, None] * 10)
    new_x = torch.full((30, D), -1.0, dtype=torch.float64)
    new_y = torch.zeros(30, dtype=torch.int64)
    batches = mixed_batches(new_x, new_y, buffer, 16, 0.25, torch.Generator().manual_seed(0))
    counts = torch.zeros(20)
    steps = 1000
    for t in range(steps):
        b = next(batches)
        k = replay_count(t, 16, 0.25)
        old = b.x[16 - k:, 0]
        assert (old > 0).all() and (b.x[:16 - k, 0] == -1).all()
        index = ((old - 1) / 10).floor().long()                    # buffer row, [k]
        assert torch.equal(b.source[16 - k:], buffer.source[index])   # each with its own source
        assert torch.equal(b.y[16 - k:], buffer.y[index])
        counts += torch.bincount(index, minlength=20)
    expected = steps * 4 / 20                                        # 4 replayed per batch
    chi2 = float(((counts - expected) ** 2 / expected).sum())
    assert chi2 < 45, (chi2, counts.tolist())                        # 19 dof: p < 1e-3


def _algorithm_r(items: list[int], size: int, seen: int, draws: torch.Tensor) -> list[int]:
    """Vitter's Algorithm R over ``items`` (the stream after ``seen`` earlier items), the
    ``n``-th item replacing slot ``floor(u (n + 1))`` when that is below ``size``."""
    kept, d = [], iter(draws.tolist())
    for offset, item in enumerate(items):
        n = seen + offset
        if n < size:
            kept.append(item)
            continue
        j = math.floor(next(d) * (n + 1))
        if j < size:
            kept[j] = item
    return kept


@pytest.mark.parametrize("seed", range(4))
def test_reservoir_matches_algorithm_r_written_as_a_loop(seed):
    n, size = 40, 7
    x = torch.arange(n, dtype=torch.float64)[:, None]
    y = torch.zeros(n, dtype=torch.int64)
    buf = reservoir_update(empty_buffer(x), x, y, 0, size, torch.Generator().manual_seed(seed))
    draws = torch.rand(n - size, generator=torch.Generator().manual_seed(seed),
                       dtype=torch.float64)
    assert buf.x[:, 0].long().tolist() == _algorithm_r(list(range(n)), size, 0, draws)
    assert buf.seen == n


def test_balanced_and_joint_replay_ratios_on_the_third_experience():
    # van de Ven et al.'s balance gives the new experience 1/(t+1) of each batch: at t = 2,
    # 2/3 replayed; joint training replays in proportion to the data, (30 + 10) / 60
    exps = [_exp("a", "A", 2, 30, 1.0), _exp("b", "B", 2, 10, 2.0), _exp("c", "C", 2, 20, 3.0)]
    opts = strategy_options("replay", 2, exps, replay_ratio="balanced")
    assert opts["replay_ratio"] == pytest.approx(2 / 3)
    assert strategy_options("replay", 1, exps, replay_ratio="balanced")["replay_ratio"] == 0.5
    assert strategy_options("joint", 2, exps)["replay_ratio"] == pytest.approx(40 / 60)
    assert strategy_options("joint", 1, exps)["replay_ratio"] == pytest.approx(30 / 40)


def _accuracy_by_hand(model, params, head, x, y) -> float:
    body = {k: v for k, v in params.items() if not k.startswith("heads.")}
    feats = functional_call(model, body, (x,), {"head": False})                  # [N, F]
    logits = feats @ params[f"heads.{head}.weight"].T + params[f"heads.{head}.bias"]
    return float((logits.argmax(-1) == y).double().mean())


def test_the_curve_scores_validation_and_test_data_as_written_out():
    # the validation set is the test set with its labels flipped, so that the two
    # accuracies differ (they add up to 1 over an odd number of examples)
    torch.manual_seed(0)
    model = MLP(D, (7,), 1).double()
    g = torch.Generator().manual_seed(3)
    x = torch.randn(40, D, generator=g, dtype=torch.float64)
    y = (x[:, 0] > 0).long()
    new = Experience("b", "B", 2, (0, 1), (x[:33], y[:33]), (x[33:], 1 - y[33:]),
                     (x[33:], y[33:]))
    old = _exp("a", "A", 2, 6, 1.0)
    params = init_params(model, [old, new], torch.Generator().manual_seed(1))
    r = finetune_experience(model, params, new, earlier=[old], replay_ratio=0.0, steps=6,
                            batch_size=8, eval_every=3, lr=0.05, early_stop=5,
                            generator=torch.Generator().manual_seed(0))
    assert r.curve["step"] == [0, 3, 6] and r.best_step in (3, 6)
    test = _accuracy_by_hand(model, r.params, "B", x[33:], y[33:])
    val = _accuracy_by_hand(model, r.params, "B", x[33:], 1 - y[33:])
    i = r.curve["step"].index(r.best_step)
    assert val != test
    assert r.curve["val_accuracy"][i] == pytest.approx(val, abs=1e-12)
    assert r.curve["accuracy"]["b"][i] == pytest.approx(test, abs=1e-12)
    assert r.curve["accuracy"]["a"][i] == pytest.approx(
        _accuracy_by_hand(model, r.params, "A", *old.test), abs=1e-12)
    assert r.curve["val_accuracy"][r.curve["step"].index(r.best_step)] == max(
        r.curve["val_accuracy"][1:])   # the best on validation after a step is what is returned


def test_the_stream_curve_counts_steps_across_experiences():
    # three experiences of 6 steps each, evaluated every 3: experience 1 starts at global
    # step 0 and experience 2 at step 6, each curve point at its global step
    torch.manual_seed(0)
    model = MLP(D, (7,), 1).double()
    exps = [_exp("a", "A", 2, 8, 1.0), _exp("b", "B", 2, 8, 2.0), _exp("c", "C", 2, 8, 3.0)]
    params = init_params(model, exps, torch.Generator().manual_seed(1))
    r = run_sequence(model, params, exps, "replay", steps=6, batch_size=4, eval_every=3,
                     generator=torch.Generator().manual_seed(0))
    assert r.boundaries == [0, 6]
    assert [(c["experience"], c["step"]) for c in r.curve] == [
        (1, 0), (1, 3), (1, 6), (2, 6), (2, 9), (2, 12)]
    assert [sorted(c["accuracy"]) for c in r.curve] == [["a", "b"]] * 3 + [["a", "b", "c"]] * 3
