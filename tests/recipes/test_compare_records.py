"""The committed records of ``metaloop --threads 1 compare`` (``docs/results/
sinusoid_compare_<method>.json``) against the shipped config they were measured with and
the claims the README and docs/results.md make of them."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from metaloop.recipes import compare

RECORDS = Path(__file__).resolve().parents[2] / "docs" / "results"
META_LEARNERS = ("maml", "fomaml", "reptile", "anil")


def _record(method: str) -> dict:
    return json.loads((RECORDS / f"sinusoid_compare_{method}.json").read_text())


def test_there_is_one_record_per_shipped_method_measured_with_its_budget():
    cfg = compare.load_config("sinusoid")
    for method in compare.methods_for(cfg):
        rec = _record(method)
        assert rec["command"] == "metaloop --threads 1 compare", method
        assert rec["steps"] == cfg["eval"]["steps"] and rec["n"] == cfg["eval"]["tasks"]
        want = 0 if method in compare.NOT_META_TRAINED else \
            compare.method_config(cfg, method)["train"]["iterations"]
        assert rec["budget"]["iterations"] == want, method


@pytest.mark.parametrize("method", META_LEARNERS)
def test_every_meta_learners_error_falls_from_1_to_10_steps(method):
    mean = _record(method)["mean_per_step"]
    assert mean[10] < mean[1], (method, mean)


@pytest.mark.parametrize("baseline", ["pretrain", "scratch"])
def test_mamls_interval_is_below_the_baselines_at_every_step_from_1_on(baseline):
    maml, base = _record("maml"), _record(baseline)
    for k in range(1, 11):
        assert maml["mean_per_step"][k] + maml["ci95_per_step"][k] < \
            base["mean_per_step"][k] - base["ci95_per_step"][k], (baseline, k)
