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
