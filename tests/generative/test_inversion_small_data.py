"""The inversion studies on small data: every row scored on the same number of images
(``inversion.fit_scored``), and the warnings of ``inversion.reliability`` at its thresholds;
``experiment.resolve_classes``; the protocol record's published number only at the paper's
data and settings (``protocol.published_for``)."""

from __future__ import annotations

import pytest
import torch

from metaloop.generative import experiment, inversion, protocol
from metaloop.generative.experiment import Settings


def test_fit_scored_lowers_every_row_to_what_the_test_set_gives():
    s = Settings(data="fashion-mnist", quality_samples=2000)
    assert inversion.fit_scored(s, 10_000, 10, 200) == (200, None)    # the docs' run: as asked
    per_class, note = inversion.fit_scored(s, 100, 10, 200)
    assert per_class == 5 and "every row is scored on 50 images (5 per class)" in note
    assert inversion.fit_scored(s, 100, 10, 1) == (1, None)     # check_class_scoring names it
    with pytest.raises(ValueError, match="10 classes need 40 test images, but there are 39: "
                                         "use more test images"):
        inversion.fit_scored(s, 39, 10, 200)
    with pytest.raises(ValueError, match=r"raise --test-examples \(now 39\)"):
        inversion.fit_scored(Settings(data="fashion-mnist", test_examples=39), 39, 10, 200)


def _warnings(**kw):
    args = dict(n=2000, ref=8000, per_class=200, ref_per_class=torch.full((10,), 800),
                train_per_class=torch.full((10,), 6000), chance=0.1,
                independent_accuracy=0.12)
    return [w["kind"] for w in inversion.reliability(**{**args, **kw})]


def test_reliability_flags_only_counts_below_its_thresholds():
    assert _warnings() == []                                       # Fashion-MNIST's docs run
    lo, few = inversion.FD_MIN_IMAGES, inversion.LESSON_MIN_TRAIN_PER_CLASS
    assert _warnings(n=lo, ref=lo, per_class=lo, ref_per_class=torch.full((10,), lo),
                     train_per_class=torch.full((10,), few)) == []
    assert _warnings(n=lo - 1) == ["frechet"]
    assert _warnings(ref=lo - 1) == ["frechet"]
    assert _warnings(per_class=lo - 1) == ["frechet_class"]
    counts = torch.full((10,), 800)
    counts[3] = lo - 1
    assert _warnings(ref_per_class=counts) == ["frechet_class"]
    counts[3] = 1                                 # a class without 2 is not measured at all
    assert _warnings(ref_per_class=counts) == []
    train = torch.full((10,), few)
    train[0] = few - 10                                   # the mean per class counts
    assert _warnings(train_per_class=train) == ["lesson"]
    train[1] = few + 10
    assert _warnings(train_per_class=train) == []
    omniglot = torch.full((50,), 487)
    omniglot[0] = 210                          # the Omniglot docs run: small alphabets too
    assert _warnings(train_per_class=omniglot) == []
    assert _warnings(scored_note="fewer") == ["scored"]


def test_resolve_classes_takes_indices_and_names():
    names = ["circle", "cross", "square"]
    assert experiment.resolve_classes(["square", "0", 1], names) == [2, 0, 1]
    with pytest.raises(ValueError, match=r"unknown class\(es\) \[3, star\] for CVAE sampling: "
                                         r"the data has classes 0..2 \(0 'circle', 1 'cross', "
                                         r"2 'square'\)"):
        experiment.resolve_classes([3, "star"], names)
    # folders named by digits: digits in range are an index, as they always were, so a
    # command written before names were taken means what it meant; out of range, a name
    digits = ["1", "2", "3"]
    assert experiment.resolve_classes(["2", "1"], digits) == [2, 1]
    assert experiment.resolve_classes(["3"], digits) == [2]
    assert experiment.resolve_classes(["0", "2"], ["0", "1", "2"]) == [0, 2]
    with pytest.raises(ValueError, match="more than once"):
        experiment.resolve_classes(["cross", 1], names)


# the paper's data and settings, as a run's saved settings hold them
PAPER = dict(data="omniglot-mixed", latent=50, hidden=(200, 200), batch_size=20, lr=1e-3,
             stages=8, train_examples=None, resample="bilinear", seed=0)


@pytest.mark.parametrize("change, published", [
    ({}, True),
    ({"resample": "bicubic"}, True),
    ({"data": "/home/me/digits"}, False),            # your own data
    ({"data": "omniglot"}, False),                   # Lake's split: not the paper's sizes
    ({"stages": 7}, False),
    ({"latent": 8}, False),
    ({"train_examples": 1000}, False),
])
def test_the_paper_s_number_rides_only_with_the_paper_s_data_and_settings(change, published):
    s = {**PAPER, **change}
    assert protocol.published_for(s) == (protocol.PUBLISHED if published else None)
    result = {"settings": {**s, "curve_k": 2, "curve_examples": 2, "curve_every": 0},
              "test": {"nll": 110.0, "nll_ci95": 1.0, "elbo": -112.0, "k": 5000, "n": 8070},
              "total_passes": 3280, "passes": 3280, "test_examples": "all", "n_test": 8070,
              "curve": [], "sessions": [{"threads": 1}], "eval_cpu_s": 1.0, "threads": 1,
              "train_cpu_s": 100.0}
    rec = protocol.record(result, command="metaloop vae --protocol iwae", device="CPU")
    assert rec["published"] == (protocol.PUBLISHED if published else None)
