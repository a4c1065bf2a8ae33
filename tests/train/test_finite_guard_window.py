"""The training loop's non-finite check (``_FiniteGuard``) reads its flags at logged
iterations and checkpoints, and also once ``WINDOW`` flags wait: a run that logs rarely
(``log_every`` in the thousands) held a flag and a loss tensor per step until its next log
line, memory growing with the steps (about 1.2 kB a step)."""

import math

import pytest
import torch

import metaloop as ml
from metaloop.train.loop import _FiniteGuard


def _grads(value: float) -> dict:
    return {"w": torch.full((3,), value)}


def test_the_flags_waiting_never_reach_the_window():
    guard = _FiniteGuard("")
    for it in range(1, 3 * _FiniteGuard.WINDOW + 5):
        guard.add(it, torch.tensor(0.5), _grads(1.0))
        assert len(guard._flags) < _FiniteGuard.WINDOW
    assert len(guard._flags) == (3 * _FiniteGuard.WINDOW + 4) % _FiniteGuard.WINDOW


def test_a_bad_step_is_named_by_the_window_check_without_a_log_line():
    guard = _FiniteGuard(" (test)")
    bad = 17
    with pytest.raises(ml.NonFiniteLossError, match=f"at iteration {bad} "):
        for it in range(1, 2 * _FiniteGuard.WINDOW):
            guard.add(it, torch.tensor(0.5), _grads(math.nan if it == bad else 1.0))
    assert it == _FiniteGuard.WINDOW                 # raised at the first window's check


def test_train_with_rare_log_lines_stops_at_the_window(monkeypatch, tmp_path):
    """``ml.train`` with ``log_every`` beyond the run: the window's check stops it at the
    first bad iteration, before any later step is applied."""
    monkeypatch.setattr(_FiniteGuard, "WINDOW", 4)
    family = ml.tasks.Sinusoid(shots=5, queries=5)
    model = torch.nn.Sequential(torch.nn.Linear(1, 8), torch.nn.ReLU(), torch.nn.Linear(8, 1))
    learner = ml.meta.MAML(model, inner_lr=0.01, loss="mse")
    real, calls = learner.meta_gradient, []

    def poisoned(batch, with_metrics=False):
        calls.append(1)
        grads, metrics = real(batch, with_metrics=True)
        if len(calls) == 2:
            grads = {k: torch.full_like(g, math.nan) for k, g in grads.items()}
        return (grads, metrics) if with_metrics else grads
    monkeypatch.setattr(learner, "meta_gradient", poisoned)
    with pytest.raises(ml.NonFiniteLossError, match="at iteration 2 "):
        ml.train(learner, family, iterations=50, meta_batch=2, log_every=1000,
                 out_dir=tmp_path / "run", progress=False)
    assert len(calls) == 4                               # stopped at the window, not at 50
