"""``metaloop forgetting --resume``: each finished (seed, strategy) run is kept in
OUT/partial.json; an interrupted run resumed with the same command writes the uninterrupted
run's files; a command with other arguments, a folder with nothing to resume, a damaged
partial.json and a new run over kept work are refused by name (exit 2), writing nothing."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from metaloop.cli.main import build_parser, main
from metaloop.recipes import forgetting as recipe

TINY = ["--scenario", "split-data-class", "--steps", "4", "--eval-every", "2", "--hidden", "8",
        "--batch-size", "8", "--seeds", "2", "--strategies", "naive,replay", "--no-progress"]


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """(a 6-class .npz, and the folder of an uninterrupted run on it)."""
    d = tmp_path_factory.mktemp("forgetting_resume")
    g = torch.Generator().manual_seed(0)
    y = torch.arange(6).repeat_interleave(8)
    x = torch.nn.functional.one_hot(y, 6).float() * 2 + torch.randn(len(y), 6, generator=g)
    np.savez(d / "d.npz", x=x.numpy(), y=y.numpy())
    assert main(_cmd(d / "d.npz", d / "whole")) == 0
    return d / "d.npz", d / "whole"


def _cmd(data, out, *extra):
    return ["forgetting", *TINY, "--data", str(data), "--out", str(out), *extra]


def _files(d: Path) -> dict:
    return {p.name: p.read_bytes() for p in sorted(d.iterdir()) if p.is_file()}


def _without_times(res: dict) -> dict:
    res.pop("wall_s"), res.pop("cpu_seconds")
    for r in res["strategies"].values():
        r.pop("wall_s")
    return res


def _interrupted(setup, out, monkeypatch, capsys, after=1) -> None:
    """The run stopped (Ctrl-C) once ``after`` (seed, strategy) runs had finished."""
    real, done = recipe._one_seed, []

    def cut(s, exps, seed, update, strategies=None, on_unit=None):
        def each(name, r):
            on_unit(name, r)
            done.append(name)
            if len(done) == after:
                raise KeyboardInterrupt
        return real(s, exps, seed, update, strategies, each)
    with monkeypatch.context() as m:
        m.setattr(recipe, "_one_seed", cut)
        assert main(_cmd(setup[0], out)) == 130
    err = capsys.readouterr().err
    assert f"kept in {out / recipe.PARTIAL}; the same command with --resume" in err
    assert sorted(_files(out)) == [recipe.PARTIAL]


def test_an_interrupted_run_resumes_to_the_uninterrupted_files(setup, tmp_path, monkeypatch,
                                                               capsys):
    data, whole = setup
    out = tmp_path / "out"
    _interrupted(setup, out, monkeypatch, capsys, after=3)
    kept = json.loads((out / recipe.PARTIAL).read_text())["units"]
    assert main(_cmd(data, out, "--resume")) == 0
    assert f"resuming {out}: 3 of 4 runs (seed, strategy) done" in capsys.readouterr().err
    res = json.loads((out / "results.json").read_text())
    assert res["strategies"]["naive"]["wall_s"][0] == kept[0]["wall_s"]   # its own time
    assert _without_times(res) == _without_times(json.loads((whole / "results.json")
                                                             .read_text()))
    got, want = _files(out), _files(whole)
    assert sorted(got) == sorted(want) and recipe.PARTIAL not in got
    for name in ("metrics.jsonl", "old_accuracy_vs_steps.png", "accuracy_matrix.png"):
        assert got[name] == want[name], name


def test_a_resume_with_more_seeds_adds_them_and_fewer_are_refused(setup, tmp_path,
                                                                  monkeypatch, capsys):
    """Two seeds kept, --seeds 3 given: the kept runs stay, the rest run, to the files of a
    run started with three seeds; --seeds 1 is refused by name, writing nothing."""
    data, _ = setup
    out, whole = tmp_path / "out", tmp_path / "whole"
    assert main(_cmd(data, whole, "--seeds", "3")) == 0
    _interrupted(setup, out, monkeypatch, capsys, after=3)
    before = _files(out)
    assert main(_cmd(data, out, "--seeds", "1", "--resume")) == 2
    assert "--seeds (2 != 1: a resume may add seeds, not drop kept ones)" in \
        capsys.readouterr().err
    assert _files(out) == before
    assert main(_cmd(data, out, "--seeds", "3", "--resume")) == 0
    assert f"resuming {out}: 3 of 6 runs (seed, strategy) done" in capsys.readouterr().err
    res, want = (_without_times(json.loads((d / "results.json").read_text()))
                 for d in (out, whole))
    assert res == want and res["settings"]["seeds"] == [0, 1, 2]
    got, want = _files(out), _files(whole)
    assert sorted(got) == sorted(want) and recipe.PARTIAL not in got
    for name in ("metrics.jsonl", "old_accuracy_vs_steps.png", "accuracy_matrix.png"):
        assert got[name] == want[name], name


def test_a_finished_run_resumed_with_more_seeds_runs_only_the_new_ones(setup, tmp_path,
                                                                       monkeypatch, capsys):
    """A run of two seeds that finished (its runs kept in runs.json), resumed with --seeds
    3: only seed 2 runs, to the files of a run started with three seeds. The same seeds have
    nothing to resume; fewer, or another setting, are refused by name, as for a stopped run;
    none of these writes."""
    data, first = setup
    out, whole = tmp_path / "out", tmp_path / "whole"
    shutil.copytree(first, out)
    assert recipe.RUNS in _files(out) and recipe.PARTIAL not in _files(out)
    assert main(_cmd(data, whole, "--seeds", "3")) == 0
    before = _files(out)
    assert main(_cmd(data, out, "--resume")) == 2
    assert "nothing to resume" in capsys.readouterr().err
    assert main(_cmd(data, out, "--resume", "--seeds", "1")) == 2
    err = capsys.readouterr().err
    assert f"refusing to resume {out}: this command differs from the kept run's in --seeds " \
        "(2 != 1: a resume may add seeds, not drop kept ones)" in err
    assert "nothing to resume" not in err
    assert main(_cmd(data, out, "--resume", "--seeds", "1", "--lr", "0.01")) == 2
    err = capsys.readouterr().err                   # every difference named, as when stopped
    assert "--seeds (2 != 1: a resume may add seeds" in err and "--lr (0.001 != 0.01)" in err
    assert main(_cmd(data, out, "--resume", "--seeds", "3", "--lr", "0.01")) == 2
    assert "--lr (0.001 != 0.01)" in capsys.readouterr().err
    assert _files(out) == before
    seeds = []
    real = recipe._one_seed
    monkeypatch.setattr(recipe, "_one_seed", lambda s, exps, seed, *a: seeds.append(seed)
                        or real(s, exps, seed, *a))
    assert main(_cmd(data, out, "--resume", "--seeds", "3")) == 0
    assert f"resuming {out}: 4 of 6 runs (seed, strategy) done" in capsys.readouterr().err
    assert seeds == [2]
    res, want = (_without_times(json.loads((d / "results.json").read_text()))
                 for d in (out, whole))
    assert res == want
    got, want = _files(out), _files(whole)
    assert sorted(got) == sorted(want) and recipe.PARTIAL not in got
    for name in ("metrics.jsonl", "old_accuracy_vs_steps.png", "accuracy_matrix.png"):
        assert got[name] == want[name], name


def test_an_interrupt_before_any_run_finished_names_no_resume(setup, tmp_path, monkeypatch,
                                                              capsys):
    def stop(*a, **k):
        raise KeyboardInterrupt
    monkeypatch.setattr(recipe, "_one_seed", stop)
    out = tmp_path / "out"
    assert main(_cmd(setup[0], out)) == 130
    assert "stopped before any run (seed, strategy) finished" in capsys.readouterr().err
    assert not out.exists()


def test_a_resume_with_other_arguments_or_data_is_refused_by_name(setup, tmp_path,
                                                                  monkeypatch, capsys):
    data, _ = setup
    out = tmp_path / "out"
    _interrupted(setup, out, monkeypatch, capsys)
    before = _files(out)
    assert main(_cmd(data, out, "--steps", "6", "--lr", "0.01", "--resume")) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "metaloop forgetting: error: refusing to resume" in err
    assert "--lr (0.001 != 0.01)" in err and "--steps (4 != 6)" in err
    threads = torch.get_num_threads()
    try:
        assert main(["--threads", str(threads + 1), *_cmd(data, out, "--resume")]) == 2
    finally:
        torch.set_num_threads(threads)
    assert f"--threads or OMP_NUM_THREADS ({threads} != {threads + 1})" in \
        capsys.readouterr().err
    other = tmp_path / "other.npz"
    z = dict(np.load(data))
    np.savez(other, x=z["x"] + 1, y=z["y"])
    assert main(_cmd(other, out, "--resume")) == 2
    err = capsys.readouterr().err
    assert f"--data ({str(data)!r} != {str(other)!r})" in err and "the contents of" in err
    assert _files(out) == before


def test_a_resume_spelled_otherwise_goes_on_as_its_help_says(setup, tmp_path, monkeypatch,
                                                            capsys):
    """The strategies reordered, defaults given and --data relative: the same run, which
    goes on; --resume's help said that a command differing in anything but --no-progress
    was refused."""
    data, whole = setup
    out = tmp_path / "out"
    _interrupted(setup, out, monkeypatch, capsys)
    assert main(_cmd(os.path.relpath(data), out, "--strategies", "replay,naive",
                     "--pretrain-steps", "4", "--replay-ratio", "0.1",
                     "--classes-per-experience", "2", "--resume")) == 0
    res, want = (_without_times(json.loads((d / "results.json").read_text()))
                 for d in (out, whole))
    assert res.pop("data_options") == {"data": str(data.resolve()),
                                       "classes_per_experience": 2}
    assert res["settings"].pop("strategies") == ["replay", "naive"]
    want.pop("data_options"), want["settings"].pop("strategies")
    assert res == want
    sub = next(a for a in build_parser()._actions if a.dest == "command")
    text = " ".join(sub.choices["forgetting"].format_help().split())
    assert "differs in anything but --no-progress" not in text
    assert ("--no-progress, the order of --strategies and a default given or left out may "
            "differ") in text


def test_a_new_run_over_kept_runs_is_refused(setup, tmp_path, monkeypatch, capsys):
    out = tmp_path / "out"
    _interrupted(setup, out, monkeypatch, capsys)
    before = _files(out)
    assert main(_cmd(setup[0], out)) == 2
    err = capsys.readouterr().err
    assert f"{out} holds an interrupted metaloop forgetting" in err and "--resume" in err
    assert _files(out) == before


def test_nothing_to_resume_is_named(setup, tmp_path, capsys):
    data, whole = setup
    missing = tmp_path / "missing"
    assert main(_cmd(data, missing, "--resume")) == 2
    assert "nothing to resume" in capsys.readouterr().err and not missing.exists()
    before = _files(whole)
    assert main(_cmd(data, whole, "--resume")) == 2
    assert "finished run's results.json" in capsys.readouterr().err
    assert _files(whole) == before


def test_a_run_stopped_after_its_results_had_finished(setup, tmp_path, monkeypatch, capsys):
    """Stopped between results.json and removing partial.json: --resume says so and exits 0;
    a new run is refused (the run had finished), nothing written or removed."""
    data, _ = setup
    out = tmp_path / "out"
    _interrupted(setup, out, monkeypatch, capsys)
    stale = (out / recipe.PARTIAL).read_bytes()
    assert main(_cmd(data, out, "--resume")) == 0
    (out / recipe.PARTIAL).write_bytes(stale)
    capsys.readouterr()
    results = (out / "results.json").read_bytes()
    assert main(_cmd(data, out, "--resume", "--steps", "6")) == 2       # still checked
    assert "--steps (4 != 6)" in capsys.readouterr().err
    assert main(_cmd(data, out, "--resume")) == 0
    assert "the run had finished" in capsys.readouterr().out
    assert not (out / recipe.PARTIAL).exists() and (out / "results.json").read_bytes() == results
    (out / recipe.PARTIAL).write_bytes(stale)
    assert main(_cmd(data, out, "--resume", "--seeds", "3")) == 0       # seeds added
    assert "the run had finished" not in capsys.readouterr().out
    assert json.loads((out / "results.json").read_text())["settings"]["seeds"] == [0, 1, 2]
    assert not (out / recipe.PARTIAL).exists()
    (out / recipe.PARTIAL).write_bytes(stale)
    before = _files(out)
    capsys.readouterr()
    assert main(_cmd(data, out, "--steps", "2")) == 2                    # a new run
    assert f"{out} holds a finished metaloop forgetting run" in capsys.readouterr().err
    assert _files(out) == before


@pytest.mark.parametrize("text,match", [
    ('{"units": [', f"{recipe.PARTIAL} is corrupt (JSONDecodeError"),
    ('{"identity": {}, "tasks_done": 1, "per": {}, "eval_seconds": 0}',
     "is the kept state of an interrupted metaloop adapt, not of metaloop forgetting"),
])
def test_a_damaged_or_foreign_partial_json_is_refused_by_name(setup, tmp_path, capsys, text,
                                                              match):
    out = tmp_path / "out"
    out.mkdir()
    (out / recipe.PARTIAL).write_text(text)
    assert main(_cmd(setup[0], out, "--resume")) == 2
    err = capsys.readouterr().err
    assert match in err and err.count("\n") == 1
    assert _files(out) == {recipe.PARTIAL: text.encode()}


def test_another_commands_kept_state_is_named_before_the_data_is_read(setup, tmp_path,
                                                                     monkeypatch, capsys):
    """metaloop adapt's partial.json in --out: --resume read (an image folder: decoded and
    cached) the data first, then refused."""
    out = tmp_path / "out"
    out.mkdir()
    (out / recipe.PARTIAL).write_text('{"identity": {}, "tasks_done": 1, "per": {}}')
    read, real = [], recipe.experiences
    monkeypatch.setattr(recipe, "experiences", lambda *a, **k: read.append(a) or real(*a, **k))
    assert main(_cmd(setup[0], out, "--resume")) == 2
    assert "is the kept state of an interrupted metaloop adapt" in capsys.readouterr().err
    assert read == []


@pytest.mark.slow
def test_sigint_keeps_the_runs_done_and_resume_finishes_them(setup, tmp_path):
    """A real Ctrl-C (SIGINT) to ``metaloop forgetting``: exit 130, partial.json kept; the
    same command with --resume writes the uninterrupted run's results."""
    data, _ = setup
    argv = ["--threads", "1", "forgetting", "--scenario", "split-data-class", "--steps", "300",
            "--eval-every", "100", "--hidden", "8", "--batch-size", "8", "--seeds", "2",
            "--strategies", "naive,replay", "--no-progress", "--data", str(data)]
    cmd = [sys.executable, "-m", "metaloop", *argv]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    out = tmp_path / "out"
    proc = subprocess.Popen([*cmd, "--out", str(out)], env=env, stderr=subprocess.PIPE,
                            stdout=subprocess.DEVNULL, text=True)
    try:
        deadline = time.monotonic() + 120
        while not (out / recipe.PARTIAL).exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert (out / recipe.PARTIAL).exists(), "no run finished in time"
        proc.send_signal(signal.SIGINT)
        err = proc.communicate(timeout=120)[1]
    finally:
        proc.kill()
    if proc.returncode == 0:
        pytest.skip("the run finished before the signal arrived")
    assert proc.returncode == 130, err
    assert "with --resume continues them" in err
    assert not (out / "results.json").exists() and (out / recipe.PARTIAL).exists()
    done = subprocess.run([*cmd, "--out", str(out), "--resume"], env=env, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "resuming" in done.stderr and not (out / recipe.PARTIAL).exists()
    whole = subprocess.run([*cmd, "--out", str(tmp_path / "whole")], env=env,
                           capture_output=True, text=True, timeout=300)
    assert whole.returncode == 0, whole.stderr
    res, want = (_without_times(json.loads((d / "results.json").read_text()))
                 for d in (out, tmp_path / "whole"))
    assert res == want
    assert (out / "metrics.jsonl").read_bytes() == (tmp_path / "whole" / "metrics.jsonl"
                                                    ).read_bytes()
