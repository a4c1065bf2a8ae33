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
