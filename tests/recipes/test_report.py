import json

from metaloop.recipes.report import write_json


def test_non_finite_numbers_are_written_as_null_so_any_json_reader_reads_the_file(tmp_path):
    # e.g. forgetting's "retained" is NaN when nothing was learned; json.dumps would write NaN
    path = tmp_path / "results.json"
    write_json(path, {"retained": float("nan"), "rows": [1.5, float("inf"), (2, -float("inf"))],
                      "nested": {"ok": 0.25, "name": "x"}})
    text = path.read_text()
    assert "NaN" not in text and "Infinity" not in text
    got = json.loads(text, parse_constant=lambda c: (_ for _ in ()).throw(ValueError(c)))
    assert got == {"retained": None, "rows": [1.5, None, [2, None]],
                   "nested": {"name": "x", "ok": 0.25}}


def test_a_table_and_plot_of_one_task_show_no_ci(tmp_path):
    # mean_ci gives no CI (None) for one task: the table says n/a, the plot draws no band
    from metaloop.recipes.report import plot_curves, table

    one = {"steps": [0, 1], "accuracy": {"mean": [0.5, 0.8333], "ci95": [None, None]},
           "loss": {"mean": [1.0, 0.5], "ci95": [None, None]}}
    two = {"steps": [0, 1], "accuracy": {"mean": [0.5, 0.75], "ci95": [0.1, 0.05]},
           "loss": {"mean": [1.0, 0.5], "ci95": [0.2, 0.1]}}
    text = table({"one": one, "two": two}, "accuracy")
    assert "83.33 ± n/a" in text and "50.00 ± 10.00" in text
    assert "0.500 ± n/a" in table({"one": one}, "loss")
    plot_curves({"one": one, "two": two}, "loss", tmp_path / "c.png", "t")
    assert (tmp_path / "c.png").read_bytes()[:4] == b"\x89PNG"
