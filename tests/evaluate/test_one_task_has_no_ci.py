"""A mean of one task (or one official run) has no 95% confidence interval: ``metaloop eval``
says so instead of printing ``± 0.00`` as one, and its record's ``ci95`` is ``null``."""

import json
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from metaloop.cli.main import main
from metaloop.evaluate import records
from metaloop.evaluate.records import validate_record

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from conftest import omniglot_config  # noqa: E402


@pytest.fixture(scope="module")
def run(omniglot_root, trained_run):
    """A ProtoNet run trained as ``protonet_run`` is, on the background alphabets (Vinyals'
    train split shares characters with the evaluation alphabets), and evaluated within one
    alphabet of the evaluation split with 1 query per class."""
    return trained_run(omniglot_config(
        omniglot_root, family_lines='split = "background"\n',
        eval_lines='split = "evaluation"\nwithin_alphabet = true\nqueries = 1\n'
                   'tasks = 2\nsteps = [0]\n'))


def test_one_task_prints_and_records_no_ci(run, tmp_path, capsys):
    capsys.readouterr()
    assert main(["eval", "--checkpoint", str(run), "--tasks", "1", "--record",
                 str(tmp_path / "one.json"), "--no-progress"]) == 0
    out, err = capsys.readouterr()
    assert "(one task: no 95% CI; 5 trials)" in out and "± 0.00%" not in out
    assert "one task has no confidence interval" in err
    rec = validate_record(json.loads((tmp_path / "one.json").read_text()))
    assert rec["n"] == 1 and rec["ci95"] is None and rec["accuracy_ci95"] is None
    assert len(rec["per_task"]) == 1
    assert records.paired_difference(rec, rec) == {"mean": 0.0, "ci95": None, "n": 1}
    assert "one task" not in records.format_value(rec)            # the table shows the mean
    # two tasks: the CI over them, Student's t_975(1) * sd / sqrt(n) with the sample sd
    assert main(["eval", "--checkpoint", str(run), "--tasks", "2", "--record",
                 str(tmp_path / "two.json"), "--no-progress"]) == 0
    out = capsys.readouterr().out
    rec = validate_record(json.loads((tmp_path / "two.json").read_text()))
    t1 = pytest.importorskip("scipy.stats").t.ppf(0.975, 1)                 # 12.706
    want = t1 * np.std(rec["per_task"], ddof=1) / np.sqrt(2)
    assert rec["ci95"] == pytest.approx(want, abs=1e-4)
    ends = records.ci95_fields(rec["per_task"], trials=10)     # each task's error in %
    if ends:          # the t interval of two tasks leaves [0, 100]%: the bounded one
        assert (f"(95% CI {ends['ci95_low']:.2f} to {ends['ci95_high']:.2f}%, bounded, over 2 "
                f"tasks, 10 trials)") in out
    else:
        assert f"± {rec['ci95']:.2f}% (95% CI over 2 tasks, 10 trials)" in out


def _lake_run(root, ways=3):
    """One official-style run folder of random 105 x 105 drawings."""
    g = np.random.default_rng(0)
    (root / "training").mkdir(parents=True)
    (root / "test").mkdir()
    lines = []
    for k in range(ways):
        for sub, name in (("training", f"class{k + 1:02d}"), ("test", f"item{k + 1:02d}")):
            ink = g.random((105, 105)) < 0.1
            Image.fromarray(np.where(ink, 0, 255).astype(np.uint8)).save(
                root / sub / f"{name}.png")
        lines.append(f"{root.name}/test/item{k + 1:02d}.png "
                     f"{root.name}/training/class{k + 1:02d}.png")
    (root / "class_labels.txt").write_text("\n".join(lines) + "\n")


def test_one_official_run_prints_and_records_no_ci(run, tmp_path, capsys):
    _lake_run(tmp_path / "run01")
    capsys.readouterr()
    assert main(["eval", "--checkpoint", str(run), "--lake-runs", str(tmp_path / "run01"),
                 "--record", str(tmp_path / "r.json"), "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "(one run: no 95% CI; 3 trials)" in out and "95% CI over 1 runs" not in out
    rec = validate_record(json.loads((tmp_path / "r.json").read_text()))
    assert rec["n"] == 1 and rec["ci95"] is None
