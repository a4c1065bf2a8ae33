"""The records of ``metaloop forgetting --record`` and ``metaloop adapt --record``: an accuracy
in % whose ``mean ± ci95`` would leave [0, 100] (98.00 ± 8.61 over three seeds) carries
``ci95_low``, ``ci95_high`` and ``ci95_range`` from its own ``per_seed`` / ``per_task`` values
(``records.ci95_fields``), as ``metaloop eval --record`` writes them, and still passes
``validate_record``; one whose interval stays inside carries none."""

from __future__ import annotations

import functools
import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from metaloop.cli.adapt import command_settings
from metaloop.evaluate.records import ci95_fields, validate_record, write_record
from metaloop.evaluate.stats import bounded_ci95
from metaloop.recipes import adapt, forgetting

sys.path.insert(0, str(Path(__file__).parent))
from test_adapt_record_config import _results  # noqa: E402  (an adapt run's results, made up)

BOUNDED = ("ci95_low", "ci95_high", "ci95_range")


def _fixed_seeds(monkeypatch, matrices):
    """``forgetting.run`` with seed ``i``'s accuracy matrix ``matrices[i]`` (no training)."""
    def one_seed(s, exps, seed, update, strategies=None, on_unit=None):
        r = torch.tensor(matrices[seed - s["seeds"][0]], dtype=torch.float64)
        curve = [{"step": 0, "experience": 0, "accuracy": {e.name: 0.5 for e in exps}}]
        return {name: {"seed": seed, "matrix": r, "curve": curve, "boundaries": [0, 4, 8],
                       "wall_s": 0.0} for name in strategies or s["strategies"]}
    monkeypatch.setattr(forgetting, "_one_seed", one_seed)


def _exps(tmp_path):
    x = np.arange(6).repeat(10)[:, None] * np.ones((1, 4), np.float32)
    np.savez(tmp_path / "d.npz", x=x, y=np.arange(6).repeat(10))
    return forgetting.experiences("split-data-class", data=tmp_path / "d.npz")


def test_a_forgetting_record_hugging_100_carries_the_bounded_ci(monkeypatch, tmp_path):
    _fixed_seeds(monkeypatch, [
        [[1.0, 0, 0], [1.0, 1.0, 0], [1.0, 1.0, 1.0]],     # avg acc 100
        [[1.0, 0, 0], [1.0, 1.0, 0], [1.0, 1.0, 1.0]],     # 100
        [[1.0, 0, 0], [1.0, 1.0, 0], [0.91, 0.91, 1.0]]])  # 94
    s = forgetting.settings("split-data-class", strategies="naive", seeds=3)
    _, results = forgetting.run(s, _exps(tmp_path))
    (path, rec), = forgetting.records(results, tmp_path / "rec", command="x").items()
    assert rec["per_seed"] == [100.0, 100.0, 94.0] and rec["mean"] == 98.0
    assert rec["mean"] + rec["ci95"] > 100                       # the t interval leaves it
    # bounded by the test examples: the 3 experiences' tests, counted once (every seed
    # scores the same ones)
    tests = sum(e["test"] for e in results["experiences"])
    assert rec["trials"] == tests
    lo, hi = bounded_ci95(rec["per_seed"], 0, 100, trials=tests)
    assert rec["ci95_low"] == pytest.approx(lo, abs=1e-6) and rec["ci95_high"] == 100.0
    assert rec["ci95_range"] == [0, 100]
    assert validate_record(rec, where=str(path)) == rec
    write_record(path, **rec)
    assert validate_record(json.loads(path.read_text())) is not None
    others = rec["other_metrics"]
    for label in ("avg acc", "old acc"):                         # accuracies: bounded too
        assert others[label]["ci95_high"] == 100.0, label
        assert others[label] | ci95_fields(others[label]["per_seed"],
                                           trials=others[label]["trials"]) == others[label]
    # every seed at 100% new-task accuracy: not "100.0 ± 0.0" but bounded by the trials
    new = others["new acc"]
    assert new["ci95"] == 0.0 and new["trials"] == results["experiences"][-1]["test"]
    low = bounded_ci95(new["per_seed"], trials=new["trials"])[0]
    assert new["ci95_low"] == pytest.approx(low, abs=1e-6) and low < 100.0
    assert all(not set(BOUNDED) & set(others[label]) for label in ("retained", "forgetting",
                                                                    "BWT"))


def test_a_forgetting_record_inside_the_range_carries_none(monkeypatch, tmp_path):
    _fixed_seeds(monkeypatch, [[[0.6, 0, 0], [0.5, 0.6, 0], [0.5, 0.5, 0.6]],
                               [[0.6, 0, 0], [0.6, 0.6, 0], [0.55, 0.55, 0.6]],
                               [[0.7, 0, 0], [0.6, 0.7, 0], [0.5, 0.6, 0.7]]])
    s = forgetting.settings("split-data-class", strategies="naive", seeds=3)
    _, results = forgetting.run(s, _exps(tmp_path))
    (rec,) = forgetting.records(results, tmp_path / "rec", command="x").values()
    assert not set(BOUNDED) & set(rec)
    assert not any(set(BOUNDED) & set(m) for m in rec["other_metrics"].values())


def test_an_adapt_record_hugging_100_carries_the_bounded_ci(tmp_path):
    accs = {"probe-ridge": [1.0, 1.0, 0.96, 0.96, 1.0], "lora": [0.6, 0.8, 0.7, 0.5, 0.9]}
    s = adapt.AdaptSettings(ways=5, shots=1, tasks=5, steps=7)
    recs = functools.partial(adapt.records, read_command=command_settings)(
        _results(accs), tmp_path, s, command="metaloop adapt")
    (p_ridge, ridge), (p_lora, lora) = recs.items()
    assert ridge["per_task"] == [100.0, 100.0, 96.0, 96.0, 100.0]
    assert ridge["mean"] + ridge["ci95"] > 100
    assert ridge["trials"] == 5 * 5 * s.queries          # tasks x ways x queries
    lo, hi = bounded_ci95(ridge["per_task"], 0, 100, trials=ridge["trials"])
    assert (ridge["ci95_low"], ridge["ci95_high"], ridge["ci95_range"]) == \
        (pytest.approx(lo, abs=1e-6), pytest.approx(hi, abs=1e-6), [0, 100])
    assert validate_record(ridge, where=str(p_ridge)) == ridge
    write_record(p_ridge, **ridge)
    assert validate_record(json.loads(p_ridge.read_text())) is not None
    assert not set(BOUNDED) & set(lora)                          # 70 ± 19.6: inside
