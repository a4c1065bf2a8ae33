"""Two things that decide a run's numbers and were not pinned down.

Torch's intra-op thread count: a convolution model's (Conv4's) numbers depend on it, so every
checkpoint stores it (``state.json``'s ``threads``), ``compare`` writes it in its timing, and a
resume with another count warns on stderr, naming both (it is not refused: a run may move to
another machine on purpose). A checkpoint that does not store it gets no warning.

``ml.train``'s ``seed`` decides the draws of a run from torch's global CPU generator
(Reptile's per-task mini-batches with ``inner_batch > 0``): the caller's global state before
the call changes nothing, is as it was after the call, and a resume still continues exactly.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

import metaloop as ml
from metaloop.meta import MAML, Reptile
from metaloop.models import MLP
from metaloop.recipes import compare

FAM = ml.tasks.Sinusoid(5, 5)


@pytest.fixture
def threads():
    """Set torch's thread count in a test; the process's own is restored after it."""
    before = torch.get_num_threads()
    yield torch.set_num_threads
    torch.set_num_threads(before)


def _maml():
    torch.manual_seed(0)
    return MAML(MLP(1, (8,), 1), 0.01, 1)


def _reptile():
    torch.manual_seed(0)
    return Reptile(MLP(1, (8,), 1), 0.01, 3, inner_batch=4)


def _state(out: Path) -> dict:
    return json.loads((out / (out / "LATEST").read_text().strip() / "state.json").read_text())


def _train(learner, out=None, iterations=4, **kw):
    return ml.train(learner, FAM, iterations=iterations, meta_batch=2, seed=0, out_dir=out,
                    progress=False, **kw)


def test_a_checkpoint_stores_the_thread_count_it_was_written_with(tmp_path, threads):
    threads(1)
    _train(_maml(), tmp_path / "r", iterations=2)
    assert _state(tmp_path / "r")["threads"] == 1


def test_a_resume_on_another_thread_count_warns_naming_both(tmp_path, threads, capsys):
    threads(1)
    _train(_maml(), tmp_path / "r", iterations=2)
    capsys.readouterr()
    threads(2)
    _train(_maml(), tmp_path / "r", iterations=4, resume=True)       # not refused
    err = capsys.readouterr().err
    assert "warning" in err and "with 2 torch thread(s)" in err and "written with 1" in err
    assert "differ from an uninterrupted run's" in err and "Conv4" in err
    assert _state(tmp_path / "r")["iteration"] == 4


def test_a_resume_on_the_same_thread_count_does_not_warn(tmp_path, threads, capsys):
    threads(1)
    _train(_maml(), tmp_path / "r", iterations=2)
    capsys.readouterr()
    _train(_maml(), tmp_path / "r", iterations=4, resume=True)
    assert "thread" not in capsys.readouterr().err


def test_a_checkpoint_without_the_thread_count_gets_no_warning():
    from metaloop.train.loop import thread_note
    assert thread_note("runs/x", None, 2) is None            # written before it was stored
    assert thread_note("runs/x", 2, 2) is None
    note = thread_note("runs/x", 4, 2)
    assert note is not None and "runs/x" in note and "4" in note and "2" in note


def test_compare_writes_the_thread_count_in_its_timing(threads):
    threads(1)
    cfg = compare.load_config("sinusoid", overrides={
        "train": {"iterations": 2, "meta_batch": 2, "checkpoint_every": 100},
        "eval": {"tasks": 2, "steps": [0, 1]}})
    res = compare.run(cfg, "maml")
    assert res["timing"]["maml"]["threads"] == 1


def _weights(learner) -> dict:
    return {n: p.detach().clone() for n, p in learner.model.named_parameters()}


def test_reptiles_minibatches_are_decided_by_trains_seed_not_the_callers_rng():
    runs = []
    for caller in (1, 2):
        learner = _reptile()
        torch.manual_seed(caller)                 # what the caller drew before
        _train(learner)
        runs.append(_weights(learner))
    for n in runs[0]:
        assert torch.equal(runs[0][n], runs[1][n]), n


def test_train_gives_the_caller_back_torchs_global_rng():
    learner = _reptile()
    torch.manual_seed(5)
    _train(learner)
    after = torch.rand(4)
    torch.manual_seed(5)
    assert torch.equal(after, torch.rand(4))


def test_a_resumed_reptile_run_continues_exactly_whatever_the_caller_drew(tmp_path):
    whole = _reptile()
    _train(whole, tmp_path / "whole")
    part = _reptile()
    torch.manual_seed(11)
    _train(part, tmp_path / "part", iterations=2)
    torch.manual_seed(12)
    part = _reptile()
    _train(part, tmp_path / "part", resume=True)
    a, b = _weights(whole), _weights(part)
    for n in a:
        assert torch.equal(a[n], b[n]), n
    assert _state(tmp_path / "whole")["state_sha256"] == _state(tmp_path / "part")["state_sha256"]


def test_the_thread_count_is_left_out_of_the_state_digest(tmp_path, threads):
    """A measurement of the machine, not of what the run computed: the sinusoid MLP's
    tensors are the same on 1 and 2 threads, and so is ``state_sha256``."""
    digests = []
    for n in (1, 2):
        threads(n)
        _train(_maml(), tmp_path / f"t{n}", iterations=2)
        state = _state(tmp_path / f"t{n}")
        assert state["threads"] == n
        digests.append(state["state_sha256"])
    assert digests[0] == digests[1]


def test_train_seeds_only_the_cpus_generator(monkeypatch):
    """``ml.train``'s seed decides torch's global CPU stream; the CUDA generators (a GPU's
    dropout) are not seeded, as its docstring says."""
    learner, calls = _reptile(), []                  # (its own torch.manual_seed before)
    monkeypatch.setattr(torch.cuda, "manual_seed_all", lambda s: calls.append(s))
    monkeypatch.setattr(torch.cuda, "manual_seed", lambda s: calls.append(s))
    _train(learner, iterations=2)
    assert calls == []
