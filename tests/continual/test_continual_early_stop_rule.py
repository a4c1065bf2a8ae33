"""Early stopping in ``finetune_experience``: the parameters from before the fine-tuning are
never returned (step 0 is no candidate), ties on validation go to the later evaluation,
patience runs from the best validation accuracy so far (the start's included), and without
``early_stop`` the last step is returned; ``run_sequence`` reports the step kept of each
experience (``SequenceResult.chosen``) and checks the experiences' input shapes before
learning any."""

from __future__ import annotations

import pytest
import torch

from metaloop.continual import Experience, finetune_experience, init_params, run_sequence
from metaloop.models import MLP


def _experience(name: str, head: str, seed: int, d: int = 6, flat_val: bool = False,
                n: int = 16) -> Experience:
    """Two separable classes; with ``flat_val`` one validation input per class, both all
    zeros, so every parameter setting scores exactly one of them: 50% at every evaluation."""
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(2).repeat(n // 2)
    x = torch.nn.functional.one_hot(y, d).float() * 3 + 0.3 * torch.randn(n, d, generator=g)
    val = (torch.zeros(2, d), torch.arange(2)) if flat_val else (x[:4], y[:4])
    return Experience(name, head, 2, (0, 1), (x, y), val, (x, y))


def _setup(flat_val: bool = True):
    exps = [_experience("old", "A", 0), _experience("new", "B", 1, flat_val=flat_val)]
    torch.manual_seed(0)
    model = MLP(6, (16,), 1)
    params = init_params(model, exps, torch.Generator().manual_seed(0))
    return model, params, exps


def _changed(a: dict, b: dict) -> bool:
    return any(not torch.equal(a[k], b[k]) for k in a)


def test_a_flat_validation_accuracy_never_returns_the_starting_parameters():
    """Validation stuck at its starting 50%: patience runs out after 3 evaluations, and the
    last of them is returned, not the parameters from before fine-tuning (which left the new
    experience unlearned and its forgetting at 0)."""
    model, params, exps = _setup()
    res = finetune_experience(model, params, exps[1], earlier=exps[:1], replay_ratio=0.0,
                              early_stop=3, steps=50, batch_size=8, lr=1e-2, eval_every=5,
                              generator=torch.Generator().manual_seed(0))
    assert res.curve["val_accuracy"] == [0.5] * 4
    assert res.steps == 15                       # stopped: 3 evaluations without a rise
    assert res.best_step == 15                   # the later of the tied evaluations
    assert _changed(res.params, params)          # not the starting parameters
    assert res.curve["accuracy"]["new"][-1] > res.curve["accuracy"]["new"][0]


def test_the_best_evaluation_after_a_step_is_kept_ties_to_the_later():
    """On a real validation set: the kept step is the last evaluation (after step 0) whose
    validation accuracy is the highest, and early stopping returns its parameters."""
    model, params, exps = _setup(flat_val=False)
    kw = dict(earlier=exps[:1], replay_ratio=0.0, steps=60, batch_size=8, lr=1e-2,
              eval_every=5)
    res = finetune_experience(model, params, exps[1], early_stop=2,
                              generator=torch.Generator().manual_seed(0), **kw)
    steps, vals = res.curve["step"][1:], res.curve["val_accuracy"][1:]
    want = max(s for s, v in zip(steps, vals) if v == max(vals))
    assert res.best_step == want >= 5
    again = finetune_experience(model, params, exps[1], steps=want, early_stop=None,
                                generator=torch.Generator().manual_seed(0),
                                **{k: v for k, v in kw.items() if k != "steps"})
    assert again.best_step == want
    assert all(torch.equal(res.params[k], again.params[k]) for k in params)


def test_without_early_stop_the_last_step_is_returned():
    model, params, exps = _setup()
    res = finetune_experience(model, params, exps[1], earlier=exps[:1], replay_ratio=0.0,
                              steps=12, batch_size=8, eval_every=5,
                              generator=torch.Generator().manual_seed(0))
    assert (res.steps, res.best_step, res.curve["step"]) == (12, 12, [0, 5, 10, 12])


def test_run_sequence_reports_the_step_kept_of_each_experience():
    model, params, exps = _setup()
    r = run_sequence(model, params, exps, "naive", steps=20, batch_size=8, lr=1e-2,
                     eval_every=5, early_stop=2, generator=torch.Generator().manual_seed(0))
    assert [c["experience"] for c in r.chosen] == [0, 1]
    flat = r.chosen[1]
    assert flat == {"experience": 1, "best_step": 10, "steps": 10, "val_start": 0.5,
                    "val_best": 0.5}
    assert 1 <= r.chosen[0]["best_step"] <= r.chosen[0]["steps"] <= 20
    matrix, curve, boundaries, final = r            # still the four fields it unpacks into
    assert matrix is r.matrix and final is r.params and len(r) == 4
    import copy
    import pickle
    for again in (pickle.loads(pickle.dumps(r)), copy.deepcopy(r), r._replace(curve=[])):
        assert again.chosen == r.chosen


def test_run_sequence_names_two_experiences_of_other_input_shapes_before_learning_any():
    a = _experience("small", "A", 0, d=6)
    b = _experience("wide", "B", 1, d=9)
    model = MLP(6, (8,), 1)
    params = init_params(model, [a, b], torch.Generator().manual_seed(0))
    steps = []
    with pytest.raises(ValueError, match=r"experience 'wide' has train inputs of shape "
                                         r"\[N, 9\] but experience 'small' has \[N, 6\]"):
        run_sequence(model, params, [a, b], "naive", steps=3, batch_size=4,
                     progress=steps.append)
    assert steps == []                           # refused before experience 0 was learned
