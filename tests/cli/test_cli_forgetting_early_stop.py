"""``metaloop forgetting --early-stop`` on your own small data: an experience whose
validation accuracy never rises keeps its last evaluated step (never the model from before
its fine-tuning), the step kept of each experience and seed is in results.json and
runs.json (chosen), the printed output names the fine-tunings kept before any improvement on
validation, and a resumed run gives the same. The units of results.json and metrics.jsonl
are named, and the forgetting of each earlier experience is printed."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from metaloop.cli.main import main
from metaloop.recipes import forgetting as recipe

TINY = ["--scenario", "split-data-task", "--steps", "20", "--pretrain-steps", "20",
        "--lr", "0.03", "--eval-every", "5", "--early-stop", "2", "--val-per-class", "1",
        "--hidden", "8", "--batch-size", "8", "--seeds", "2", "--strategies", "naive,replay",
        "--no-progress"]


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """(a 4-class .npz whose classes 2 and 3 are all-zero inputs, so the second experience's
    validation accuracy is 50% whatever the model; the folder of a whole run on it, its
    standard output)."""
    d = tmp_path_factory.mktemp("early_stop")
    g = torch.Generator().manual_seed(0)
    y = torch.arange(4).repeat_interleave(10)
    x = torch.nn.functional.one_hot(y, 4).float() * 3 + torch.randn(len(y), 4, generator=g)
    x[y >= 2] = 0
    np.savez(d / "d.npz", x=x.numpy(), y=y.numpy())
    return d / "d.npz", d


def _cmd(data, out, *extra):
    return ["forgetting", *TINY, "--data", str(data), "--out", str(out), *extra]


def test_a_flat_validation_keeps_a_fine_tuned_step_and_says_so(setup, capsys):
    data, d = setup
    out = d / "whole"
    assert main(_cmd(data, out)) == 0
    text = " ".join(capsys.readouterr().out.split())
    r = json.loads((out / "results.json").read_text())
    for name in ("naive", "replay"):
        chosen = r["strategies"][name]["chosen"]
        for seed in range(2):
            # experience 1 ('2, 3'): 50% on validation throughout, stopped after two
            # evaluations without a rise, and its last evaluation kept, not step 0
            assert chosen["val_start"][seed][1] == chosen["val_best"][seed][1] == 0.5
            assert chosen["best_step"][seed][1] == chosen["steps"][seed][1] == 10
            assert 1 <= chosen["best_step"][seed][0] <= chosen["steps"][seed][0] <= 20
    units = json.loads((out / "runs.json").read_text())["units"]
    assert all(u["chosen"][1]["best_step"] == 10 for u in units)
    assert "Early stopping kept a step before any improvement on validation in 4 " \
           "fine-tuning(s)" in text
    assert "naive, seed 0, '2, 3': step 10 of 10 (validation 50.0%, 50.0% before)" in text
    # units named; forgetting of each earlier experience printed
    assert r["units"] == recipe.UNITS and "fraction in [0, 1]" in r["units"]["accuracy"]
    lines = [json.loads(ln) for ln in (out / "metrics.jsonl").read_text().splitlines()]
    assert {ln["unit"] for ln in lines} == {"fraction"}
    assert "forgetting of each earlier experience (%, mean over 2 seeds" in text
    forgot = r["strategies"]["naive"]["experience_forgetting_mean"]
    assert forgot == pytest.approx(np.mean(r["strategies"]["naive"]["experience_forgetting"],
                                           0).tolist())
    assert f"naive {100 * forgot[0]:.1f} replay" in text


def test_a_resumed_run_keeps_the_same_steps(setup, monkeypatch, capsys):
    data, d = setup
    whole, out = d / "whole", d / "resumed"
    if not (whole / "results.json").exists():
        assert main(_cmd(data, whole)) == 0
    real, done = recipe._one_seed, []

    def cut(s, exps, seed, update, strategies=None, on_unit=None):
        def each(name, r):
            on_unit(name, r)
            done.append(name)
            if len(done) == 3:
                raise KeyboardInterrupt
        return real(s, exps, seed, update, strategies, each)

    with monkeypatch.context() as m:
        m.setattr(recipe, "_one_seed", cut)
        assert main(_cmd(data, out)) == 130
    assert main(_cmd(data, out, "--resume")) == 0
    capsys.readouterr()

    def without_times(path):
        res = json.loads(path.read_text())
        res.pop("wall_s"), res.pop("cpu_seconds")
        for r in res["strategies"].values():
            r.pop("wall_s")
        return res

    assert without_times(out / "results.json") == without_times(whole / "results.json")


def test_a_kept_run_without_chosen_steps_is_not_resumed_with_early_stop(setup, monkeypatch,
                                                                         capsys):
    """A partial.json of an earlier metaloop (no chosen steps) chose its parameters by
    another rule: resuming it with --early-stop is refused by name."""
    data, d = setup
    out = d / "old"
    real = recipe._one_seed

    def cut(s, exps, seed, update, strategies=None, on_unit=None):
        def each(name, r):
            r.pop("chosen")                            # as an earlier metaloop kept it
            on_unit(name, r)
            raise KeyboardInterrupt
        return real(s, exps, seed, update, strategies, each)

    with monkeypatch.context() as m:
        m.setattr(recipe, "_one_seed", cut)
        assert main(_cmd(data, out)) == 130
    capsys.readouterr()
    assert main(_cmd(data, out, "--resume")) == 2
    err = capsys.readouterr().err
    assert "were made by an earlier metaloop" in err and "partial.json" in err
