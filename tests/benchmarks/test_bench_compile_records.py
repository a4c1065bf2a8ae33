"""``benchmarks/bench_compile.py --records``: the query pass (``--pool stride|max``) and the
whole iteration (``--iteration``) write the committed records of the ``benchmarks-compile``
table (same files, tables, rows, order and fields), each path is checked before any timing,
and a setting that no row describes is refused."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from metaloop.evaluate.records import cpu_device, validate_record

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "benchmarks"))
sys.path.insert(0, str(ROOT / "tests"))

import bench_compile  # noqa: E402  (benchmarks/ is on the path)
from conftest import committed_records  # noqa: E402

QUERY_PASS = {"eager": 0.05, "compiled": 0.04, "compile_seconds": 27.23, "rounds": 5}
ITERATION = {"metaloop": {"times": [1.0, 1.2, 1.1], "rss_mib": 445.2, "setup_mib": 300.0},
             "metaloop-compile": {"times": [0.9, 1.0, 1.05], "rss_mib": 533.6,
                                  "setup_mib": 310.0}}
SHAPE = ("table", "row", "metric", "unit", "digits", "order", "ci95", "config", "published")
RUNS = {"benchmarks_compile_query_pass_stride.json": (["--pool", "stride"], QUERY_PASS),
        "benchmarks_compile_query_pass_max.json": (["--pool", "max"], QUERY_PASS),
        "benchmarks_compile_iteration_stride.json": (
            ["--iteration", "--pool", "stride", "--iters", "8", "--reps", "3", "--warmup", "2"],
            ITERATION)}


def _committed() -> dict[str, dict]:
    found = committed_records("benchmarks_compile_*.json")
    return found

@pytest.fixture(autouse=True)
def _no_omniglot_load(monkeypatch):
    """``--iteration`` looks for Omniglot before any work; these tests time nothing."""
    monkeypatch.setattr(bench_compile.bench_maml, "batch_source", lambda args: None)


def _write(argv: list[str], result: dict, records: Path) -> Path:
    argv = [*argv, "--records", str(records)]
    return bench_compile.write_records(result, bench_compile.parse(argv), argv)


def test_every_committed_record_is_written_by_a_run(tmp_path):
    committed = _committed()
    assert sorted(committed) == sorted(RUNS)
    for name, (argv, result) in RUNS.items():
        path = _write(argv, result, tmp_path)
        assert path.name == name
        rec = validate_record(json.loads(path.read_text()), where=name)
        old = committed[name]
        assert {k: rec.get(k) for k in SHAPE} == {k: old.get(k) for k in SHAPE}, name
        assert set(rec) - {"n"} == set(old) - {"n"}, name       # the same extra fields
        assert rec["device"] == f"{cpu_device()}, shared" and "+" not in rec["torch"]
        assert rec["command"] == ("python benchmarks/bench_compile.py "
                                  + " ".join([*argv, "--records", str(tmp_path)]))
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(committed)


def test_the_query_pass_record_holds_what_was_measured(tmp_path):
    rec = json.loads(_write(["--pool", "stride", "--iters", "4"], QUERY_PASS,
                            tmp_path).read_text())
    assert rec["mean"] == round(0.05 / 0.04, 2) and rec["compile_seconds"] == 27.2
    assert rec["n"] == 5 and rec["budget"] == {"iterations": 20}     # 5 rounds of 4 calls


def test_the_iteration_record_holds_what_was_measured(tmp_path):
    rec = json.loads(_write(RUNS["benchmarks_compile_iteration_stride.json"][0], ITERATION,
                            tmp_path).read_text())
    assert rec["mean"] == round(1.0 / 1.1, 2)                    # compiled / eager medians
    assert rec["n"] == 3 and rec["budget"] == {"iterations": 3}
    assert rec["note"] == "peak RSS 534 vs 445 MiB"


@pytest.mark.parametrize("flags, said", [
    (["--queries", "50"], "not of --queries 50"),
    (["--dtype", "float64"], "not of --dtype float64"),
    (["--iteration", "--queries", "75"], "not of --queries 75"),
    (["--iteration", "--pool", "max"], "not of --iteration --pool max"),
])
def test_records_of_a_setting_no_row_describes_are_refused(tmp_path, capsys, flags, said):
    with pytest.raises(SystemExit) as e:
        bench_compile.main([*flags, "--records", str(tmp_path)])
    assert e.value.code == 2
    err = capsys.readouterr().err.splitlines()[-1]
    assert "--records: " in err and said in err
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize("flags", [[], ["--iteration", "--pool", "stride"]])
def test_a_bad_records_path_is_a_usage_error_before_any_timing(tmp_path, monkeypatch, capsys,
                                                               flags):
    (tmp_path / "file").write_text("x")
    folder = tmp_path / "folder"              # a folder where the record would go
    bench_compile.record_path(folder, bench_compile.parse(flags)).mkdir(parents=True)
    monkeypatch.setattr(bench_compile, "query_pass", lambda a: pytest.fail("timed"))
    monkeypatch.setattr(bench_compile, "iteration", lambda a: pytest.fail("timed"))
    for bad in (tmp_path / "file" / "sub", folder):
        with pytest.raises(SystemExit) as e:
            bench_compile.main([*flags, "--records", str(bad)])
        assert e.value.code == 2
        out = capsys.readouterr()
        assert out.out == "" and "--records: " in out.err.splitlines()[-1]


@pytest.mark.parametrize("mode", [[], ["--iteration"]])
def test_each_run_compiles_cold_in_a_fresh_inductor_cache_it_removes(monkeypatch, mode):
    """The recorded compile time is a first run's: inductor's cache is an empty folder of the
    run's own (inherited by --iteration's workers), removed afterwards, and the caller's
    setting is restored."""
    import os
    seen = []

    def timed(a):
        folder = Path(os.environ["TORCHINDUCTOR_CACHE_DIR"])
        seen.append((folder, folder.is_dir() and not any(folder.iterdir())))
        (folder / "compiled.so").write_text("x")                  # what a compile leaves
        return QUERY_PASS if not a.iteration else ITERATION

    monkeypatch.setattr(bench_compile, "query_pass", timed)
    monkeypatch.setattr(bench_compile, "iteration", timed)
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", "/the/users/cache")
    bench_compile.main([*mode, "--pool", "stride"])
    [(folder, empty)] = seen
    assert empty and folder != Path("/the/users/cache") and not folder.exists()
    assert os.environ["TORCHINDUCTOR_CACHE_DIR"] == "/the/users/cache"
