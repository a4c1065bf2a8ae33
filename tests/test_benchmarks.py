"""The prepared GPU commands (``benchmarks/gpu_paper.sh``, ``benchmarks/gpu_runs.py``) on the CPU.

A lent GPU comes with 15 minutes in all, so these scripts must work the first time there:
their CPU smoke path runs the same steps (checks, train, stop, eval, summary), and an output
folder that already holds a run is refused before any work (its stale run would otherwise be
read as the new one's). The CPU timing scripts say which allocator settings they ran under.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "PYTHONPATH": str(ROOT / "src")}


def _run(cmd: list[str], **kw) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=600,
                          **kw)


def test_gpu_paper_refuses_an_out_that_holds_a_run(tmp_path):
    (tmp_path / "run").mkdir()
    r = _run(["bash", "benchmarks/gpu_paper.sh", "--smoke", "--device", "cpu",
              "--out", str(tmp_path)])
    assert r.returncode == 2, r.stderr
    assert f"{tmp_path / 'run'} already exist" in r.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]      # nothing written


def test_gpu_runs_refuses_a_work_folder_that_holds_the_run(tmp_path):
    (tmp_path / "work" / "runs" / "omniglot_maml_5w1s_cpu_cosine").mkdir(parents=True)
    r = _run([sys.executable, "benchmarks/gpu_runs.py", "--out", str(tmp_path / "out"),
              "--work", str(tmp_path / "work"), "--device", "cpu", "--batching", "loop",
              "omniglot_maml_5w1s_cpu+cosine"])
    assert r.returncode == 2, r.stderr
    assert "omniglot_maml_5w1s_cpu_cosine already exist" in r.stderr
    assert not (tmp_path / "out").exists()
    assert not (tmp_path / "work" / "configs").exists()


def test_gpu_paper_smoke_on_cpu_writes_the_summary(tmp_path, omniglot_root):
    r = _run(["bash", "benchmarks/gpu_paper.sh", "--smoke", "--device", "cpu",
              "--out", str(tmp_path)], input="")
    assert r.returncode == 0, r.stderr[-2000:]
    s = json.loads((tmp_path / "summary.json").read_text())
    assert s["train_exit"] == 0 and s["eval_exit"] == 0
    assert s["iterations"] == 20 and s["complete"] is True
    assert s["device"] == "cpu" and s["torch"] == __import__("torch").__version__
    assert s["eval_tasks"] == 20 and s["eval_steps"] == 3
    assert 0.0 <= s["accuracy_mean"] <= 100.0 and s["accuracy_ci95"] > 0.0
    assert s["wall_seconds"] >= s["train_seconds"] + s["eval_seconds"]
    assert "error" not in s["checks"] and s["checks"]["bf16_meta_gradient_relative_error"] > 0


def test_gpu_paper_fits_the_challenge_config_to_its_budget_and_writes_the_record(
        tmp_path, omniglot_root):
    """--iterations fit: as many iterations as the training budget holds at the measured
    step time (after the start allowance), at most the config's; the record comes back."""
    r = _run(["bash", "benchmarks/gpu_paper.sh", "--smoke", "--device", "cpu",
              "--config", "configs/omniglot_challenge_all_gpu.toml", "--iterations", "fit",
              "--train-seconds", "31", "--out", str(tmp_path)], input="")
    assert r.returncode == 0, r.stderr[-2000:]
    s = json.loads((tmp_path / "summary.json").read_text())
    fit = s["iterations_fit"]
    assert fit["fit"] == int((31 - fit["start_seconds"]) / fit["s_per_it"])
    assert s["iterations_target"] == max(1, min(20, fit["fit"]))     # smoke: 20 at most
    assert s["iterations"] == s["iterations_target"] and s["complete"] is True
    assert s["eval_exit"] == 0
    rec = json.loads((tmp_path / "record.json").read_text())
    assert rec["table"] == "challenge" and rec["n"] == 20 and len(rec["per_task"]) == 20
    assert abs(rec["error_rate"] - (100 - s["accuracy_mean"])) < 1e-6
    bad = _run(["bash", "benchmarks/gpu_paper.sh", "--smoke", "--device", "cpu",
                "--iterations", "0", "--out", str(tmp_path / "bad")])
    assert bad.returncode == 2 and "must be a positive int or 'fit'" in bad.stderr


def test_gpu_graph_probe_runs_the_graph_step_path_on_cpu(omniglot_root):
    """The probe's graph step, run without recording on the CPU (new batches copied into the
    same tensors, the same batch object reused), gives the eager step's parameters exactly."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from gpu_graph import probe

    for config in ("omniglot_maml_5w1s_full.toml", "omniglot_challenge_gpu.toml"):
        r = probe(str(ROOT / "configs" / config), "cpu", iters=3, meta_batch=2, channels=8)
        assert r["max_relative_param_difference"] == 0.0
        assert r["all_finite"] is True
        assert r["eager_s_per_it"] > 0 and r["graph_s_per_it"] > 0


def test_timing_scripts_state_their_allocator_settings():
    """Every implementation of a run shares one allocator, and the output says which (DESIGN:
    glibc's settings change the times by up to 3x): the MALLOC_* variables set, or glibc's
    defaults."""
    base = {k: v for k, v in ENV.items() if not k.startswith("MALLOC_")}
    for script, flags, env, said in (
            ("bench_batching.py", ["--reps", "1", "--skip-conv"], {"MALLOC_ARENA_MAX": "2"},
             "allocator MALLOC_ARENA_MAX=2"),
            ("bench_flops.py", ["--reps", "1"], {}, "allocator glibc default")):
        r = subprocess.run([sys.executable, f"benchmarks/{script}", *flags], cwd=ROOT,
                           env={**base, **env, "OMP_NUM_THREADS": "1"}, capture_output=True,
                           text=True, timeout=600)
        assert r.returncode == 0, r.stderr[-2000:]
        assert said in r.stdout.splitlines()[0], (script, r.stdout[:300])


def test_every_shell_script_answers_help_and_does_nothing_else(tmp_path):
    """``bash benchmarks/X.sh --help`` prints the script's usage and exits 0, creating
    nothing (the argument would otherwise be taken as a folder name)."""
    for script in sorted((ROOT / "benchmarks").glob("*.sh")):
        r = subprocess.run(["bash", str(script), "--help"], cwd=tmp_path, env=ENV,
                           capture_output=True, text=True, timeout=120)
        assert r.returncode == 0, (script.name, r.stderr[-500:])
        assert "usage" in r.stdout.lower() or "bash benchmarks/" in r.stdout, script.name
        assert "nvidia-smi" not in r.stderr and not list(tmp_path.iterdir()), script.name


def test_bench_maml_on_a_gpu_checks_and_times_there_or_says_why_not():
    """``--device cuda``: without a GPU a named refusal; with one, metaloop (vmap) and the
    plain loop agree in float64 on the GPU and are timed with GPU memory peaks."""
    import torch

    argv = [sys.executable, "benchmarks/bench_maml.py", "--device", "cuda", "--only",
            "metaloop,plain,metaloop-threads", "--iters", "1", "--reps", "1",
            "--random-data", "--meta-batch", "2", "--queries", "2", "--hidden", "8"]
    r = _run(argv)
    if not torch.cuda.is_available():
        assert r.returncode == 2 and "torch sees no CUDA device" in r.stderr
        return
    assert r.returncode == 0, r.stderr[-2000:]
    assert "TF32 off" in r.stdout and "skip metaloop-threads: a CPU layout" in r.stdout
    assert "check plain         max rel err" in r.stdout and "WRONG" not in r.stdout
    assert "peak GPU MiB" in r.stdout
