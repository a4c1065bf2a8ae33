"""The 95% interval of a mean bounded in [0, 100] (an error rate or accuracy in %) that stays
inside it where the symmetric t interval would leave it (0.50 ± 1.05% over Lake's 20 runs,
19 of them without an error): ``stats.bounded_ci95`` (Korn and Graubard's interval) against
an independent computation with scipy and against closed forms, at the bounds, and its
``ci95_low`` / ``ci95_high`` in records: written by the eval record paths, checked by
``validate_record`` and shown by the tables."""

from __future__ import annotations

import json
import random
import re
from pathlib import Path

import pytest

from metaloop.evaluate import records, stats

REPO = Path(__file__).resolve().parents[2]
# Lake's 20 official runs scored by ensemble40_all_cpu transductively (its record's per_task)
ENS40 = [0.0] * 7 + [10.0] + [0.0] * 12


def _kg_reference(values, low=0.0, high=100.0, trials=None):
    """Korn and Graubard's interval written out again with scipy's t and beta quantiles."""
    sp = pytest.importorskip("scipy.stats")
    np = pytest.importorskip("numpy")
    x = (np.asarray(values, dtype=np.float64) - low) / (high - low)
    n, p = len(x), float(x.mean())
    var = float(x.var(ddof=1)) / n
    if var > 0 and 0 < p < 1:
        n_eff = p * (1 - p) / var
        n_eff = min(n_eff, trials) if trials else n_eff
    else:
        n_eff = trials
    top = sp.t.ppf(0.975, trials - 1) if trials else sp.norm.ppf(0.975)
    n_df = n_eff * (top / sp.t.ppf(0.975, n - 1)) ** 2
    k = p * n_df
    lo = 0.0 if k == 0 else sp.beta.ppf(0.025, k, n_df - k + 1)
    hi = 1.0 if k >= n_df else sp.beta.ppf(0.975, k + 1, n_df - k)
    return low + lo * (high - low), low + hi * (high - low)


def test_betainc_and_its_quantile_match_scipy():
    special = pytest.importorskip("scipy.special")
    sp = pytest.importorskip("scipy.stats")
    rng = random.Random(0)
    for _ in range(200):
        a, b, x = rng.uniform(0.05, 800), rng.uniform(0.05, 800), rng.random()
        assert stats.betainc(a, b, x) == pytest.approx(special.betainc(a, b, x), abs=1e-12)
        q = rng.random()
        assert stats.beta_ppf(q, a, b) == pytest.approx(sp.beta.ppf(q, a, b), abs=1e-11)


def test_clopper_pearson_matches_scipy_and_the_closed_forms():
    sp = pytest.importorskip("scipy.stats")
    for x, n in [(0, 5), (1, 5), (2, 400), (5, 5), (17, 40), (399, 400)]:
        ref = sp.binomtest(x, n).proportion_ci(0.95, method="exact")
        lo, hi = stats.clopper_pearson(x, n)
        assert (lo, hi) == pytest.approx((ref.low, ref.high), abs=1e-11)
    # no success in n trials: [0, 1 - 0.025^(1/n)]; all n: [0.025^(1/n), 1] (no scipy)
    for n in (1, 5, 400):
        assert stats.clopper_pearson(0, n) == pytest.approx((0.0, 1 - 0.025 ** (1 / n)))
        assert stats.clopper_pearson(n, n) == pytest.approx((0.025 ** (1 / n), 1.0))
    with pytest.raises(ValueError):
        stats.clopper_pearson(3, 2)


@pytest.mark.parametrize("values,trials", [
    (ENS40, 400),                                           # the committed record
    ([0.0, 0.0, 0.0, 5.0] + [0.0] * 14 + [5.0, 0.0], 400),  # max28_all: at the cap
    ([100.0, 96.0, 100.0, 76.0, 96.0] + [100.0] * 15, None),
    ([79.61, 94.64, 78.72], None),                          # 3 seeds
    ([40.0, 55.0, 61.0, 47.0, 52.0, 58.0], 600),
])
def test_bounded_ci95_is_korn_graubard_computed_independently(values, trials):
    got = stats.bounded_ci95(values, trials=trials)
    ref = _kg_reference(values, trials=trials)
    assert got == pytest.approx(ref, abs=1e-8)
    mean = sum(values) / len(values)
    assert 0.0 <= got[0] <= mean <= got[1] <= 100.0


def test_the_official_runs_interval_stays_in_range_and_reaches_past_the_t_interval():
    lo, hi = stats.bounded_ci95(ENS40, trials=400)
    t_half = stats.ci95(ENS40)
    assert 0.5 - t_half < 0 < lo            # the t interval's end was below 0
    # 2 errors in one run of 20: the upper end passes both the t interval's (1.55) and the
    # exact binomial bound for 2 errors in 400 independent trials (1.79)
    assert hi > 0.5 + t_half and hi > 100 * stats.clopper_pearson(2, 400)[1]
    assert (round(lo, 2), round(hi, 2)) == (0.01, 3.01)


def test_at_the_bounds_and_for_one_value():
    n_df = 400 * (stats.t_975(399) / stats.t_975(19)) ** 2
    lo, hi = stats.bounded_ci95([0.0] * 20, trials=400)
    assert lo == 0.0 and hi == pytest.approx(100 * (1 - 0.025 ** (1 / n_df)), abs=1e-9)
    lo, hi = stats.bounded_ci95([100.0] * 20, trials=400)
    assert hi == 100.0 and lo == pytest.approx(100 * 0.025 ** (1 / n_df), abs=1e-9)
    assert stats.bounded_ci95([1.0] * 5, 0.0, 1.0, trials=50)[1] == 1.0     # fractions
    # without the trials, values all alike say nothing: the interval is the mean alone
    assert stats.bounded_ci95([0.0] * 20) == (0.0, 0.0)
    assert stats.bounded_ci95([100.0] * 3) == (100.0, 100.0)
    assert stats.bounded_ci95([3.0]) is None and stats.bounded_ci95([]) is None
    with pytest.raises(ValueError, match=r"values in \[0"):
        stats.bounded_ci95([50.0, 101.0])
    with pytest.raises(ValueError, match="trials"):
        stats.bounded_ci95([50.0, 60.0], trials=0)


def test_away_from_the_bounds_it_is_close_to_the_t_interval():
    rng = random.Random(1)
    values = [100 * sum(rng.random() < 0.5 for _ in range(50)) / 50 for _ in range(400)]
    mean, half = sum(values) / len(values), stats.ci95(values)
    lo, hi = stats.bounded_ci95(values, trials=400 * 50)
    assert lo == pytest.approx(mean - half, rel=0.01) and hi == pytest.approx(mean + half,
                                                                              rel=0.01)


def test_ci95_fields_only_where_the_t_interval_leaves_the_range():
    assert records.ci95_fields([40.0, 50.0, 60.0]) == {}
    assert records.ci95_fields([5.0]) == {}
    f = records.ci95_fields(ENS40, trials=400)
    assert f == {"ci95_low": round(stats.bounded_ci95(ENS40, trials=400)[0], 6),
                 "ci95_high": round(stats.bounded_ci95(ENS40, trials=400)[1], 6),
                 "ci95_range": [0, 100]}


def _record(**extra) -> dict:
    rec = {"table": "t", "row": "r", "metric": "error (%)", "mean": 0.5, "ci95": 1.05, "n": 20,
           "budget": {"iterations": 1}, "device": "cpu", "torch": "2.13.0",
           "date": "2026-12-07", "config": None, "command": "c", "published": None,
           "unit": "%", "trials": 400, "per_task": ENS40}
    rec.update(extra)
    return rec


def test_validate_record_checks_the_bounded_ends_against_the_values():
    good = _record(**records.ci95_fields(ENS40, trials=400))
    records.validate_record(good)
    with pytest.raises(records.RecordError, match="bounded 95% CI"):
        records.validate_record({**good, "ci95_high": 1.55})
    with pytest.raises(records.RecordError, match="come together"):
        records.validate_record(_record(ci95_low=0.0, ci95_high=1.55))
    with pytest.raises(records.RecordError, match="inside ci95_range"):
        records.validate_record({**good, "ci95_low": -0.55})
    with pytest.raises(records.RecordError, match="ci95_range must be"):
        records.validate_record({**good, "ci95_range": [100, 0]})


def test_the_tables_show_the_bounded_interval(tmp_path):
    """A record with ``ci95_low`` / ``ci95_high`` renders as "0.50% (95% CI 0.01 to 3.01)",
    through ``gen_tables`` (``records.main``) as through ``format_value``; one without keeps
    "mean ± ci95"."""
    rec = _record(**records.ci95_fields(ENS40, trials=400))
    assert records.format_value(rec) == "0.50% (95% CI 0.01 to 3.01)"
    assert records.format_value(_record(mean=40.0, ci95=2.0)) == "40.00 ± 2.00%"
    (tmp_path / "results").mkdir()
    (tmp_path / "results" / "a.json").write_text(records.dumps_record(rec))
    page = tmp_path / "page.md"
    page.write_text("# P\n\n<!-- table:t -->\n<!-- /table -->\n")
    assert records.main(["--docs", str(tmp_path)]) == 0
    assert "| 0.50% (95% CI 0.01 to 3.01) | 20 |" in page.read_text()
    assert records.main(["--docs", str(tmp_path), "--check"]) == 0


def _stub_provenance(checkpoint, device, checkpoint_dirs=None, checkpoint_states=None):
    return {"parts": [{}, {}], "run_dir": None, "budget": {"iterations": 1, "members": 2},
            "fields": {"budget": {"iterations": 1, "members": 2}, "device": "cpu",
                       "torch": "2.13.0", "date": "2026-12-07", "config": None,
                       "published": None}}


def test_the_eval_record_paths_write_the_bounded_ends(monkeypatch):
    """``metaloop eval --record`` (``eval_record``, ``lake_runs_record``) adds the bounded
    ends where the t interval of its per-task values would leave 0-100%, and only there."""
    monkeypatch.setattr(records, "_provenance", _stub_provenance)
    cfg = {"family": {"name": "omniglot", "ways": 20, "shots": 1}, "method": {"name": "r2d2"},
           "eval": {"ways": 20, "shots": 1}}
    lake = {"runs": [{"name": f"run{i:02d}", "error_rate": v / 100}
                     for i, v in enumerate(ENS40, 1)],
            "error_rate": 0.005, "ci95": stats.ci95(ENS40) / 100, "trials": 400,
            "runs_sha256": "0" * 64}
    rec = records.lake_runs_record(cfg, lake, checkpoint=["a", "b"], command="c")
    records.validate_record(rec)
    assert (round(rec["ci95_low"], 2), round(rec["ci95_high"], 2)) == (0.01, 3.01)
    acc = [1 - v / 100 for v in ENS40]
    result = {"steps": [0], "tasks": 20, "seed": 0,
              "accuracy": {"mean": [sum(acc) / 20], "ci95": [stats.ci95(acc)]},
              "per_task": {"accuracy": [acc]}}
    rec = records.eval_record(cfg, result, "accuracy", checkpoint=["a", "b"], command="c")
    records.validate_record(rec)
    ends = stats.bounded_ci95(ENS40)        # accuracy = 100 - error: the ends mirrored
    assert rec["ci95_range"] == [0, 100] and ends is not None
    assert (rec["ci95_low"], rec["ci95_high"]) == pytest.approx((100 - ends[1], 100 - ends[0]),
                                                                abs=1e-6)
    err = {"mean": 0.005, "ci95": stats.ci95(ENS40) / 100, "ways": 20, "shots": 1,
           "trials": 400}
    rec = records.eval_record(cfg, result, "accuracy", checkpoint=["a", "b"], command="c",
                              error_rate=err)
    records.validate_record(rec)
    assert (round(rec["ci95_low"], 2), round(rec["ci95_high"], 2)) == (0.01, 3.01)
    wide = [0.5, 0.6, 0.4, 0.55]
    result = {"steps": [0], "tasks": 4, "seed": 0,
              "accuracy": {"mean": [0.5125], "ci95": [stats.ci95(wide)]},
              "per_task": {"accuracy": [wide]}}
    rec = records.eval_record(cfg, result, "accuracy", checkpoint=["a", "b"], command="c")
    assert "ci95_low" not in rec and "ci95_range" not in rec


def _bounded_metric(r: dict) -> bool:
    """An accuracy or error rate in % (not a difference of two, nor "retained", which can
    pass 100)."""
    m = r["metric"].lower()
    return ("(%)" in m or r.get("unit") == "%") and bool(re.search(r"acc|error", m)) \
        and "difference" not in m


def test_no_committed_interval_of_an_accuracy_or_error_rate_leaves_0_to_100():
    """Every committed record of an accuracy or error rate in % either has a t interval
    inside 0-100% or carries the bounded one, which its per-task or per-seed values give."""
    bounded = []
    for path in sorted((REPO / "docs" / "results").glob("*.json")):
        r = json.loads(path.read_text(encoding="utf-8"))
        if r.get("ci95") is None or not _bounded_metric(r):
            continue
        if "ci95_low" in r:
            assert 0 <= r["ci95_low"] <= r["mean"] <= r["ci95_high"] <= 100, path.name
            values = r.get("per_task") or r.get("per_seed")
            ends = stats.bounded_ci95(values, trials=r.get("trials"))
            assert ends is not None
            assert max(abs(ends[0] - r["ci95_low"]), abs(ends[1] - r["ci95_high"])) < 1e-5
            bounded.append(path.stem)
        else:
            assert 0 <= r["mean"] - r["ci95"] and r["mean"] + r["ci95"] <= 100, path.name
    assert "omniglot_challenge_official_ens40_all" in bounded and len(bounded) >= 6
