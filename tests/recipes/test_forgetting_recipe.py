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
