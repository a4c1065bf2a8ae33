"""``metaloop adapt --tasks 1``: one task has no 95% CI (it printed ``83.33 ± 0.00``)."""

from metaloop.evaluate import mean_ci
from metaloop.recipes import adapt as recipe


def test_one_task_prints_no_ci(tmp_path):
    acc = [5 / 6]
    m, c = mean_ci(acc)
    res = {"lora": {"approach": 3, "accuracy": {"mean": m, "ci95": c}, "trainable": 10,
                    "adapt_seconds": 0.1, "per_task": {"accuracy": acc}},
           "meta-lora-fomaml": {"approach": 3, "accuracy": {"mean": 1.0, "ci95": None},
                                "trainable": 10, "adapt_seconds": 0.1,
                                "per_task": {"accuracy": [1.0]}}}
    text = recipe.table(res)
    assert "83.33 ± n/a" in text and "± 0.00" not in text
    diffs = recipe.paired(res, [("meta-lora-fomaml", "lora")])
    assert diffs["meta-lora-fomaml - lora"]["ci95"] is None
    assert "+16.67 ± n/a points" in recipe.paired_lines(diffs)
    recipe.bar_chart(res, tmp_path / "a.png", "t")
    assert (tmp_path / "a.png").read_bytes()[:4] == b"\x89PNG"
