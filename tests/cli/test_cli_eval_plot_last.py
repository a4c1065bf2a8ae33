"""``metaloop eval --out --record`` writes ``results.json`` and the record before its plot: an
eval killed while drawing (a lent GPU's command stopped at its time limit) keeps the numbers
it computed."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from metaloop.cli.main import main
from metaloop.evaluate.records import validate_record
from metaloop.recipes import report

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from conftest import tensor_config, train_run, write_tensor_file  # noqa: E402


def test_results_and_record_are_written_before_the_plot(tmp_path, monkeypatch):
    run = train_run(tmp_path / "ten", tensor_config(write_tensor_file(tmp_path / "f.npz")))
    out, rec = tmp_path / "ev", tmp_path / "rec.json"
    drawn = []

    def killed(*a, **kw):
        drawn.append(((out / "results.json").exists(), rec.exists()))
        raise KeyboardInterrupt                  # as a kill while the figure is drawn
    monkeypatch.setattr(report, "plot_curves", killed)
    assert main(["eval", "--checkpoint", str(run), "--no-progress", "--out", str(out),
                 "--record", str(rec)]) == 130
    assert drawn == [(True, True)]               # both on disk before the plot began
    r = json.loads((out / "results.json").read_text())
    assert r["metric"] == "accuracy" and r["methods"]
    validate_record(json.loads(rec.read_text()), where=str(rec))
    assert sorted(p.name for p in out.iterdir()) == ["results.json"]
