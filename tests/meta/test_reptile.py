"""Reptile's published protocol (Nichol et al. 2018) as flags: inner Adam with beta1 = 0 on
mini-batches of the support set, test-time adaptation by the same rule, non-transductive
scoring (BatchNorm with the support set's statistics), and the outer SGD step decaying
linearly from 1.0.

The references are independent of metaloop's inner loops: ``torch.optim.Adam`` / plain SGD on
a copy of the network, the mini-batches drawn from the same seed by an explicit loop, and the
Conv4 forward spelled out with torch.nn.functional.
"""

from __future__ import annotations

import copy
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

import metaloop as ml
from metaloop.meta import Reptile
from metaloop.meta.reptile import STATS, minibatches
from metaloop.models import MLP, Conv4

sys.path.insert(0, str(Path(__file__).parent))
from _reference import image_task_batch  # noqa: E402

pytestmark = pytest.mark.usefixtures("float64")


def _regression_batch(B=3, S=8, Q=5, seed=0):
    g = torch.Generator().manual_seed(seed)
    return ml.TaskBatch(torch.randn(B, S, 1, generator=g), torch.randn(B, S, 1, generator=g),
                        torch.randn(B, Q, 1, generator=g), torch.randn(B, Q, 1, generator=g))


def _ref_batches(seed, n, size, steps):
    """The mini-batch indices, drawn element by element from successive permutations."""
    g = torch.Generator().manual_seed(seed)
    out, cur, perm = [], [], []
    while len(out) < steps:
        if not perm:
            perm = torch.randperm(n, generator=g).tolist()
        cur.append(perm.pop(0))
        if len(cur) == size:
            out.append(cur)
            cur = []
    return out


def _ref_final(model, sx, sy, loss, optimizer, lr, batches):
    """One task's adapted parameters by torch.optim on a copy of ``model``."""
    net = copy.deepcopy(model)
    opt = (torch.optim.Adam(net.parameters(), lr=lr, betas=(0.0, 0.999), eps=1e-8)
           if optimizer == "adam" else torch.optim.SGD(net.parameters(), lr=lr))
    for idx in batches:
        opt.zero_grad()
        loss(net(sx[idx]), sy[idx]).backward()
        opt.step()
    return {n: p.detach() for n, p in net.named_parameters()}


def test_minibatches_cover_every_example_once_per_epoch_and_straddle_epochs():
    g = torch.Generator().manual_seed(3)
    got = minibatches(5, 2, 5, g)                 # 10 draws = two permutations of 5
    flat = torch.cat(got).tolist()
    assert [len(b) for b in got] == [2] * 5
    assert sorted(flat[:5]) == list(range(5)) and sorted(flat[5:]) == list(range(5))
    assert flat == [i for b in _ref_batches(3, 5, 2, 5) for i in b]
    assert all(torch.equal(b, torch.arange(4)) for b in minibatches(4, 0, 3, g))
    assert all(torch.equal(b, torch.arange(4)) for b in minibatches(4, 9, 3, g))


@pytest.mark.parametrize("optimizer,inner_batch", [("adam", 3), ("adam", 0), ("sgd", 3)])
def test_meta_gradient_matches_an_unrolled_torch_optim_reference(optimizer, inner_batch):
    torch.manual_seed(0)
    model = MLP(1, (8, 8), 1)
    steps, lr = 4, 0.01
    learner = Reptile(model, lr, steps, loss="mse", inner_optimizer=optimizer,
                      inner_batch=inner_batch)
    batch = _regression_batch()
    torch.manual_seed(7)
    got = learner.meta_gradient(batch)
    torch.manual_seed(7)                           # the same stream: one seed per task
    ref = {n: torch.zeros_like(p) for n, p in model.named_parameters()}
    for i in range(batch.num_tasks):
        sx, sy, _, _ = batch.task(i)
        if inner_batch:
            seed = int(torch.randint(2**62, (1,)))
            idx = _ref_batches(seed, sx.shape[0], inner_batch, steps)
        else:
            idx = [list(range(sx.shape[0]))] * steps
        final = _ref_final(model, sx, sy, F.mse_loss, optimizer, lr, idx)
        for n, p in model.named_parameters():
            ref[n] += (p.detach() - final[n]) / batch.num_tasks
    for n in ref:
        assert ref[n].abs().max() > 1e-4, n         # the direction is not trivially zero
        torch.testing.assert_close(got[n], ref[n], rtol=1e-9, atol=1e-12)


def test_inner_adam_first_step_has_size_lr_in_every_coordinate():
    # beta1 = 0 with fresh moments: the bias-corrected first step is lr * g / (|g| + eps)
    torch.manual_seed(1)
    model = MLP(1, (4,), 1)
    learner = Reptile(model, 0.05, 1, loss="mse", inner_optimizer="adam")
    batch = _regression_batch(B=1)
    step = learner.meta_gradient(batch)
    moved = torch.cat([v.flatten() for v in step.values()]).abs()
    # lr * |g| / (|g| + 1e-8): at most lr, and lr to 1e-6 wherever |g| > 1e-2
    assert moved.max() <= 0.05 + 1e-12
    assert (moved - 0.05).abs().lt(1e-6).float().mean() > 0.5


def test_test_time_adaptation_uses_the_inner_rule_on_seeded_test_batches():
    torch.manual_seed(2)
    model = MLP(1, (8,), 1)
    learner = Reptile(model, 0.01, 2, loss="mse", inner_optimizer="adam", test_batch=3)
    sx, sy, _, _ = _regression_batch(B=1, S=7).task(0)
    path = list(learner.adapt_path(sx, sy, 6))
    again = list(learner.adapt_path(sx, sy, 6))
    assert len(path) == 7
    ref = _ref_final(model, sx, sy, F.mse_loss, "adam", 0.01, _ref_batches(0, 7, 3, 6))
    for n in ref:
        torch.testing.assert_close(path[-1][n], ref[n], rtol=1e-9, atol=1e-12)
        assert torch.equal(path[-1][n], again[-1][n])        # deterministic evaluation
        assert not path[-1][n].requires_grad
    # the model is never mutated
    assert all(torch.equal(p, path[0][n]) for n, p in model.named_parameters())


def _conv4_fixed_stats_ref(p, x, stats):
    """Max-pool Conv4 with BatchNorm normalising by the given per-layer (mean, var)."""
    for i in range(4):
        b = f"body.{i}."
        x = F.conv2d(x, p[b + "conv.weight"], p[b + "conv.bias"], padding=1)
        mean, var = stats[i]
        x = (x - mean[None, :, None, None]) / torch.sqrt(var[None, :, None, None] + 1e-5)
        x = x * p[b + "bn.weight"][None, :, None, None] + p[b + "bn.bias"][None, :, None, None]
        x = F.max_pool2d(F.relu(x), 2)
    return x.flatten(1) @ p["head.weight"].T + p["head.bias"]


def _support_stats_ref(p, x):
    stats = []
    for i in range(4):
        b = f"body.{i}."
        x = F.conv2d(x, p[b + "conv.weight"], p[b + "conv.bias"], padding=1)
        mean = x.mean((0, 2, 3))
        var = ((x - mean[None, :, None, None]) ** 2).mean((0, 2, 3))
        stats.append((mean, var))
        x = (x - mean[None, :, None, None]) / torch.sqrt(var[None, :, None, None] + 1e-5)
        x = x * p[b + "bn.weight"][None, :, None, None] + p[b + "bn.bias"][None, :, None, None]
        x = F.max_pool2d(F.relu(x), 2)
    return stats


def test_non_transductive_scoring_uses_the_support_statistics_one_query_at_a_time():
    torch.manual_seed(3)
    model = Conv4(1, 4, 3, pool="max", image_size=16)
    batch = image_task_batch(1, 0, 16, ways=3, shots=2, queries=4)
    sx, sy, qx, _ = batch.task(0)
    nt = Reptile(model, 0.001, 3, loss="ce", inner_optimizer="adam", transductive=False)
    tr = Reptile(model, 0.001, 3, loss="ce", inner_optimizer="adam")
    assert (nt.evaluation, tr.evaluation) == ("non-transductive", "transductive")
    params = nt.adapt(sx, sy, 3)
    assert sum(k.startswith(STATS) for k in params) == 8          # 4 layers x (mean, var)
    net = {k: v for k, v in params.items() if not k.startswith(STATS)}
    ref = _conv4_fixed_stats_ref(net, qx, _support_stats_ref(net, sx))
    got = nt.predict(params, qx)
    torch.testing.assert_close(got, ref, rtol=1e-9, atol=1e-10)
    one_by_one = torch.cat([nt.predict(params, qx[j:j + 1]) for j in range(qx.shape[0])])
    torch.testing.assert_close(one_by_one, got, rtol=1e-9, atol=1e-10)
    # transductive scoring (the queries' own batch statistics) differs, and hooks are gone
    trans = tr.predict(tr.adapt(sx, sy, 3), qx)
    assert (trans - got).abs().max() > 1e-3
    assert not any(m._forward_hooks for m in model.modules())


def test_non_transductive_meta_training_reports_non_transductive_query_metrics():
    torch.manual_seed(4)
    model = Conv4(1, 4, 3, pool="max", image_size=16)
    batch = image_task_batch(2, 1, 16, ways=3, shots=2, queries=2)
    nt = Reptile(model, 0.001, 2, loss="ce", inner_optimizer="adam", inner_batch=4,
                 transductive=False)
    loss, metrics = nt.meta_loss(batch)
    loss.backward()
    assert 0.0 <= metrics["accuracy"] <= 1.0 and metrics["loss"] > 0
    assert all(p.grad is not None for p in model.parameters())


def test_outer_sgd_with_step_one_lands_on_the_adapted_parameters():
    # Nichol et al.'s outer step: theta += eps * (theta_final - theta), eps linear from 1.0;
    # the first iteration's eps is 1, so with one task theta becomes that task's theta_final
    torch.manual_seed(5)
    model = MLP(1, (8,), 1)
    learner = Reptile(model, 0.01, 3, loss="mse", inner_optimizer="adam", inner_batch=4)

    class One:
        kind = "regression"

        def sample(self, n, generator=None):
            return _regression_batch(B=n, seed=11)

    sx, sy, _, _ = One().sample(1).task(0)
    # the task's mini-batch seed: from torch's global RNG, which ml.train(seed=0) seeds
    from metaloop.train.loop import torch_seed
    torch.manual_seed(torch_seed(0))
    seed = int(torch.randint(2**62, (1,)))
    expect = _ref_final(model, sx, sy, F.mse_loss, "adam", 0.01, _ref_batches(seed, 8, 4, 3))
    torch.manual_seed(9)                    # the caller's RNG: it changes nothing
    ml.train.train(learner, One(), iterations=1, meta_batch=1, lr=1.0, optimizer="sgd",
                   lr_schedule="linear", progress=False)
    for n, p in model.named_parameters():
        torch.testing.assert_close(p.detach(), expect[n], rtol=1e-9, atol=1e-12)


def test_linear_schedule_decays_from_lr_to_zero():
    from metaloop.train.loop import scheduled_lr
    assert [scheduled_lr(1.0, "linear", it, 4) for it in range(4)] == [1.0, 0.75, 0.5, 0.25]


@pytest.mark.parametrize("kw,match", [
    (dict(inner_optimizer="rmsprop"), "inner_optimizer must be"),
    (dict(inner_batch=-1), "inner_batch must be an int >= 0"),
    (dict(test_batch=1.5), "test_batch must be an int >= 0"),
    (dict(inner_optimizer="adam", batching="vmap"),
     r"^batching='vmap' needs plain SGD on whole support sets, not inner_optimizer='adam'; "
     r"use 'loop' or 'auto'$"),
    # only the settings that are not plain are named (not inner_optimizer='sgd')
    (dict(inner_batch=2, batching="vmap"),
     r"^batching='vmap' needs plain SGD on whole support sets, not inner_batch=2; use"),
    (dict(inner_optimizer="adam", test_batch=3, batching="vmap"),
     r"not inner_optimizer='adam', test_batch=3; use 'loop' or 'auto'$"),
])
def test_bad_flags_are_named(kw, match):
    with pytest.raises(ValueError, match=match):
        Reptile(MLP(1, (4,), 1), 0.01, 2, **kw)


# --- adam_state="shared": one inner Adam runs on through the tasks (Nichol et al.'s code) ---

def _ref_shared_run(model, batches_x, batches_y, lr, eps_outer, steps, inner_batch, seeds):
    """Reptile as the reference code runs it: ONE torch.optim.Adam over a copy of the network;
    each task restores the weights (not the optimizer) to theta_0 and takes its steps; the
    outer step interpolates theta_0 toward the tasks' mean. Returns (net, optimizer)."""
    net = copy.deepcopy(model)
    opt = torch.optim.Adam(net.parameters(), lr=lr, betas=(0.0, 0.999), eps=1e-8)
    seed_iter = iter(seeds)
    for bx, by in zip(batches_x, batches_y):
        old = {n: p.detach().clone() for n, p in net.named_parameters()}
        finals = []
        for sx, sy in zip(bx, by):
            with torch.no_grad():
                for n, p in net.named_parameters():
                    p.copy_(old[n])
            idx = (_ref_batches(next(seed_iter), sx.shape[0], inner_batch, steps) if inner_batch
                   else [list(range(sx.shape[0]))] * steps)
            for i in idx:
                opt.zero_grad()
                F.mse_loss(net(sx[i]), sy[i]).backward()
                opt.step()
            finals.append({n: p.detach().clone() for n, p in net.named_parameters()})
        with torch.no_grad():
            for n, p in net.named_parameters():
                mean = sum(f[n] for f in finals) / len(finals)
                p.copy_(old[n] + eps_outer * (mean - old[n]))
    return net, opt


@pytest.mark.parametrize("inner_batch", [0, 3])
def test_shared_adam_state_matches_one_torch_optim_adam_through_tasks_and_iterations(
        inner_batch):
    torch.manual_seed(0)
    model = MLP(1, (8, 8), 1)
    steps, lr, eps_outer = 3, 0.01, 0.5
    learner = Reptile(model, lr, steps, loss="mse", inner_optimizer="adam",
                      inner_batch=inner_batch, adam_state="shared")
    batches = [_regression_batch(B=3, seed=s) for s in (1, 2)]
    torch.manual_seed(7)
    for b in batches:                                   # outer SGD: theta -= eps * direction
        g = learner.meta_gradient(b)
        with torch.no_grad():
            for n, p in model.named_parameters():
                p -= eps_outer * g[n]
    torch.manual_seed(7)                                # the same per-task seeds
    seeds = [int(torch.randint(2**62, (1,))) for _ in range(6)] if inner_batch else []
    ref_model = copy.deepcopy(model)
    torch.manual_seed(0)
    start = MLP(1, (8, 8), 1)
    net, opt = _ref_shared_run(start, [[b.task(i)[0] for i in range(3)] for b in batches],
                               [[b.task(i)[1] for i in range(3)] for b in batches],
                               lr, eps_outer, steps, inner_batch, seeds)
    for n, p in net.named_parameters():
        torch.testing.assert_close(ref_model.state_dict()[n], p.detach(), rtol=1e-9,
                                   atol=1e-12)
    # the learner's state is the reference optimizer's: 6 tasks x 3 steps, and its moments
    state = learner.extra_state()
    assert int(state["t"]) == 6 * steps
    for n, p in net.named_parameters():
        torch.testing.assert_close(state[f"v.{n}"], opt.state[p]["exp_avg_sq"], rtol=1e-9,
                                   atol=1e-15)


def test_shared_state_differs_from_fresh_moments():
    torch.manual_seed(0)
    batches = [_regression_batch(B=2, seed=s) for s in (1, 2)]
    moved = {}
    for mode in ("task", "shared"):
        torch.manual_seed(0)
        learner = Reptile(MLP(1, (8,), 1), 0.01, 3, loss="mse", inner_optimizer="adam",
                          adam_state=mode)
        learner.meta_gradient(batches[0])
        moved[mode] = learner.meta_gradient(batches[1])
    gap = max((moved["task"][n] - moved["shared"][n]).abs().max() for n in moved["task"])
    assert gap > 1e-4


def test_test_tasks_adapt_from_a_copy_of_the_shared_state_and_leave_it_unchanged():
    torch.manual_seed(2)
    model = MLP(1, (8,), 1)
    learner = Reptile(model, 0.01, 2, loss="mse", inner_optimizer="adam", test_batch=3,
                      adam_state="shared")
    learner.meta_gradient(_regression_batch(B=2, seed=4))       # some training state
    before = {k: v.clone() for k, v in learner.extra_state().items()}
    sx, sy, _, _ = _regression_batch(B=1, S=7, seed=5).task(0)
    path = list(learner.adapt_path(sx, sy, 6))
    again = list(learner.adapt_path(sx, sy, 6))
    after = learner.extra_state()
    assert set(after) == set(before) and all(torch.equal(after[k], before[k]) for k in before)
    # reference: torch.optim.Adam continuing from the same moments and step count
    net = copy.deepcopy(model)
    opt = torch.optim.Adam(net.parameters(), lr=0.01, betas=(0.0, 0.999), eps=1e-8)
    for n, p in net.named_parameters():
        opt.state[p] = {"step": before["t"].to(torch.float64).clone(),
                        "exp_avg": before[f"m.{n}"].clone(),
                        "exp_avg_sq": before[f"v.{n}"].clone()}
    for idx in _ref_batches(0, 7, 3, 6):
        opt.zero_grad()
        F.mse_loss(net(sx[idx]), sy[idx]).backward()
        opt.step()
    for n, p in net.named_parameters():
        torch.testing.assert_close(path[-1][n], p.detach(), rtol=1e-9, atol=1e-12)
        assert torch.equal(path[-1][n], again[-1][n])
    fresh = Reptile(model, 0.01, 2, loss="mse", inner_optimizer="adam", test_batch=3)
    gap = max((list(fresh.adapt_path(sx, sy, 6))[-1][n] - path[-1][n]).abs().max()
              for n in path[-1])
    assert gap > 1e-5                                   # the state matters at test time


def test_shared_state_resumes_exactly_from_a_checkpoint(tmp_path):
    class Stream:
        kind = "regression"

        def sample(self, n, generator=None):
            x = torch.randn(n, 6, 1, generator=generator)
            return ml.TaskBatch(x[:, :4], torch.sin(x[:, :4]), x[:, 4:], torch.sin(x[:, 4:]))

    def learner():
        torch.manual_seed(0)
        return Reptile(MLP(1, (8,), 1), 0.01, 2, loss="mse", inner_optimizer="adam",
                       adam_state="shared")

    kw = dict(meta_batch=2, lr=0.5, optimizer="sgd", progress=False)
    whole = learner()
    ml.train.train(whole, Stream(), iterations=4, **kw)
    ml.train.train(learner(), Stream(), iterations=2, out_dir=tmp_path, **kw)  # stops at 2
    resumed = learner()
    ml.train.train(resumed, Stream(), iterations=4, out_dir=tmp_path, resume=True, **kw)
    for n, p in whole.model.named_parameters():
        assert torch.equal(p, dict(resumed.model.named_parameters())[n])
    a, b = whole.extra_state(), resumed.extra_state()
    assert set(a) == set(b) and int(a["t"]) == 4 * 2 * 2
    assert all(torch.equal(a[k], b[k]) for k in a)
    # without the stored state the resumed run would differ: a fresh learner's is empty
    assert learner().extra_state() == {}


def test_bad_shared_state_flags_and_states_are_named():
    with pytest.raises(ValueError, match="adam_state must be 'task' or 'shared'"):
        Reptile(MLP(1, (4,), 1), 0.01, 2, inner_optimizer="adam", adam_state="global")
    with pytest.raises(ValueError, match="needs inner_optimizer='adam'"):
        Reptile(MLP(1, (4,), 1), 0.01, 2, adam_state="shared")
    shared = Reptile(MLP(1, (4,), 1), 0.01, 2, loss="mse", inner_optimizer="adam",
                     adam_state="shared")
    shared.meta_gradient(_regression_batch(B=1))
    state = shared.extra_state()
    with pytest.raises(ValueError, match="adam_state='task'"):
        Reptile(MLP(1, (4,), 1), 0.01, 2, inner_optimizer="adam").load_extra_state(state)
    with pytest.raises(ValueError, match="does not fit this model"):
        Reptile(MLP(1, (5,), 1), 0.01, 2, inner_optimizer="adam",
                adam_state="shared").load_extra_state(state)


def test_shared_state_refuses_to_be_split_over_ranks(monkeypatch):
    from metaloop.train import distributed
    monkeypatch.setattr(distributed, "rank_world", lambda: (0, 2))
    learner = Reptile(MLP(1, (4,), 1), 0.01, 2, loss="mse", inner_optimizer="adam",
                      adam_state="shared")
    with pytest.raises(ValueError, match="cannot be split over ranks"):
        ml.train.train(learner, ml.tasks.Sinusoid(shots=2, queries=2), iterations=1,
                       meta_batch=2, progress=False)
