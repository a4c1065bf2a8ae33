"""Student's t quantile behind every 95% CI, against scipy and the printed tables."""

import pytest

from metaloop.evaluate.stats import Z_975, t_975


@pytest.mark.parametrize("df", [1, 2, 3, 4, 5, 7, 19, 29, 30, 99, 199, 200, 201, 599, 999,
                                19_999, 10 ** 7])
def test_t_975_is_scipys_quantile(df):
    student_t = pytest.importorskip("scipy.stats").t
    assert t_975(df) == pytest.approx(student_t.ppf(0.975, df), rel=1e-10, abs=1e-10)


def test_t_975_matches_the_printed_table_and_tends_to_the_normal():
    # Fisher & Yates' table, three decimals: df 1, 2, 3, 10, 19, 29, 120
    table = {1: 12.706, 2: 4.303, 3: 3.182, 10: 2.228, 19: 2.093, 29: 2.045, 120: 1.980}
    for df, want in table.items():
        assert round(t_975(df), 3) == want
    assert Z_975 < t_975(10 ** 6) < Z_975 + 1e-5
    values = [t_975(df) for df in range(1, 400)]              # falls with df
    assert all(a > b for a, b in zip(values, values[1:]))


@pytest.mark.parametrize("df", [0, -1, 2.0, True, "3"])
def test_t_975_refuses_what_is_not_a_count(df):
    with pytest.raises(ValueError, match="t_975 needs an int df >= 1"):
        t_975(df)
