"""``benchmarks/bench_layout.py --records``: the 9 records of the ``benchmarks-layout`` table
(each learner's two float32 errors and its speed-up), under the committed records' names and
with their rows, fields and order, checked before any work."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

from metaloop.evaluate.records import RecordError, cpu_device, validate_record

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "benchmarks"))
sys.path.insert(0, str(ROOT / "tests"))

import bench_layout  # noqa: E402  (benchmarks/ is on the path)
from conftest import committed_records, written_records  # noqa: E402

ENV = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "OMP_NUM_THREADS": "1"}


def _committed() -> dict[str, dict]:
    found = committed_records("benchmarks_layout_*.json")
    assert len(found) == 9
    return found

def _made_up() -> dict:
    """Each learner's float32 errors and median seconds per layout: distinct and made up."""
    return {kind: {"errors": {"nchw": 5.26e-6 * (i + 1), "cl": 0.0149 * (i + 1)},
                   "seconds": {"nchw": 0.4567 + i, "cl": 0.3512 + i}}
            for i, kind in enumerate(bench_layout.LEARNERS)}


def _run(*flags: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "benchmarks/bench_layout.py", *flags], cwd=ROOT,
                          env=ENV, capture_output=True, text=True, timeout=300)


def test_the_records_are_the_committed_ones_with_the_runs_numbers(tmp_path):
    argv = ["--reps", "5", "--tasks", "4", "--threads", "1", "--records",
            str(tmp_path / "results")]
    args = bench_layout.parse(argv)
    results = _made_up()
    bench_layout.write_records(results, args, argv)
    written = written_records(tmp_path / "results")
    committed = _committed()
    assert sorted(written) == sorted(committed)
    for name, rec in written.items():
        old = committed[name]
        assert sorted(rec) == sorted(old), name                # the same fields
        for key in ("table", "row", "order", "metric", "budget", "n", "ci95", "config",
                    "published", "unit", "digits", "notation"):
            assert rec.get(key) == old.get(key), (name, key)
        assert rec["command"] == "python benchmarks/bench_layout.py " + " ".join(argv)
        assert rec["device"] == f"{cpu_device()}, shared" and "+" not in rec["torch"]
    for kind in bench_layout.LEARNERS:
        stem = f"benchmarks_layout_{bench_layout.LEARNERS[kind]}"
        errors, sec = results[kind]["errors"], results[kind]["seconds"]
        assert written[f"{stem}_nchw_error.json"]["mean"] == float(f"{errors['nchw']:.1e}")
        assert written[f"{stem}_channels_last_error.json"]["mean"] == \
            float(f"{errors['cl']:.1e}")
        speed = written[f"{stem}_speedup.json"]
        assert (speed["mean"], speed["seconds_nchw"], speed["seconds_channels_last"]) == \
            (round(sec["nchw"] / sec["cl"], 2), round(sec["nchw"], 3), round(sec["cl"], 3))


def test_nothing_is_written_when_a_record_does_not_validate(tmp_path):
    argv = ["--records", str(tmp_path / "results")]
    results = _made_up()
    # among the last records made
    results["MetaOptNet (squared-hinge SVM)"]["errors"]["cl"] = math.nan
    with pytest.raises(RecordError, match="mean must be a finite number"):
        bench_layout.write_records(results, bench_layout.parse(argv), argv)
    assert not (tmp_path / "results").exists()


def test_a_bad_records_path_exits_2_before_any_work(tmp_path, capsys):
    """Before the data too: the missing Omniglot folder is not reached."""
    (tmp_path / "file").write_text("not a folder\n")
    with pytest.raises(SystemExit) as e:
        bench_layout.main(["--reps", "1", "--root", str(tmp_path / "none"),
                           "--records", str(tmp_path / "file")])
    assert e.value.code == 2
    out = capsys.readouterr()
    assert "--records: cannot create the record's folder" in out.err.splitlines()[-1]
    assert out.out == ""                                       # no header: nothing measured


def test_a_run_with_records_writes_the_committed_set(tmp_path, omniglot_root):
    r = _run("--reps", "1", "--tasks", "1", "--root", str(omniglot_root),
             "--records", str(tmp_path / "results"))
    assert r.returncode == 0, r.stderr[-2000:]
    assert all(kind in r.stdout for kind in bench_layout.LEARNERS)    # the table still printed
    written = sorted((tmp_path / "results").glob("*.json"))
    assert [p.name for p in written] == sorted(_committed())
    for p in written:
        rec = validate_record(json.loads(p.read_text()), where=p.name)
        assert rec["n"] == 1 and rec["mean"] > 0, p.name
