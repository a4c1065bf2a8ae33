"""``benchmarks/bench_heads.py --records``: the 24 records of the ``benchmarks-heads`` table,
under the committed records' names and with their rows, fields and order, checked before any
timing and refused for a setting the rows do not describe."""

from __future__ import annotations

import json
import math
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from metaloop.evaluate.records import RecordError, cpu_device, validate_record

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "benchmarks"))
sys.path.insert(0, str(ROOT / "tests"))

import bench_heads  # noqa: E402  (benchmarks/ is on the path)
from conftest import committed_records, written_records  # noqa: E402

ENV = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "OMP_NUM_THREADS": "1"}
NAMES = ("sgd", "ridge", "logreg", "logreg-ift", "svm")


def _committed() -> dict[str, dict]:
    found = committed_records("benchmarks_heads_*.json")
    assert len(found) == 24
    return found

def _made_up() -> dict:
    """Per-episode microseconds for every size, head and pass: distinct and made up."""
    return {(N, D): {(name, p): 100.0 * (i + 1) + N + D / 10 + 0.3 * (p == "fwd+bwd")
                     for i, name in enumerate(NAMES) for p in ("fwd", "fwd+bwd")}
            for N, D in bench_heads.SIZES}


def _run(*flags: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "benchmarks/bench_heads.py", *flags], cwd=ROOT,
                          env=ENV, capture_output=True, text=True, timeout=300)


def test_the_records_are_the_committed_ones_with_the_runs_numbers(tmp_path):
    argv = ["--reps", "15", "--records", str(tmp_path / "results")]
    args = bench_heads.parse(argv)
    results = _made_up()
    bench_heads.write_records(results, args, argv)
    written = written_records(tmp_path / "results")
    committed = _committed()
    assert sorted(written) == sorted(committed)
    for name, rec in written.items():
        old = committed[name]
        assert sorted(rec) == sorted(old), name                # the same fields
        for key in ("table", "row", "order", "metric", "unit", "digits", "budget", "n",
                    "ci95", "config", "published"):
            assert rec[key] == old[key], (name, key)
        head, N, D = re.fullmatch(r"(\S+), N=(\d+), D=(\d+) \(.*\)", rec["row"]).groups()
        N, D = int(N), int(D)
        t, sgd = results[N, D][head, "fwd+bwd"], results[N, D]["sgd", "fwd+bwd"]
        assert (rec["mean"], rec["microseconds"], rec["sgd_microseconds"]) == \
            (round(t / sgd, 1), round(t), round(sgd)), name
        assert rec["command"] == "python benchmarks/bench_heads.py --reps 15 --records " + \
            str(tmp_path / "results")
        assert rec["device"] == f"{cpu_device()}, shared" and "+" not in rec["torch"]


def test_nothing_is_written_when_a_record_does_not_validate(tmp_path):
    argv = ["--records", str(tmp_path / "results")]
    results = _made_up()
    results[100, 640]["svm", "fwd+bwd"] = math.nan        # the last record to be made
    with pytest.raises(RecordError, match=r"svm \(nan\) and sgd .* must be finite"):
        bench_heads.write_records(results, bench_heads.parse(argv), argv)
    assert not (tmp_path / "results").exists()


@pytest.mark.parametrize("flags, named", [
    (["--steps", "3"], "--steps 3"), (["--tasks", "2"], "--tasks 2"),
    (["--ways", "3"], "--ways 3"), (["--queries", "5"], "--queries 5"),
    (["--dtype", "float64"], "--dtype float64")])
def test_records_are_refused_for_a_setting_the_rows_do_not_describe(flags, named, tmp_path,
                                                                    capsys):
    with pytest.raises(SystemExit) as e:
        bench_heads.parse([*flags, "--records", str(tmp_path)])
    assert e.value.code == 2
    said = capsys.readouterr().err.splitlines()[-1]
    assert "--records:" in said and named in said
    assert bench_heads.parse([*flags]).records is None                  # fine without
    assert bench_heads.parse(["--reps", "3", "--threads", "2", "--tasks", "4", "--records",
                              str(tmp_path)]).records == str(tmp_path)  # recorded ones


def test_a_bad_records_path_exits_2_before_any_timing(tmp_path, capsys):
    (tmp_path / "file").write_text("not a folder\n")
    with pytest.raises(SystemExit) as e:
        bench_heads.main(["--reps", "1", "--records", str(tmp_path / "file")])
    assert e.value.code == 2
    out = capsys.readouterr()
    assert "--records: cannot create the record's folder" in out.err.splitlines()[-1]
    assert out.out == ""                                      # no header: nothing timed


def test_a_run_with_records_writes_the_committed_set(tmp_path):
    r = _run("--reps", "1", "--records", str(tmp_path / "results"))
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.count("per-episode fwd") == 2               # both tables still printed
    written = sorted((tmp_path / "results").glob("*.json"))
    assert [p.name for p in written] == sorted(_committed())
    for p in written:
        rec = validate_record(json.loads(p.read_text()), where=p.name)
        assert rec["n"] == 1 and rec["microseconds"] > 0 and rec["sgd_microseconds"] > 0
