"""An accuracy with every task at 0 or 100% has a 95% CI bounded by the queries scored, in
``metaloop eval``'s printout and in its record alike; without the trials it has none
(``± n/a``), never the t interval's ``± 0``."""

from __future__ import annotations

import pytest

from metaloop.evaluate import records, stats


def _stub_provenance(checkpoint, device, checkpoint_dirs=None, checkpoint_states=None):
    return {"parts": [{}, {}], "run_dir": None, "budget": {"iterations": 1},
            "fields": {"budget": {"iterations": 1}, "device": "cpu", "torch": "2.13.0",
                       "date": "2026-12-07", "config": None, "published": None}}


CFG = {"family": {"name": "omniglot", "ways": 2, "shots": 5, "queries": 5},
       "method": {"name": "protonet"}, "eval": {"ways": 0, "shots": 0, "queries": 0}}


def _result(acc: list[float]) -> dict:
    return {"steps": [0], "tasks": len(acc), "seed": 0,
            "accuracy": {"mean": [sum(acc) / len(acc)], "ci95": [stats.ci95(acc)]},
            "loss": {"mean": [0.1], "ci95": [0.0]},
            "per_task": {"accuracy": [acc], "loss": [[0.1] * len(acc)]}}


def test_queries_per_task_is_ways_times_queries_with_the_family_s_for_0():
    assert records.queries_per_task(CFG) == 10
    assert records.queries_per_task({**CFG, "eval": {"ways": 5, "queries": 3}}) == 15
    assert records.queries_per_task({"family": {"name": "sinusoid", "queries": 10},
                                     "eval": {"queries": 0}}) is None


def test_the_eval_record_keeps_the_trials_and_the_interval_eval_printed(monkeypatch):
    """3 tasks of 2 ways x 5 queries, all at 100%: eval prints "100.00 (58.03 to 100.00)";
    the record carries the same ends (it kept ``ci95 0`` and no ends, "100.00 ± 0.00")."""
    monkeypatch.setattr(records, "_provenance", _stub_provenance)
    rec = records.eval_record(CFG, _result([1.0, 1.0, 1.0]), "accuracy", checkpoint=["a", "b"],
                              command="c")
    records.validate_record(rec)
    assert rec["trials"] == 30 and rec["ci95"] == 0.0
    assert (round(rec["ci95_low"], 2), rec["ci95_high"]) == (58.03, 100.0)
    assert records.format_value(rec) == "100.00 (95% CI 58.03 to 100.00)"
    from metaloop.recipes import report
    printed = report.table({"m": _result([1.0, 1.0, 1.0])}, "accuracy",
                           trials=records.queries_per_task(CFG))
    assert "100.00 (58.03 to 100.00)" in printed
    # away from the ends too, the record's ends are those eval prints (trials truncate n_eff)
    acc = [0.9, 1.0, 1.0, 1.0]
    rec = records.eval_record(CFG, _result(acc), "accuracy", checkpoint=["a", "b"], command="c")
    records.validate_record(rec)
    ends = stats.bounded_ci95([100 * v for v in acc], trials=40)
    assert (rec["ci95_low"], rec["ci95_high"]) == pytest.approx(ends, abs=1e-6)
    assert f"{ends[0]:.2f} to {ends[1]:.2f}" in report.table({"m": _result(acc)}, "accuracy",
                                                             trials=10)


def test_a_regression_record_has_no_trials(monkeypatch):
    monkeypatch.setattr(records, "_provenance", _stub_provenance)
    cfg = {"family": {"name": "sinusoid", "shots": 5, "queries": 10},
           "method": {"name": "maml"}, "eval": {"queries": 0}}
    res = {"steps": [1], "tasks": 3, "seed": 0, "loss": {"mean": [0.5], "ci95": [0.1]},
           "per_task": {"loss": [[0.4, 0.5, 0.6]]}}
    rec = records.eval_record(cfg, res, "loss", checkpoint=["a", "b"], command="c")
    assert "trials" not in rec and "ci95_low" not in rec


def test_without_trials_an_end_has_no_interval_not_a_0_wide_one():
    assert records.ci95_fields([100.0, 100.0, 100.0]) == {}
    assert records.at_an_end([100.0, 100.0]) and records.at_an_end([0, 0, 0])
    assert not records.at_an_end([100.0]) and not records.at_an_end([100.0, 99.0])
    assert not records.at_an_end([50.0, 50.0])


def test_a_record_with_trials_at_an_end_without_the_bounded_ends_is_refused(monkeypatch):
    monkeypatch.setattr(records, "_provenance", _stub_provenance)
    rec = records.eval_record(CFG, _result([1.0, 1.0, 1.0]), "accuracy", checkpoint=["a", "b"],
                              command="c")
    bare = {k: v for k, v in rec.items() if k not in ("ci95_low", "ci95_high", "ci95_range")}
    with pytest.raises(records.RecordError, match=r"every per_task value is 100.0 and the "
                                                   r"record has trials \(30\)"):
        records.validate_record(bare)
    without_trials = {k: v for k, v in bare.items() if k != "trials"}   # an older record
    assert records.validate_record(without_trials) == without_trials
