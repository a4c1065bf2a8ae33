"""``benchmarks/bench_maml.py``: the comparison with the peers is a fair one.

- TorchOpt is also timed on its own batched path (``torchopt-vmap``: ``torchopt.sgd`` inside
  ``torch.func.grad``, vmapped over the tasks, as its FuncTorch example writes it), whose
  meta-gradient is metaloop's;
- the times of all implementations come from one process, one iteration of each in turn, so
  that a slow phase of the shared machine falls on all of them alike;
- a record says the iterations' own memory (the peak less the memory after the set-up);
- every committed record is one that its ``command`` writes, where the command puts it.
"""

from __future__ import annotations

import json
import shlex
import sys
from pathlib import Path

import pytest
import torch

from metaloop.evaluate.records import validate_record

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

import bench_maml  # noqa: E402  (benchmarks/ is on the path)


def test_torchopt_vmap_is_a_peer_timed_by_default():
    """TorchOpt's batched path is timed for the sinusoid and for Conv4 (its compiled form on
    Conv4 only when named: compiling a vmapped Conv4 takes minutes on a CPU)."""
    for argv in (["--model", "sinusoid"], []):
        assert "torchopt-vmap" in bench_maml.parse(argv).only.split(",")
    assert "torchopt-vmap" in bench_maml.PEERS
    assert "torchopt-vmap-compile" not in bench_maml.parse([]).only.split(",")
    why = bench_maml.unavailable("torchopt-vmap", bench_maml.parse(["--only",
                                                                    "metaloop,torchopt-vmap"]))
    assert why is None or why.startswith("not importable"), why
    anil = bench_maml.parse(["--anil", "--only", "metaloop,torchopt-vmap"])
    assert bench_maml.unavailable("torchopt-vmap", anil) == \
        "only full MAML is written for it here"


@pytest.mark.parametrize("order", [[], ["--first-order"]])
def test_torchopt_vmap_gives_metaloops_meta_gradient_in_float64(order):
    pytest.importorskip("torchopt")
    args = bench_maml.parse(["--model", "sinusoid", "--steps", "2", "--check-tasks", "3",
                             *order])
    ref = bench_maml.check_grads("metaloop", args)
    got = bench_maml.check_grads("torchopt-vmap", args)
    assert set(got) == set(ref)
    assert bench_maml.relative_error(got, ref) < 1e-12


def test_torchopt_vmap_gives_metaloops_meta_gradient_on_conv4_in_float64():
    """Conv4 with BatchNorm on each task's batch statistics under TorchOpt's vmap: the same
    meta-gradient as metaloop's, second order, two inner steps."""
    pytest.importorskip("torchopt")
    args = bench_maml.parse(["--random-data", "--hidden", "4", "--queries", "2", "--steps",
                             "2", "--check-tasks", "3"])
    ref = bench_maml.check_grads("metaloop", args)
    got = bench_maml.check_grads("torchopt-vmap", args)
    assert set(got) == set(ref)
    assert bench_maml.relative_error(got, ref) < 1e-12


def test_metaloop_compile_on_the_sinusoid_is_the_compiled_vmap_path():
    """``metaloop-compile`` for the sinusoid MLP: the learner compiles its vmapped tasks
    (``batching`` vmap, not the loop it took before; their exactness:
    tests/meta/test_fast_paths.py)."""
    args = bench_maml.parse(["--model", "sinusoid", "--only", "metaloop,metaloop-compile"])
    learner = bench_maml.build_metaloop(bench_maml.make_model(args), args,
                                        compile=True).__self__
    assert learner.compile and learner.batching == "vmap"


# torch.compile tracing TorchOpt's functions touches torch.jit.script_method, which torch
# 2.13 deprecates: the peer's warning, not metaloop's
@pytest.mark.filterwarnings("ignore:`torch.jit.script_method` is deprecated:DeprecationWarning")
def test_torchopt_vmap_compile_is_the_peer_compiled_the_same_way():
    assert "torchopt-vmap-compile" in bench_maml.PEERS
    pytest.importorskip("torchopt")
    args = bench_maml.parse(["--model", "sinusoid", "--check-tasks", "3",
                             "--only", "metaloop,torchopt-vmap-compile"])
    assert bench_maml.relative_error(bench_maml.check_grads("torchopt-vmap-compile", args),
                                     bench_maml.check_grads("metaloop", args)) < 1e-12


def test_the_times_interleave_every_implementation_one_iteration_at_a_time(monkeypatch):
    """All of them in this process: the warm-ups first, then ``reps x iters`` rounds of one
    iteration each, each round starting one implementation further on."""
    calls: list[str] = []

    def fake_setup(name, args):
        def step():
            calls.append(name)
            return float(len(calls))
        return step

    monkeypatch.setattr(bench_maml, "setup", fake_setup)
    args = bench_maml.parse(["--model", "sinusoid", "--only", "metaloop,plain,higher",
                             "--warmup", "1", "--iters", "2", "--reps", "2"])
    times = bench_maml.interleaved(["metaloop", "plain", "higher"], args)
    assert calls[:3] == ["metaloop", "plain", "higher"]                  # the warm-ups
    rounds = [calls[i:i + 3] for i in range(3, len(calls), 3)]
    assert rounds == [["metaloop", "plain", "higher"], ["plain", "higher", "metaloop"],
                      ["higher", "metaloop", "plain"], ["metaloop", "plain", "higher"]]
    assert {n: len(t) for n, t in times.items()} == {"metaloop": 4, "plain": 4, "higher": 4}
    assert times["metaloop"] == [4.0, 9.0, 11.0, 13.0]        # the warm-up's is not kept


def test_a_record_says_the_iterations_own_memory(tmp_path):
    results = {"metaloop": {"times": [0.5], "rss_mib": 620.4, "setup_mib": 500.0},
               "plain": {"times": [1.0], "rss_mib": 621.0, "setup_mib": 510.2}}
    argv = ["--model", "sinusoid", "--only", "metaloop,plain", "--records", str(tmp_path)]
    args = bench_maml.parse(argv)
    bench_maml.write_records(results, args, argv)
    recs = {p.stem.rsplit("_", 1)[-1]: validate_record(json.loads(p.read_text()))
            for p in tmp_path.glob("*.json")}
    assert recs["metaloop"]["peak_rss_mib"] == 620 and recs["plain"]["peak_rss_mib"] == 621
    assert recs["metaloop"]["peak_rss_mib_over_setup"] == 120
    assert recs["plain"]["peak_rss_mib_over_setup"] == 111
    assert recs["plain"]["note"] == \
        "2.00x metaloop's time, peak RSS 621 MiB, 111 MiB over its set-up"


def test_the_report_names_how_time_and_memory_are_measured(capsys):
    results = {"metaloop": {"times": [0.5], "rss_mib": 620.0, "setup_mib": 500.0}}
    bench_maml.report(results, bench_maml.parse(["--iters", "7", "--reps", "2"]))
    out = capsys.readouterr().out
    assert "over set-up" in out.splitlines()[0]
    assert out.splitlines()[1].split()[-1] == "120"
    assert ("times: the 2 x 7 iterations interleaved one by one in this process; memory: "
            "each in a process of its own, over --warmup + 3 iterations") in out


def test_every_committed_record_is_where_its_command_writes_it():
    """Rerunning a record's ``command`` rewrites that record: the command has ``--records``,
    names the implementation, and the file name and ``order`` are those it writes."""
    committed = sorted((ROOT / "docs" / "results").glob("benchmarks_maml_*.json"))
    assert committed
    for path in committed:
        rec = json.loads(path.read_text())
        words = shlex.split(rec["command"])
        assert words[1] == "benchmarks/bench_maml.py", path.name
        args = bench_maml.parse(words[2:])
        assert args.records == "docs/results", path.name
        names = [n for n in args.only.split(",")
                 if bench_maml.record_path(args.records, n, args).name == path.name]
        assert len(names) == 1, path.name
        assert rec["order"] == bench_maml.record_order(names[0], args), path.name
        assert rec["n"] == args.iters * args.reps, path.name
        assert "over its set-up" in rec["note"], path.name


@pytest.mark.parametrize("name", ["metaloop", "plain"])
def test_setup_draws_the_same_batches_for_every_implementation(name, monkeypatch):
    seen = []
    monkeypatch.setattr(bench_maml, "build",
                        lambda n, model, args: lambda b: seen.append(b.support_x.sum()) or {})
    step = bench_maml.setup(name, bench_maml.parse(["--model", "sinusoid"]))
    step()
    step()
    ref = bench_maml.batch_source(bench_maml.parse(["--model", "sinusoid"]))
    g = torch.Generator().manual_seed(1)
    assert seen == [ref(25, g).support_x.sum(), ref(25, g).support_x.sum()]
