"""``metaloop.recipes.forgetting``: the settings' checks and one tiny experiment from Python."""

from __future__ import annotations

import pytest

from metaloop.recipes import forgetting


def test_settings_fill_the_scenario_defaults():
    s = forgetting.settings("two-task", strategies="naive,replay", seeds=2, seed=5)
    d = forgetting.DEFAULTS["two-task"]
    assert s["seeds"] == [5, 6] and s["strategies"] == ["naive", "replay"]
    assert (s["steps"], s["batch_size"], s["eval_every"]) == \
        (d["steps"], d["batch_size"], d["eval_every"])
    assert s["pretrain_steps"] == s["steps"]


@pytest.mark.parametrize("kw,message", [
    ({"strategies": "naive,nope"}, "bad --strategies"),
    ({"strategies": "naive,naive"}, "bad --strategies"),
    ({"steps": -1}, "--steps must be positive"),
    ({"seeds": 0}, "--seeds must be positive"),
    ({"hidden": [0]}, "--hidden must be positive"),
    ({"replay_ratio": 1.5}, "replay"),
])
def test_bad_settings_are_named(kw, message):
    with pytest.raises(ValueError, match=message):
        forgetting.settings("two-task", **kw)


@pytest.mark.parametrize("text", ["naive,,replay", "naive,replay,", ",naive"])
def test_an_empty_item_in_strategies_is_refused(text):
    # QA: "naive,,replay" was taken for "naive,replay" (the blank dropped)
    with pytest.raises(ValueError, match=r"--strategies .* has an empty item"):
        forgetting.settings("two-task", strategies=text)


def test_the_data_options_given_are_recorded(monkeypatch, tmp_path):
    # QA: results.json named --data but none of the options that chose its experiences
    _fixed_seeds(monkeypatch, [[[0.5, 0], [0.5, 0.5]]])
    data = {k: None for k in forgetting.DATA_OPTIONS}
    data.update(data=tmp_path / "d.npz", classes_per_experience=3, val_per_class=0)
    exps = _tiny_exps(tmp_path, **data)
    s = forgetting.settings("split-data-class", strategies="naive", seeds=1)
    results = forgetting.run(s, exps, data=data)[1]
    path = str((tmp_path / "d.npz").resolve())
    assert results["data"] == path
    assert results["data_options"] == {"data": path, "val_per_class": 0,
                                       "classes_per_experience": 3}
    again = forgetting.experiences("split-data-class", **results["data_options"])
    assert [e.classes for e in again] == [e.classes for e in exps] == [(0, 1, 2), (3, 4, 5)]
    assert "data_options" not in forgetting.run(s, exps)[1]        # not given: not known


def test_an_unknown_scenario_is_named():
    with pytest.raises(ValueError, match="unknown scenario 'three-task'"):
        forgetting.settings("three-task")


def test_a_tiny_experiment_reports_every_strategy(fashion_mnist_root, tmp_path):
    s = forgetting.settings("two-task", strategies="naive,joint", seeds=1, steps=4,
                            eval_every=2, batch_size=8)
    exps = forgetting.experiences("two-task", root=fashion_mnist_root, train_per_class=10,
                                  val_per_class=4, test_per_class=10)
    done = []
    runs, results = forgetting.run(s, exps, done.append)
    assert sum(done) == forgetting.total_steps(s, exps)
    assert set(results["strategies"]) == {"naive", "joint"} and len(runs["naive"]) == 1
    for r in results["strategies"].values():
        assert 0 <= r["summary"]["old_accuracy"]["mean"] <= 1
    forgetting.write(tmp_path, s, exps, runs, results)
    assert (tmp_path / "results.json").is_file() and (tmp_path / "accuracy_matrix.png").is_file()
    assert "naive" in forgetting.table(results["strategies"])


# -- a metric undefined in some seeds; one seed has no CI -----------------------------------

def _fixed_seeds(monkeypatch, matrices):
    """``forgetting.run`` with seed ``i``'s accuracy matrix ``matrices[i]`` for every
    strategy (no training)."""
    import torch

    def one_seed(s, exps, seed, update, strategies=None, on_unit=None):
        r = torch.tensor(matrices[seed - s["seeds"][0]], dtype=torch.float64)
        curve = [{"step": 0, "experience": 0, "accuracy": {e.name: 0.5 for e in exps}}]
        return {name: {"seed": seed, "matrix": r, "curve": curve, "boundaries": [0, 4, 8],
                       "wall_s": 0.0} for name in strategies or s["strategies"]}
    monkeypatch.setattr(forgetting, "_one_seed", one_seed)


def _tiny_exps(tmp_path, **options):
    import numpy as np

    x = np.arange(6).repeat(10)[:, None] * np.ones((1, 4), np.float32)
    np.savez(tmp_path / "d.npz", x=x.astype(np.float32), y=np.arange(6).repeat(10))
    return forgetting.experiences("split-data-class", **({"data": tmp_path / "d.npz"}
                                                         | options))


def test_retained_is_averaged_over_the_seeds_where_it_is_defined(monkeypatch, tmp_path):
    # QA: one seed that learned nothing on the earlier experiences (R[j, j] = 0 for j < T-1)
    # has retained = 0/0; it made the mean over all seeds NaN ("nan ± nan", JSON null),
    # wiping out the two seeds where it is defined.
    import json

    from metaloop.evaluate.stats import ci95

    _fixed_seeds(monkeypatch, [
        [[0.5, 0, 0], [0.5, 0.5, 0], [0.5, 0.0, 0.5]],        # retained 0.5 / 1.0
        [[0.0, 0, 0], [0.5, 0.0, 0], [0.0, 0.0, 0.5]],        # nothing learned: undefined
        [[1.0, 0, 0], [1.0, 0.5, 0], [1.0, 0.5, 0.5]]])       # retained 1.5 / 1.5
    s = forgetting.settings("split-data-class", strategies="naive,replay", seeds=3)
    exps = _tiny_exps(tmp_path)
    runs, results = forgetting.run(s, exps)
    forgetting.write(tmp_path, s, exps, runs, results)
    got = json.loads((tmp_path / "results.json").read_text())["strategies"]["naive"]["summary"]
    want = ci95([0.5, 1.0])
    assert got["retained"] == {"mean": 0.75, "ci95": pytest.approx(want), "n": 2,
                               "undefined_seeds": [1], "per_seed": [0.5, None, 1.0]}
    assert got["bwt"]["n"] == 3 and got["bwt"]["undefined_seeds"] == []
    text = forgetting.table(results["strategies"])
    assert f"75.0 ± {100 * want:.1f} (2 of 3 seeds)" in text and "nan" not in text
    assert "retained is undefined (naive: seed 1; replay: seed 1)" in text
    assert "Its mean is over the seeds where it is defined." in text.replace("\n", " ")


def test_retained_undefined_in_every_seed_and_one_seed_without_a_ci(monkeypatch, tmp_path):
    _fixed_seeds(monkeypatch, [[[0.0, 0, 0], [0.5, 0.0, 0], [0.0, 0.0, 0.5]]] * 2)
    exps = _tiny_exps(tmp_path)
    s = forgetting.settings("split-data-class", strategies="naive", seeds=2)
    summary = forgetting.run(s, exps)[1]["strategies"]["naive"]["summary"]
    assert summary["retained"]["mean"] is None and summary["retained"]["ci95"] is None
    assert summary["retained"]["n"] == 0 and summary["retained"]["undefined_seeds"] == [0, 1]
    text = forgetting.table({"naive": {"summary": summary}})
    assert "undefined (0 of 2 seeds)" in text and "defined." not in text
    # one seed: a mean, and no CI (it printed "± 0.0", and wrote "ci95": 0.0)
    s = forgetting.settings("split-data-class", strategies="naive", seeds=1)
    summary = forgetting.run(s, exps)[1]["strategies"]["naive"]["summary"]
    assert summary["new_accuracy"] == {"mean": 0.5, "ci95": None, "n": 1,
                                       "undefined_seeds": [], "per_seed": [0.5]}
    row = forgetting.table({"naive": {"summary": summary}}).splitlines()[2]
    assert row.split()[:4] == ["naive", "50.0", "±", "n/a"] and "± 0.0" not in row
    assert "  undefined" in row


@pytest.mark.parametrize("stop", [KeyboardInterrupt(), OSError(28, "No space left on device")])
def test_a_write_cut_short_leaves_no_results_beside_missing_plots(monkeypatch, tmp_path, stop):
    """Ctrl-C or a full disk at the last plot left results.json and metrics.jsonl (written
    first) in the folder, without the heatmap; a plot's OSError was a traceback."""
    from metaloop.continual import plots
    from metaloop.train.checkpoint import WriteError

    _fixed_seeds(monkeypatch, [[[0.9, 0.1], [0.5, 0.8]]])
    exps = _tiny_exps(tmp_path)
    s = forgetting.settings("split-data-class", strategies="naive", seeds=1, steps=4)
    runs, results = forgetting.run(s, exps, lambda n: None)
    out = tmp_path / "out"
    out.mkdir()

    def cut(*a, **k):
        raise stop
    monkeypatch.setattr(plots, "matrix_heatmaps", cut)
    expected = KeyboardInterrupt if isinstance(stop, KeyboardInterrupt) else WriteError
    with pytest.raises(expected) as e:
        forgetting.write(out, s, exps, runs, results)
    assert list(out.iterdir()) == []
    if expected is WriteError:
        assert str(e.value) == (f"cannot write {out / 'accuracy_matrix.png'}: No space left "
                                f"on device")
