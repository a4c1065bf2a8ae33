"""``metaloop compare`` prints the 95% CI ``metaloop eval`` prints for the same per-task
values (bounded by each task's ways x queries: "100.00 (58.03 to 100.00)" over 3 tasks of
2 x 5 queries, where it printed "100.00 ± 0.00"), and its results.json keeps the per-task
values and trials that interval comes from."""

from __future__ import annotations

import json

from metaloop.cli import compare as compare_cli
from metaloop.evaluate import records, stats
from metaloop.recipes import report


def _res(tasks: int, acc: list[float]) -> dict:
    result = {"steps": [0], "tasks": tasks, "seed": 1000003,
              "accuracy": {"mean": [sum(acc) / len(acc)], "ci95": [stats.ci95(acc)]},
              "loss": {"mean": [0.1], "ci95": [stats.ci95([0.1] * len(acc))]},
              "per_task": {"accuracy": [acc], "loss": [[0.1] * len(acc)]}}
    cfg = {"family": {"name": "omniglot", "ways": 2, "shots": 5, "queries": 5},
           "eval": {"tasks": tasks, "ways": 0, "shots": 0, "queries": 0, "seed": 1000003}}
    return {"metric": "accuracy", "family": "omniglot", "config": cfg,
            "methods": {"protonet": result}, "evaluation": {"protonet": "transductive"},
            "timing": {"protonet": {"train_s": 0.0, "eval_s": 0.0, "threads": 1}},
            "wall_s": 0.0, "learners": {}, "heldout": None}


def test_compare_prints_the_interval_eval_prints(tmp_path, capsys):
    res = _res(3, [1.0, 1.0, 1.0])
    compare_cli._report(res, tmp_path)
    text = capsys.readouterr().out
    # what metaloop eval prints for these tasks (its report.table call, with the trials)
    printed = report.table(res["methods"], "accuracy", trials=10)
    assert "100.00 (58.03 to 100.00)" in printed
    assert "protonet  100.00 (58.03 to 100.00)" in text and "± 0.00" not in text
    assert "over 3 tasks)" in text
    m = json.loads((tmp_path / "results.json").read_text())["methods"]["protonet"]
    assert m["trials"] == 30 and m["per_task"]["accuracy"] == [[1.0, 1.0, 1.0]]
    ends = records.ci95_fields([100 * v for v in m["per_task"]["accuracy"][0]],
                               trials=m["trials"])
    assert f"({ends['ci95_low']:.2f} to {ends['ci95_high']:.2f})" in text


def test_one_task_is_one_task(tmp_path, capsys):
    compare_cli._report(_res(1, [1.0]), tmp_path)
    text = capsys.readouterr().out
    assert "over 1 task)" in text and "1 tasks" not in text and "100.00 ± n/a" in text
