"""``metaloop forgetting`` prints each accuracy with the 95% CI its record carries: the
bounded interval where ``mean ± ci95`` would leave 0-100% ("42.0 ± 96.9" ran from -54.9% to
138.9% while the record said "0.0 to 99.9"), the t interval elsewhere."""

from __future__ import annotations

import json

from metaloop.cli.main import main
from metaloop.evaluate.heldout import format_mean_ci

TINY = ["--steps", "6", "--eval-every", "3", "--train-per-class", "12", "--val-per-class", "4",
        "--test-per-class", "8", "--hidden", "16,16", "--batch-size", "16", "--no-progress"]
LABELS = {"new acc": 1, "old acc": 2, "avg acc": 6}      # the table's accuracy columns


def _cells(row: str) -> list[str]:
    return [c.strip() for c in row.split("  ") if c.strip()]


def test_the_table_shows_the_interval_the_record_carries(tmp_path, capsys,
                                                          fashion_mnist_root):
    out, rec_dir = tmp_path / "run", tmp_path / "records"
    assert main(["--threads", "1", "forgetting", "--scenario", "two-task", "--strategies",
                 "naive", "--seeds", "2", "--root", str(fashion_mnist_root), "--out", str(out),
                 "--record", str(rec_dir), *TINY]) == 0
    text = capsys.readouterr().out
    row = next(line for line in text.splitlines() if line.startswith("naive "))
    cells = _cells(row)
    (rec,) = [json.loads(p.read_text()) for p in rec_dir.glob("*.json")]
    bounded = 0
    for label, col in LABELS.items():
        m = rec["other_metrics"][label]
        mean, _, interval = cells[col].partition(" ")     # (the record rounds its mean)
        assert abs(float(mean) - m["mean"]) <= 0.05 + 1e-9, (label, row)
        if "ci95_low" in m:
            assert interval == f"({m['ci95_low']:.1f} to {m['ci95_high']:.1f})", (label, row)
            bounded += 1
        else:
            assert interval == format_mean_ci(0, m["ci95"] / 100, ".1f", 100)[4:], (label, row)
        assert m["trials"] > 0
    # two seeds of a tiny run: t intervals of 12.7 x sd; at least one leaves 0-100%
    assert bounded >= 1, row


def test_status_lines_go_to_stderr_and_stdout_holds_the_tables(tmp_path, capsys):
    """What was written and how long it took is status, as the progress is: on stderr, so
    that a script reading stdout gets the tables alone, the same on every run."""
    from metaloop.cli.main import main

    out = tmp_path / "fg"
    assert main(["--threads", "1", "forgetting", "--scenario", "two-task", "--strategies",
                 "naive", "--seeds", "1", "--steps", "5", "--out", str(out),
                 "--no-progress"]) == 0
    got = capsys.readouterr()
    assert "wrote " not in got.out and f"wrote {out / 'results.json'}" in got.err
    assert got.out.lstrip("\n").startswith("two-task")
