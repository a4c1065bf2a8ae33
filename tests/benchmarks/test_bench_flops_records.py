"""``benchmarks/bench_flops.py --records``: the seven records of the ``benchmarks-limit``
table, under the committed files' names and with their rows, written from what the run
measured; a folder that cannot take them, or a MAML setting other than the rows', is a usage
error before any timing."""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from metaloop.evaluate.records import cpu_device, validate_record

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "benchmarks"))
sys.path.insert(0, str(ROOT / "tests"))

import bench_flops  # noqa: E402  (benchmarks/ is on the path)
from conftest import committed_records  # noqa: E402

ENV = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "OMP_NUM_THREADS": "1"}

SHAPE = ("table", "row", "metric", "digits", "order", "unit", "note", "config", "published",
         "ci95")
"""The fields a re-run must keep as committed (the rest are what the run measured)."""


def _committed() -> dict[str, dict]:
    found = committed_records("benchmarks_flops_*.json")
    return found

def _committed_argv(rec: dict) -> list[str]:
    """The arguments of a committed record's command, without its ``--records``."""
    words = shlex.split(rec["command"])
    assert words[:2] == ["python", "benchmarks/bench_flops.py"], rec["command"]
    argv = words[2:]
    if "--records" in argv:
        i = argv.index("--records")
        del argv[i:i + 2]
    return argv


def _made_up(tasks: int = 4, batching: str = "threads") -> tuple[dict, dict]:
    """Times (seconds per round) and FLOPs of every operation main times, made up."""
    maml = bench_flops.maml_case(tasks, batching)
    flops = {"matmul 2048^3": 2 * 2048 ** 3, "conv fwd NCHW": bench_flops.CONV_FLOPS,
             "conv fwd+bwd NCHW": 3 * bench_flops.CONV_FLOPS,
             "conv fwd channels-last": bench_flops.CONV_FLOPS,
             "conv fwd+bwd channels-last": 3 * bench_flops.CONV_FLOPS,
             maml: bench_flops.maml_iteration_flops(meta_batch=tasks)["iteration"]}
    times = {"matmul 2048^3": [0.2, 0.1, 0.4],
             "conv fwd NCHW": [0.01, 0.02, 0.03],
             "conv fwd+bwd NCHW": [0.04, 0.03, 0.05],
             "conv fwd channels-last": [0.008, 0.016, 0.012],
             "conv fwd+bwd channels-last": [0.05, 0.04, 0.06],
             maml: [0.6, 0.5, 0.7]}
    return times, flops


def test_the_records_are_the_committed_ones_from_what_was_measured(tmp_path):
    committed = _committed()
    commands = {rec["command"] for rec in committed.values()}
    assert len(commands) == 1                        # one run writes the whole table
    argv = [*_committed_argv(next(iter(committed.values()))), "--records", str(tmp_path)]
    args = bench_flops.parse(argv)
    times, flops = _made_up(args.maml_tasks, args.batching)
    times = {k: (v * args.reps)[:args.reps] for k, v in times.items()}    # one per round
    written = bench_flops.write_records(times, flops, args, argv)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(committed)
    assert sorted(p.name for p in written) == sorted(committed)
    for name, old in committed.items():
        new = validate_record(json.loads((tmp_path / name).read_text()), where=name)
        assert {k: new.get(k) for k in SHAPE} == {k: old.get(k) for k in SHAPE}, name
        assert set(new) == set(old), name
        assert (new["n"], new["budget"]) == (args.reps, {"iterations": args.reps}), name
        assert new["command"] == "python benchmarks/bench_flops.py " + shlex.join(argv)
        assert new["device"] == f"{cpu_device()}, shared"
        assert new["torch"] == torch.__version__.split("+")[0]


def test_the_records_hold_the_medians_the_best_and_the_lower_bound(tmp_path):
    argv = ["--maml-tasks", "4", "--batching", "threads", "--reps", "3",
            "--records", str(tmp_path)]
    times, flops = _made_up()
    bench_flops.write_records(times, flops, bench_flops.parse(argv), argv)
    mean = {int(p.stem.rsplit("_", 1)[1]): json.loads(p.read_text())["mean"]
            for p in tmp_path.glob("*.json")}
    conv = bench_flops.CONV_FLOPS
    maml = flops[bench_flops.maml_case(4, "threads")]
    assert mean[63] == round(2 * 2048 ** 3 / 0.2 / 1e9, 1)               # median 0.2 s
    assert mean[64] == round(conv / 0.02 / 1e9, 1)
    assert mean[65] == round(3 * conv / 0.04 / 1e9, 1)
    assert mean[66] == round(conv / 0.008 / 1e9, 1)                      # the best, not 0.012
    assert mean[67] == round(maml / 0.6 / 1e9, 1)
    assert mean[68] == round((maml / 0.6) / (conv / 0.02), 2)           # of the same medians
    best = max(conv / 0.01, 3 * conv / 0.03, conv / 0.008, 3 * conv / 0.04) / 1e9
    iteration = bench_flops.maml_iteration_flops()["iteration"]
    assert mean[69] == round(iteration / 1e9 / best, 2)


@pytest.mark.parametrize("flags, said", [
    ([], "not --maml-tasks 0, --batching loop"),
    (["--maml-tasks", "8", "--batching", "threads"], "not --maml-tasks 8:"),
    (["--maml-tasks", "4", "--batching", "loop"], "not --batching loop:"),
])
def test_a_maml_setting_the_rows_do_not_name_is_refused(tmp_path, capsys, flags, said):
    with pytest.raises(SystemExit) as e:
        bench_flops.main([*flags, "--records", str(tmp_path / "out")])
    out, err = capsys.readouterr()
    assert e.value.code == 2 and out == ""
    assert "--records: the records' rows are of metaloop MAML on 4 tasks" in err
    assert said in err.splitlines()[-1]
    assert not (tmp_path / "out").exists()


def test_a_folder_that_cannot_take_the_records_exits_2_before_any_timing(tmp_path, capsys):
    (tmp_path / "results").mkdir()
    (tmp_path / "results" / "benchmarks_flops_66.json").write_text('{"not": "a record"}')
    r = subprocess.run([sys.executable, "benchmarks/bench_flops.py", "--maml-tasks", "4",
                        "--batching", "threads", "--reps", "1",
                        "--records", str(tmp_path / "results")],
                       cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=120)
    assert r.returncode == 2, r.stderr[-1000:]
    assert r.stdout == ""                                          # nothing timed or printed
    last = r.stderr.splitlines()[-1]
    assert last.startswith("bench_flops.py: error: --records: ")
    assert "benchmarks_flops_66.json' is a file that is not a result record" in last
    assert [p.name for p in (tmp_path / "results").iterdir()] == ["benchmarks_flops_66.json"]
    (tmp_path / "file").write_text("")
    with pytest.raises(SystemExit) as e:                          # a file on the way
        bench_flops.main(["--maml-tasks", "4", "--batching", "threads",
                          "--records", str(tmp_path / "file" / "sub")])
    out, err = capsys.readouterr()
    assert e.value.code == 2 and out == ""
    assert "--records: cannot create the record's folder" in err.splitlines()[-1]


def test_a_short_run_writes_the_seven_records(tmp_path):
    """End to end at the smallest settings (one round, one thread): what it prints is
    unchanged and the records are written after it."""
    r = subprocess.run([sys.executable, "benchmarks/bench_flops.py", "--threads", "1",
                        "--reps", "1", "--maml-tasks", "4", "--batching", "threads",
                        "--records", str(tmp_path / "results")],
                       cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.splitlines()[-1].startswith("limit for one base iteration")
    names = sorted(p.name for p in (tmp_path / "results").iterdir())
    assert names == sorted(_committed())
    for name in names:
        rec = validate_record(json.loads((tmp_path / "results" / name).read_text()), name)
        assert rec["n"] == 1 and rec["device"].endswith("1 thread, shared"), name
