"""The tables of ``metaloop compare`` and ``metaloop forgetting`` show the 95% CI an
accuracy's record carries: bounded to 0-100% where ``mean ± ci95`` would leave it or every
task (seed) sits at 0 or 100%, and ``± n/a`` where no interval can be given, never a
``± 0.00`` at an end; ``compare``'s results.json keeps what its intervals come from."""

from __future__ import annotations

from metaloop.evaluate import records, stats
from metaloop.recipes import compare, forgetting, report

ALL_RIGHT = {"steps": [0, 5], "tasks": 3, "seed": 0,
             "accuracy": {"mean": [0.2, 1.0], "ci95": [stats.ci95([0.2, 0.1, 0.3]), 0.0]},
             "loss": {"mean": [1.0, 0.1], "ci95": [0.1, 0.0]},
             "per_task": {"accuracy": [[0.2, 0.1, 0.3], [1.0, 1.0, 1.0]],
                          "loss": [[1.0, 0.9, 1.1], [0.1, 0.1, 0.1]]}}


def test_every_task_at_100_is_never_shown_as_a_0_wide_interval():
    with_trials = report.table({"maml": ALL_RIGHT}, "accuracy", trials=25)
    assert "100.00 (79.51 to 100.00)" in with_trials and "± 0.00" not in with_trials
    without = report.table({"maml": ALL_RIGHT}, "accuracy")
    assert "100.00 ± n/a" in without and "± 0.00" not in without
    kept_none = {**ALL_RIGHT, "per_task": {}}             # no per-task values: no interval
    assert "100.00 ± n/a" in report.table({"maml": kept_none}, "accuracy", trials=25)
    assert "0.100 ± 0.000" in report.table({"maml": ALL_RIGHT}, "loss")   # a loss: as it is


def test_compare_gives_the_trials_eval_gives_and_keeps_them_in_results_json():
    cfg = {"family": {"name": "omniglot", "ways": 2, "queries": 5},
           "eval": {"ways": 0, "queries": 0, "tasks": 3}}
    assert compare.queries_per_task(cfg) == records.queries_per_task(cfg) == 10
    assert compare.queries_per_task({"family": {"name": "sinusoid", "queries": 10},
                                     "eval": {"queries": 0}}) is None
    rec = compare.record({"family": "omniglot", "config": cfg, "metric": "accuracy",
                          "evaluation": {"maml": "transductive"}, "methods": {"maml": ALL_RIGHT}})
    m = rec["methods"]["maml"]
    assert m["per_task"] == ALL_RIGHT["per_task"] and m["trials"] == 30
    ends = records.ci95_fields([100 * v for v in m["per_task"]["accuracy"][-1]],
                               trials=m["trials"])              # recomputed from the file
    assert round(ends["ci95_low"], 2) == 58.03


def _summary(per_seed):
    return forgetting._summary(per_seed, list(range(len(per_seed))))


def test_the_forgetting_table_prints_the_bounded_interval_its_records_carry():
    """Two seeds' old-task accuracies 49.66% and 34.4% printed "42.0 ± 96.9" (-54.9% to
    138.9%); the record carries the bounded interval, and so does the table now."""
    old, new = [0.4966, 0.344], [1.0, 1.0]
    summary = {k: _summary([0.5, 0.6]) for k, _ in forgetting.METRICS}
    summary.update(old_accuracy=_summary(old), new_accuracy=_summary(new))
    results = {"experiences": [{"test": 1000}, {"test": 1000}]}
    trials = forgetting.accuracy_trials(results)
    assert trials == {"new_accuracy": 1000, "old_accuracy": 1000, "average_accuracy": 2000}
    text = forgetting.table({"naive": {"summary": summary}}, trials=trials)
    lo, hi = stats.bounded_ci95([100 * v for v in old], trials=1000)
    assert f"42.0 ({lo:.1f} to {hi:.1f})" in text and "± 96.9" not in text
    lo, _ = stats.bounded_ci95([100.0, 100.0], trials=1000)   # the seeds share them
    assert f"100.0 ({lo:.1f} to 100.0)" in text and "± 0.0" not in text
    # without the test counts: the t interval where it stays inside; ± n/a at an end
    text = forgetting.table({"naive": {"summary": summary}})
    assert "100.0 ± n/a" in text and "± 0.0" not in text
    assert forgetting.accuracy_trials({"experiences": [{"name": "a"}]}) == {}


def test_the_adapt_table_prints_the_bounded_interval_its_records_carry():
    """An approach that answered every query of 16 tasks printed "100.00 ± 0.00"; with
    each task's queries it shows the interval its record carries, and without them "± n/a"."""
    from metaloop.recipes import adapt

    def approach(per_task):
        return {"approach": 1, "trainable": 5, "adapt_seconds": 0.1,
                "accuracy": {"mean": sum(per_task) / len(per_task), "ci95": 0.0},
                "per_task": {"accuracy": per_task}}
    results = {"perfect": approach([1.0] * 16)}
    lo, hi = stats.bounded_ci95([100.0] * 16, trials=16 * 20)
    text = adapt.table(results, trials=20)
    assert f"100.00 ({lo:.2f} to {hi:.2f})" in text and "± 0.00" not in text
    assert "100.00 ± n/a" in adapt.table(results)
