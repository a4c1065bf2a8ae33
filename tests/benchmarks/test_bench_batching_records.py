"""``benchmarks/bench_batching.py --records``: the records it writes are the committed ones
of the ``benchmarks-batching`` table (same files, tables, rows and order), each path is
checked before any timing, and ``--skip-conv`` writes the sinusoid's records only."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from metaloop.evaluate.records import cpu_device, cpu_name, validate_record

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "benchmarks"))
sys.path.insert(0, str(ROOT / "tests"))

import bench_batching  # noqa: E402  (benchmarks/ is on the path)
from conftest import committed_records  # noqa: E402

SECONDS = {"sinusoid": {"loop": 0.05, "threads": 0.04, "vmap": 0.007},
           "omniglot": {"loop": 4.0, "threads": 3.0, "vmap": 16.0}}
SHAPE = ("table", "row", "metric", "unit", "order", "ci95", "config", "published")


def _results(keys, reps=12):
    return {k: {"reps": bench_batching.case_reps(k, reps), "seconds": dict(SECONDS[k])}
            for k in keys}


def _committed() -> dict[str, dict]:
    found = committed_records("benchmarks_batching_*.json")
    return found

def test_the_records_are_the_committed_ones(tmp_path):
    argv = ["--reps", "12", "--threads", "2", "--records", str(tmp_path)]
    written = bench_batching.write_records(_results(("sinusoid", "omniglot")), argv, tmp_path)
    committed = _committed()
    assert len(committed) == 6
    assert sorted(p.name for p in written) == sorted(committed)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(committed)   # nothing else
    for path in written:
        rec = validate_record(json.loads(path.read_text()), where=path.name)
        old = committed[path.name]
        assert {k: rec.get(k) for k in SHAPE} == {k: old.get(k) for k in SHAPE}, path.name
        assert set(rec) == set(old), path.name             # the same fields, none extra
        assert rec["n"] == rec["budget"]["iterations"] == old["n"], path.name
        assert rec["command"] == ("python benchmarks/bench_batching.py --reps 12 --threads 2 "
                                  f"--records {tmp_path}")
        assert rec["device"] == f"{cpu_device()}, shared"
        assert "+" not in rec["torch"]
        key, batching = path.stem.split("_")[2:]
        sec = SECONDS[key]
        assert rec["seconds_per_iteration"] == sec[batching]
        assert rec["mean"] == round(sec[batching] / sec["loop"], 2)


def test_skip_conv_writes_the_sinusoid_records_only(tmp_path):
    written = bench_batching.write_records(_results(bench_batching.case_keys(True)),
                                           ["--skip-conv"], tmp_path)
    assert sorted(p.name for p in written) == sorted(
        n for n in _committed() if n.startswith("benchmarks_batching_sinusoid_"))
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(p.name for p in written)


def test_the_command_is_quoted_as_run(tmp_path):
    folder = tmp_path / "a b"
    (path, *_) = bench_batching.write_records(_results(("sinusoid",)),
                                              ["--records", str(folder)], folder)
    assert json.loads(path.read_text())["command"] == (
        f"python benchmarks/bench_batching.py --records '{folder}'")


@pytest.mark.parametrize("make_bad", [
    lambda tmp: tmp / "file" / "sub",                       # a file on the way
    lambda tmp: tmp / "folder",                             # a record's path is a folder
    lambda tmp: tmp / "notrecord",                          # a file there that is no record
])
def test_a_bad_records_path_is_a_usage_error_before_any_timing(tmp_path, monkeypatch, capsys,
                                                               make_bad):
    (tmp_path / "file").write_text("x")
    (tmp_path / "folder" / "benchmarks_batching_omniglot_vmap.json").mkdir(parents=True)
    (tmp_path / "notrecord").mkdir()
    (tmp_path / "notrecord" / "benchmarks_batching_sinusoid_loop.json").write_text("{}")
    monkeypatch.setattr(bench_batching, "cases", lambda *a: pytest.fail("timed"))
    with pytest.raises(SystemExit) as e:
        bench_batching.main(["--records", str(make_bad(tmp_path)), "--reps", "1"])
    assert e.value.code == 2
    out = capsys.readouterr()
    assert out.out == "" and "--records: " in out.err.splitlines()[-1]


def test_a_short_run_writes_its_records(tmp_path):
    """End to end, the sinusoid only, one rep: three valid records and the usual table."""
    records = tmp_path / "results"
    r = subprocess.run([sys.executable, "benchmarks/bench_batching.py", "--reps", "1",
                        "--threads", "1", "--skip-conv", "--records", str(records)],
                       cwd=ROOT, capture_output=True, text=True, timeout=120,
                       env={**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "error"})
    assert r.returncode == 0, r.stderr[-2000:]
    assert "sinusoid MLP" in r.stdout and "omniglot Conv4" not in r.stdout
    recs = {p.name: validate_record(json.loads(p.read_text()))
            for p in sorted(records.iterdir())}
    assert sorted(recs) == [f"benchmarks_batching_sinusoid_{b}.json"
                            for b in ("loop", "threads", "vmap")]
    assert recs["benchmarks_batching_sinusoid_loop.json"]["mean"] == 1.0
    assert {r["n"] for r in recs.values()} == {1}
    assert {r["device"] for r in recs.values()} == {f"{cpu_name()}, 1 thread, shared"}


def test_batchings_whose_gradients_differ_stop_the_run_before_any_timing(tmp_path,
                                                                         monkeypatch, capsys):
    """A faster wrong answer does not count: a batching whose meta-gradient differs from the
    loop's by more than TOL of the largest entry stops the run, naming the case, before any
    timing, and writes no record."""
    class Wrong(bench_batching.MAML):
        def meta_gradient(self, batch):
            g = super().meta_gradient(batch)
            if self.batching != "vmap":
                return g
            return {k: v + 1e-3 * v.abs().max() for k, v in g.items()}

    monkeypatch.setattr(bench_batching, "MAML", Wrong)
    monkeypatch.setattr(bench_batching, "interleaved_medians",
                        lambda *a, **k: pytest.fail("timed"))
    with pytest.raises(SystemExit) as e:
        bench_batching.main(["--reps", "1", "--skip-conv", "--records", str(tmp_path / "r")])
    assert "sinusoid MLP: the batchings' float32 meta-gradients differ" in str(e.value.code)
    assert not (tmp_path / "r").exists() or not any((tmp_path / "r").iterdir())
