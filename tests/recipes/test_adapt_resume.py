"""``evaluate_strategies(..., kept=, on_task=)``, the core of ``metaloop adapt --resume``: the
kept tasks are not adapted again, but the rows that cache label embeddings between tasks are
replayed on them (so the cache is filled by the same batches), and each later task sees the
seed it would have seen in a run never stopped."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from metaloop.recipes import adapt as recipe


class _Linear:
    """An adapted predictor: logits ``x @ w``."""

    info: dict = {}
    trainable = 6

    def __init__(self, w: torch.Tensor):
        self.w = w

    def __call__(self, x):
        return x @ self.w


def _family(tmp_path):
    from metaloop.tasks import Episodes
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "d.npz", x=rng.normal(size=(24, 3)).astype("float32"),
             y=np.repeat(np.arange(4), 6))
    return Episodes.from_tensors(tmp_path / "d.npz", ways=2, shots=1, queries=2)


def _rows(log):
    def row(name):
        def fn(sx, sy, classes):
            w = torch.randn(3, 2)                       # from the seed this call was given
            log.append((name, w.tolist()))
            return _Linear(w)
        return fn
    return {n: (recipe.APPROACHES[n], row(n)) for n in ("prompt-zero-shot", "probe-ridge")}


def test_a_resume_replays_only_the_cached_rows_and_keeps_each_tasks_seed(tmp_path):
    family = _family(tmp_path)
    whole_log, saved = [], []
    whole = recipe.evaluate_strategies(
        _rows(whole_log), family, 3, seed=7,
        on_task=lambda per, done: saved.append(json.loads(json.dumps({"tasks_done": done,
                                                                      "per": per}))))
    assert [s["tasks_done"] for s in saved] == [1, 2, 3]
    log = []
    resumed = recipe.evaluate_strategies(_rows(log), family, 3, seed=7, kept=saved[1])
    # the cached row is called on every task, with the same seed; the other only on the last
    assert log == [whole_log[0], whole_log[2], whole_log[4], whole_log[5]]
    for name, row in resumed.items():
        assert row["accuracy"] == whole[name]["accuracy"]
        assert row["per_task"]["accuracy"] == whole[name]["per_task"]["accuracy"]
        kept = saved[1]["per"][name]["adapt_seconds"]        # measured when they ran
        assert row["per_task"]["adapt_seconds"][:2] == kept
    assert len({a for r in whole.values() for a in r["per_task"]["accuracy"]}) > 1


def test_a_kept_state_that_does_not_fit_the_run_is_refused(tmp_path):
    """``kept`` of more tasks than ``tasks`` (or of other rows) would be mixed into the
    results: refused by name."""
    family, saved = _family(tmp_path), []
    recipe.evaluate_strategies(_rows([]), family, 3, seed=7,
                               on_task=lambda per, done: saved.append(
                                   json.loads(json.dumps({"tasks_done": done, "per": per}))))
    with pytest.raises(ValueError, match="3 tasks .* not that of a run of 2 tasks"):
        recipe.evaluate_strategies(_rows([]), family, 2, seed=7, kept=saved[2])
    rows = _rows([])
    rows.pop("probe-ridge")
    with pytest.raises(ValueError, match=r"of the rows \['prompt-zero-shot'\]"):
        recipe.evaluate_strategies(rows, family, 3, seed=7, kept=saved[1])


def test_a_setting_the_kept_run_did_not_record_is_named_so(tmp_path):
    """A kept identity without a key (an older run's) is named as not recorded, not as
    ``None``; a key this command lacks is named from the kept side."""
    ident = {"tasks": 3, "threads": 2, "seed": 0}
    (tmp_path / recipe.PARTIAL).write_text(json.dumps(
        {"identity": {"tasks": 3, "seed": 0, "model_checkpoint": "step_2 sha256 ab"},
         "tasks_done": 1, "per": {}, "eval_seconds": 0.5}))
    with pytest.raises(ValueError) as e:
        recipe.kept(tmp_path, ident)
    msg = str(e.value)
    assert "--threads (not recorded in the kept run; this command's: 2)" in msg
    assert "the checkpoint of --model (the kept run's: 'step_2 sha256 ab'; none in this " \
        "command)" in msg
    assert "None" not in msg and "--seed" not in msg


def test_a_row_with_a_refill_is_refilled_not_adapted_on_the_kept_tasks(tmp_path):
    """A cached row's ``refill`` (prompt-optimized: embed the prompts, score nothing) stands
    in for the row on the kept tasks, each under its task's seed."""
    family, saved, whole = _family(tmp_path), [], []
    recipe.evaluate_strategies(_rows(whole), family, 3, seed=7, on_task=lambda per, done:
                               saved.append(json.loads(json.dumps({"tasks_done": done,
                                                                   "per": per}))))
    log = []
    rows = _rows(log)
    rows["prompt-zero-shot"][1].refill = lambda sx, sy, classes: log.append(
        ("refill", torch.randn(1).item()))
    recipe.evaluate_strategies(rows, family, 3, seed=7, kept=saved[1])

    def seeded(task):
        torch.manual_seed(7 * 100_003 + task)
        return torch.randn(1).item()
    assert log == [("refill", seeded(0)), ("refill", seeded(1)), whole[4], whole[5]]
