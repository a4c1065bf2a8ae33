"""``metaloop eval --record PATH`` writes a valid record of the evaluation it printed."""

from __future__ import annotations

import json
import shlex
import sys
from pathlib import Path

import pytest
import torch

from metaloop.cli.main import main
from metaloop.evaluate import records
from metaloop.evaluate.records import load_records

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from conftest import train_run, write_image_folder  # noqa: E402


@pytest.fixture(scope="module")
def run(trained_run):
    """A MAML run on 5-shot sinusoid tasks: 4 iterations, evaluated on 6 tasks."""
    return trained_run('[family]\nname = "sinusoid"\nshots = 5\n[method]\nname = "maml"\n'
                       '[train]\niterations = 4\ncheckpoint_every = 2\nmeta_batch = 2\n'
                       '[eval]\ntasks = 6\nsteps = [0, 1]\n')


def test_eval_record_matches_results_json(run, tmp_path, capsys):
    rec_path = tmp_path / "docs" / "results" / "sine.json"
    argv = ["--threads", "1", "eval", "--checkpoint", str(run), "--out", str(tmp_path / "ev"),
            "--record", str(rec_path), "--no-progress"]
    capsys.readouterr()
    assert main(argv) == 0
    assert capsys.readouterr().out.endswith(f"wrote record {rec_path}\n")
    res = json.loads((tmp_path / "ev" / "results.json").read_text())["methods"]["maml"]
    (rec,) = load_records(rec_path.parent)
    assert rec["table"] == "sinusoid" and rec["row"] == "maml"
    assert rec["metric"] == "query loss after 1 step"
    assert rec["mean"] == res["loss"]["mean"][-1] and rec["ci95"] == res["loss"]["ci95"][-1]
    assert rec["n"] == 6 and rec["budget"]["iterations"] == 4
    # the CPU's vector instructions, since float32 results differ between them
    cap = torch.backends.cpu.get_cpu_capability()
    assert rec["device"].startswith("CPU (") and f", {cap}), 1 thread" in rec["device"]
    # every task's loss, in task order, so later records on these tasks pair with this one
    # (results.json keeps only their mean and CI: recomputed from the values, they agree)
    per_task = torch.tensor(rec["per_task"], dtype=torch.float64)
    assert per_task.shape == (6,)
    assert float(per_task.mean()) == pytest.approx(res["loss"]["mean"][-1], abs=1e-6)
    t5 = pytest.importorskip("scipy.stats").t.ppf(0.975, 5)
    assert t5 * float(per_task.std()) / 6 ** 0.5 == pytest.approx(res["loss"]["ci95"][-1],
                                                                   abs=1e-6)
    assert records.paired_difference(rec, rec) == {"mean": 0.0, "ci95": 0.0, "n": 6}
    # the CPU seconds the final checkpoint stores (the training process's own CPU time)
    state = json.loads((run / "ckpt-00000004" / "state.json").read_text())
    assert rec["budget"]["cpu_seconds"] == state["cpu_seconds"] >= 0
    assert rec["torch"] == torch.__version__.split("+")[0]
    assert rec["published"] is None and rec["run_config"]["train"]["iterations"] == 4
    # the command printed in the record reproduces the run: same flags, same parse
    parts = shlex.split(rec["command"])
    assert parts[0] == "metaloop" and parts[1:4] == ["--threads", "1", "eval"]
    assert set(argv[3:]) <= set(parts)
    assert main([*argv[:5], "--record", str(rec_path), "--no-progress"]) == 0   # rerun
    assert capsys.readouterr().out.endswith(f"replaced record {rec_path}\n")


def test_a_bad_record_path_fails_before_evaluating_and_writes_nothing(run, tmp_path, capsys):
    assert main(["eval", "--checkpoint", str(run), "--out", str(tmp_path / "ev"),
                 "--record", str(tmp_path / "r.txt"), "--no-progress"]) == 2
    assert "record path must end in .json" in capsys.readouterr().err
    assert not (tmp_path / "ev").exists()
    assert not (tmp_path / "r.txt").exists()


def test_a_classification_record_has_the_cell_fields_and_the_evaluation_label(tmp_path):
    root = write_image_folder(tmp_path / "images", classes=8, per_class=5, mixed=False)
    run = train_run(tmp_path, f'[family]\nname = "folder"\nroot = "{root}"\nways = 2\n'
                    'shots = 1\nqueries = 2\nsplit_fractions = [0.5, 0.25, 0.25]\n[model]\n'
                    'name = "conv4"\nchannels = 4\n[method]\nname = "reptile"\n'
                    'transductive = false\n[train]\niterations = 2\nmeta_batch = 1\n[eval]\n'
                    'tasks = 3\nsteps = [1]\n')
    rec_path = tmp_path / "results" / "cell.json"
    assert main(["eval", "--checkpoint", str(run), "--record", str(rec_path),
                 "--no-progress"]) == 0
    (rec,) = load_records(rec_path.parent)
    assert rec["row"] == "reptile, 2-way 1-shot, queries scored non-transductive"
    assert rec["metric"].startswith("query accuracy")
    assert (rec["accuracy_mean"], rec["accuracy_ci95"], rec["tasks"]) == \
        (rec["mean"], rec["ci95"], rec["n"]) and rec["tasks"] == 3
    assert rec["iterations"] == rec["budget"]["iterations"] == 2
    assert rec["evaluation"] != "transductive" and "transductive" in rec["evaluation"]
    # the run's training curve comes along: one point per logged iteration here (2 < 10)
    lines = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert rec["training_curve"] == [[x["iteration"], round(100 * x["accuracy"], 2)]
                                     for x in lines]


def test_a_corrupt_line_of_the_training_log_costs_the_curve_point_not_the_evaluation(
        tmp_path, capsys):
    """A line of metrics.jsonl that is not JSON made eval --record exit 2 after scoring every
    task, removing its --out folder; the record is written with the readable lines."""
    root = write_image_folder(tmp_path / "images", classes=8, per_class=5, mixed=False)
    run = train_run(tmp_path, f'[family]\nname = "folder"\nroot = "{root}"\nways = 2\n'
                    'shots = 1\nqueries = 2\nsplit_fractions = [0.5, 0.25, 0.25]\n[model]\n'
                    'name = "conv4"\nchannels = 4\n[method]\nname = "protonet"\n'
                    '[train]\niterations = 3\nmeta_batch = 1\n[eval]\ntasks = 3\n')
    log = run / "metrics.jsonl"
    lines = log.read_text().splitlines()
    log.write_text("\n".join([lines[0], lines[1][: len(lines[1]) // 2], *lines[2:]]) + "\n")
    rec_path, out = tmp_path / "results" / "r.json", tmp_path / "ev"
    assert main(["eval", "--checkpoint", str(run), "--record", str(rec_path), "--out",
                 str(out), "--no-progress"]) == 0
    assert (out / "results.json").is_file()
    (rec,) = load_records(rec_path.parent)
    kept = [json.loads(x) for x in (lines[0], *lines[2:])]
    assert rec["training_curve"] == [[x["iteration"], round(100 * x["accuracy"], 2)]
                                     for x in kept]


def test_an_ensemble_record_names_its_members_methods(run, tmp_path):
    """An ensemble of maml, r2d2 and protonet runs was recorded as 'maml, 3-way 1-shot,
    ensemble of 3 runs', and the record did not say what its members were."""
    cfg = {"family": {"name": "folder", "ways": 3, "shots": 1},
           "method": {"name": "maml"}, "eval": {"ways": 0, "shots": 0}}
    result = {"steps": [1], "tasks": 2, "accuracy": {"mean": [0.5], "ci95": [0.1]},
              "per_task": {"accuracy": [[0.4, 0.6]]}}
    three = [str(run)] * 3
    rec = records.eval_record(cfg, result, "accuracy", checkpoint=three, command="c",
                              methods=["maml", "r2d2", "protonet"])
    assert rec["row"] == "ensemble of 3 runs (maml, r2d2, protonet), 3-way 1-shot"
    assert rec["members"] == [{"checkpoint": str(run), "method": m}
                              for m in ("maml", "r2d2", "protonet")]
    # one method: named as before (the committed records' rows), its members listed
    rec = records.eval_record(cfg, result, "accuracy", checkpoint=three[:2], command="c",
                              methods=["maml", "maml"])
    assert rec["row"] == "maml, 3-way 1-shot, ensemble of 2 runs"
    assert [m["method"] for m in rec["members"]] == ["maml", "maml"]
    # one run: no members
    assert "members" not in records.eval_record(cfg, result, "accuracy", checkpoint=str(run),
                                                command="c")
    with pytest.raises(ValueError, match="methods names 1 method"):
        records.eval_record(cfg, result, "accuracy", checkpoint=three, command="c",
                            methods=["maml"])


def test_an_evaluation_that_fails_leaves_no_folder_made_for_its_record(run, tmp_path,
                                                                       monkeypatch, capsys):
    # the record's path is checked before the work, but its folders are made only when the
    # record is written: a failure in between (bad data, Ctrl-C) leaves nothing behind
    from metaloop.cli import eval as eval_cli

    def fails(*a, **k):
        raise ValueError("the held-out data cannot be read")

    monkeypatch.setattr(eval_cli, "evaluate_run", fails)
    rec_path = tmp_path / "docs" / "results" / "sine.json"
    assert main(["eval", "--checkpoint", str(run), "--record", str(rec_path),
                 "--no-progress"]) == 2
    assert "the held-out data cannot be read" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("make, message", [
    (lambda p: p.mkdir(parents=True), "is a folder"),                 # the record is a folder
    (lambda p: p.parent.parent.write_text("x"), "is not a folder"),   # a file on its way
], ids=["record-is-a-folder", "file-on-the-way"])
def test_a_record_path_that_cannot_be_written_is_named_before_any_work(tmp_path, make, message):
    path = tmp_path / "a" / "b" / "r.json"
    make(path)
    with pytest.raises(ValueError, match=message):
        records.check_record_path(path)
    with pytest.raises(ValueError, match=message):
        records.write_record(path, table="t", row="r", metric="m", mean=1.0, ci95=None, n=None,
                             budget={"iterations": 1}, device="cpu", torch="2", date="2026-01-01",
                             config=None, command="c", published=None)


def test_a_diverged_evaluation_refused_as_a_record_writes_no_results(run, tmp_path,
                                                                     monkeypatch, capsys):
    # a NaN mean cannot be a record: it is refused before results.json is written, so the
    # command's exit 2 leaves no output that looks complete
    from metaloop.cli import eval as eval_cli

    real = eval_cli.evaluate_run

    def diverged(*a, **k):
        res = real(*a, **k)
        res["result"][res["metric"]]["mean"] = [float("nan")] * len(
            res["result"][res["metric"]]["mean"])
        return res

    monkeypatch.setattr(eval_cli, "evaluate_run", diverged)
    out, rec_path = tmp_path / "ev", tmp_path / "docs" / "results" / "sine.json"
    assert main(["eval", "--checkpoint", str(run), "--out", str(out), "--record",
                 str(rec_path), "--no-progress"]) == 2
    assert "mean must be a finite number" in capsys.readouterr().err
    assert not (out / "results.json").exists() and not rec_path.exists()


def test_a_run_stopped_early_is_noted_and_scored_as_it_is(run, tmp_path, capsys):
    import shutil

    stopped = tmp_path / "stopped"
    shutil.copytree(run, stopped)
    (stopped / "LATEST").write_text("ckpt-00000002\n")        # as a run stopped there leaves it
    capsys.readouterr()
    assert main(["eval", "--checkpoint", str(stopped), "--no-progress"]) == 0
    assert f"note: {stopped} stopped at iteration 2 of 4" in capsys.readouterr().err
    assert main(["eval", "--checkpoint", str(run), "--no-progress"]) == 0        # finished
    assert main(["eval", "--checkpoint", str(stopped / "ckpt-00000002"), "--no-progress"]) == 0
    assert "stopped at iteration" not in capsys.readouterr().err     # a checkpoint, on purpose


def test_a_scratch_run_is_finished_at_iteration_0_and_not_noted(trained_run, capsys):
    """``scratch`` has nothing to meta-train: its one checkpoint is at iteration 0 of the
    config's count, and every eval of it said it had stopped early."""
    run = trained_run('[family]\nname = "sinusoid"\nshots = 5\n[method]\nname = "scratch"\n'
                      '[eval]\ntasks = 2\nsteps = [0, 1]\n')
    capsys.readouterr()
    assert main(["eval", "--checkpoint", str(run), "--no-progress"]) == 0
    assert "stopped at iteration" not in capsys.readouterr().err


def test_a_record_of_an_earlier_checkpoint_shows_no_later_training(tmp_path):
    """``--record`` of ``run/ckpt-00000002`` of a 4-iteration run: its training curve went on
    to iteration 4, and its GPU seconds (CUDA) counted the whole run's metrics.jsonl, past
    the 2 iterations its budget says."""
    run = tmp_path / "run"
    (run / "ckpt-00000002").mkdir(parents=True)
    (run / "ckpt-00000004").mkdir()
    for i in (2, 4):
        (run / f"ckpt-{i:08d}" / "state.json").write_text(json.dumps({"iteration": i}))
    (run / "LATEST").write_text("ckpt-00000004\n")
    (run / "metrics.jsonl").write_text("".join(
        json.dumps({"iteration": i, "accuracy": i / 10, "time": 100.0 + 10 * i}) + "\n"
        for i in (1, 2, 3, 4)))
    cfg = {"family": {"name": "folder", "ways": 2, "shots": 1}, "method": {"name": "maml"},
           "eval": {"ways": 0, "shots": 0}}
    result = {"steps": [1], "tasks": 2, "accuracy": {"mean": [0.5], "ci95": [0.1]},
              "per_task": {"accuracy": [[0.4, 0.6]]}}
    for ckpt, last in ((run / "ckpt-00000002", 2), (run, 4), (run / "ckpt-00000004", 4)):
        rec = records.eval_record(cfg, result, "accuracy", checkpoint=ckpt, command="c")
        assert rec["budget"]["iterations"] == last
        assert rec["training_curve"] == [[i, 10.0 * i] for i in range(1, last + 1)]
        assert records._run_budget(ckpt, "cuda")[1] == {"iterations": last,
                                                         "gpu_seconds": 10.0 * (last - 1)}


def test_a_record_path_holding_another_file_is_refused_before_any_work(run, tmp_path, capsys):
    """``--record RUN/ckpt-*/state.json`` replaced the checkpoint's state with the record (the
    run no longer loaded), and ``--record OUT/results.json`` replaced --out's results."""
    import shutil

    mine = tmp_path / "mine"
    shutil.copytree(run, mine)
    state = mine / "ckpt-00000004" / "state.json"
    before = state.read_bytes()
    capsys.readouterr()
    assert main(["eval", "--checkpoint", str(mine), "--record", str(state), "--out",
                 str(tmp_path / "ev"), "--no-progress"]) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and f"record path '{state}' is a file that is not a result " \
        f"record" in captured.err
    assert state.read_bytes() == before and not (tmp_path / "ev").exists()
    out = tmp_path / "ev"
    assert main(["eval", "--checkpoint", str(mine), "--record", str(out / "results.json"),
                 "--out", str(out), "--no-progress"]) == 2
    assert f"--record {out / 'results.json'} is the results.json that --out" in \
        capsys.readouterr().err
    assert not out.exists()
    # a record there is replaced, as rerunning a record's command does
    rec = tmp_path / "r.json"
    for _ in range(2):
        assert main(["eval", "--checkpoint", str(mine), "--record", str(rec),
                     "--no-progress"]) == 0
    assert capsys.readouterr().out.endswith(f"replaced record {rec}\n")
    with pytest.raises(ValueError, match="is a file that is not a result record"):
        records.write_record(state, **json.loads(rec.read_text()))


def test_an_ensemble_of_one_runs_checkpoints_counts_its_training_once(tmp_path):
    """``--checkpoint RUN RUN/ckpt-00000002`` (a snapshot ensemble): the record's budget summed
    both checkpoints' iterations and CPU seconds, 6 iterations for a run trained 4; another
    run's training is still added."""
    for name in ("a", "b"):
        run = tmp_path / name
        for i in (2, 4):
            (run / f"ckpt-{i:08d}").mkdir(parents=True)
            (run / f"ckpt-{i:08d}" / "state.json").write_text(
                json.dumps({"iteration": i, "cpu_seconds": 1.5 * i}))
        (run / "LATEST").write_text("ckpt-00000004\n")
    cfg = {"family": {"name": "folder", "ways": 2, "shots": 1}, "method": {"name": "maml"},
           "eval": {"ways": 0, "shots": 0}}
    result = {"steps": [1], "tasks": 2, "accuracy": {"mean": [0.5], "ci95": [0.1]},
              "per_task": {"accuracy": [[0.4, 0.6]]}}

    def budget(*paths):
        return records.eval_record(cfg, result, "accuracy", checkpoint=list(paths),
                                   command="c")["budget"]

    a, b = tmp_path / "a", tmp_path / "b"
    assert budget(a, a / "ckpt-00000002") == {"members": 2, "iterations": 4, "cpu_seconds": 6.0}
    assert budget(a / "ckpt-00000002", a / "ckpt-00000004", b) == \
        {"members": 3, "iterations": 8, "cpu_seconds": 12.0}
    # ckpt-* folders gathered in a folder that is not a run's: each its own run
    (b / "LATEST").unlink()
    assert budget(b / "ckpt-00000002", b / "ckpt-00000004")["iterations"] == 6
