"""The error rate's printed 95% CI stays inside [0, 100]%: ``metaloop eval`` prints the
bounded interval its record carries where the t interval would leave the range."""
from metaloop.cli.eval import _interval
from metaloop.evaluate import records
from metaloop.evaluate.heldout import mean_ci


def test_an_interval_inside_the_range_is_printed_as_plus_minus():
    errors = [10.0, 20.0, 15.0, 5.0, 12.0]
    _, ci = mean_ci([e / 100 for e in errors])
    text = _interval(ci, errors, 100, "5 tasks")
    assert text == f"± {100 * ci:.2f}% (95% CI over 5 tasks, "


def test_an_interval_that_would_go_below_zero_is_printed_bounded():
    errors = [0.0] * 19 + [10.0]                # 19 official runs without an error, one 10%
    _, ci = mean_ci([e / 100 for e in errors])
    assert 0.5 - 100 * ci < 0                   # the t interval leaves the range
    text = _interval(ci, errors, 400, "20 runs")
    ends = records.ci95_fields(errors, trials=400)
    assert 0 <= ends["ci95_low"] < 0.5 < ends["ci95_high"] <= 100
    assert text == (f"(95% CI {ends['ci95_low']:.2f} to {ends['ci95_high']:.2f}%, bounded, "
                    f"over 20 runs, ")
    assert "±" not in text


def test_no_error_in_any_task_is_printed_bounded_not_plus_minus_zero():
    """Every task without an error: ``± 0.00`` is no interval; with the trials known the
    bounded one is printed (and recorded)."""
    errors = [0.0] * 20
    text = _interval(0.0, errors, 400, "20 tasks")
    ends = records.ci95_fields(errors, trials=400)
    assert ends["ci95_low"] == 0 and 0 < ends["ci95_high"] < 2
    assert text.startswith(f"(95% CI 0.00 to {ends['ci95_high']:.2f}%, bounded")
    assert records.ci95_fields(errors) == {}        # no trials: nothing better to say


def test_the_accuracy_table_shows_the_bounded_interval_where_plus_minus_leaves_the_range():
    from metaloop.recipes import report

    near = [1.0, 1.0, 0.9, 1.0, 0.95]               # 97% ± 5.2 would pass 100%
    mid = [0.6, 0.7, 0.5, 0.65, 0.55]
    result = {"steps": [0, 1], "accuracy": {"mean": [sum(near) / 5, sum(mid) / 5],
                                            "ci95": [mean_ci(near)[1], mean_ci(mid)[1]]},
              "per_task": {"accuracy": [near, mid]}}
    text = report.table({"protonet": result}, "accuracy", trials=20)
    ends = records.ci95_fields([100 * v for v in near], trials=100)
    assert f"97.00 ({ends['ci95_low']:.2f} to {ends['ci95_high']:.2f})" in text
    assert ends["ci95_high"] <= 100
    assert f"60.00 ± {100 * mean_ci(mid)[1]:.2f}" in text       # inside: as before
    plain = report.table({"protonet": {k: v for k, v in result.items() if k != "per_task"}},
                         "accuracy")
    assert "97.00 ± " in plain                      # without per-task values: as before
