"""``metaloop eval`` on bad input: exit 2 with a named error, and no --out folder left
behind (data errors are found after the folder is made, which is then removed again)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from metaloop.cli.main import main

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from conftest import tensor_config, train_run, write_tensor_file  # noqa: E402


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """An R2D2 run on a tensor file: 12 classes of 10 examples, 6 held out, no val split."""
    d = tmp_path_factory.mktemp("eval_bad_input")
    return train_run(d, tensor_config(write_tensor_file(d / "feats.npz")))


@pytest.mark.parametrize("argv, message", [
    (["--ways", "9"], "ways=9 exceeds the 6 classes of the 'test' split"),
    (["--shots", "10"], "have fewer than shots + queries = 10 + 3"),
    (["--split", "val"], "exceeds the 0 classes of the 'val' split"),
    (["--lake-runs", "nosuch"], "--lake-runs scores Omniglot drawings, but"),
    (["--ways", "0"], "--ways must be positive, got 0"),
    (["--shots", "0"], "--shots must be positive, got 0"),
    (["--shots", "-1"], "--shots must be positive, got -1"),
    # the official runs are fixed: the flags that choose generated tasks would be ignored
    (["--lake-runs", "nosuch", "--tasks", "5", "--within-alphabet"],
     "--lake-runs scores the official runs as they are (their own classes, drawings and "
     "trials), so --tasks, --within-alphabet would change nothing"),
    (["--lake-runs", "nosuch", "--split", "test", "--ways", "3", "--shots", "1", "--drawers",
      "shared"], "so --shots, --ways, --split, --drawers would change nothing"),
])
def test_eval_bad_input_exits_2_and_leaves_no_out_folder(tiny_run, tmp_path, capsys, argv,
                                                         message):
    out = tmp_path / "ev" / "sub"
    assert main(["eval", "--checkpoint", str(tiny_run), "--no-progress", "--out", str(out),
                 *argv]) == 2
    err = capsys.readouterr().err
    assert "metaloop eval: error:" in err and message in err, err
    assert not (tmp_path / "ev").exists()


def test_eval_bad_data_keeps_an_out_folder_the_user_had(tiny_run, tmp_path, capsys):
    out = tmp_path / "mine"
    out.mkdir()
    assert main(["eval", "--checkpoint", str(tiny_run), "--no-progress", "--out", str(out),
                 "--ways", "9"]) == 2
    assert "ways=9 exceeds" in capsys.readouterr().err
    assert out.is_dir()
    assert main(["eval", "--checkpoint", str(tiny_run), "--no-progress", "--out", str(out)]) == 0
    assert (out / "results.json").exists()


def _with_stored(run: Path, dest: Path, **eval_keys) -> Path:
    """A copy of ``run`` whose stored config has ``eval_keys`` (and ``family_split``): a run
    trained before ``metaloop train`` refused them."""
    import json
    import shutil

    from metaloop.train.checkpoint import latest_checkpoint, state_digest

    shutil.copytree(run, dest)
    state = latest_checkpoint(dest) / "state.json"
    data = json.loads(state.read_text())
    split = eval_keys.pop("family_split", None)
    data["config"]["eval"].update(eval_keys)
    if split is not None:
        data["config"]["family"]["split"] = split
    data["state_sha256"] = state_digest(data)
    state.write_text(json.dumps(data))
    return dest


def test_a_vector_run_with_a_stored_shift_is_evaluated_with_the_shift_turned_off(
        tiny_run, tmp_path, capsys):
    """A tensors run of feature vectors trained with eval.support_shift = 1 could never be
    evaluated: its shift was refused, and so was --support-shift 0."""
    run = _with_stored(tiny_run, tmp_path / "shifted", support_shift=1, query_shift=1)
    capsys.readouterr()
    assert main(["eval", "--checkpoint", str(run), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert ("eval.support_shift = 1 and eval.query_shift = 1 (the config of "
            f"{run}) shifts images, but {run} reads no images") in err
    assert "give --support-shift 0 --query-shift 0 to evaluate it without" in err
    assert main(["eval", "--checkpoint", str(run), "--support-shift", "0", "--no-progress"]) == 2
    assert "give --query-shift 0 to evaluate it without" in capsys.readouterr().err
    out = tmp_path / "e"
    assert main(["eval", "--checkpoint", str(run), "--support-shift", "0", "--query-shift", "0",
                 "--out", str(out), "--no-progress"]) == 0
    import json
    ev = json.loads((out / "results.json").read_text())["config"]["eval"]
    assert ev["support_shift"] == ev["query_shift"] == 0
    # a 0 that turns off nothing, or a shift, is still refused by name
    assert main(["eval", "--checkpoint", str(tiny_run), "--query-shift", "0",
                 "--no-progress"]) == 2
    assert "--query-shift 0 (its eval.query_shift is 0 already): shifts images" in \
        capsys.readouterr().err
    assert main(["eval", "--checkpoint", str(run), "--support-shift", "1", "--query-shift", "0",
                 "--no-progress"]) == 2
    assert "--support-shift 1: shifts images, but" in capsys.readouterr().err


def test_a_solved_head_stored_with_steps_is_evaluated_after_step_0(tiny_run, tmp_path, capsys):
    """An r2d2 run whose config says eval.steps = [0, 1] printed a '1 step' column equal to
    '0 steps' and recorded 'after 1 step'."""
    import json

    run = _with_stored(tiny_run, tmp_path / "steps", steps=[0, 1])
    rec = tmp_path / "rec.json"
    capsys.readouterr()
    assert main(["eval", "--checkpoint", str(run), "--record", str(rec), "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "0 steps" in out and "1 step" not in out
    assert json.loads(rec.read_text())["metric"] == "query accuracy (%) after 0 steps"


def test_one_task_is_one_task(tiny_run, capsys):
    assert main(["eval", "--checkpoint", str(tiny_run), "--tasks", "1", "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "over 1 task\n" in out and "1 tasks" not in out


def test_a_run_held_out_on_its_training_split_is_warned_about(tiny_run, tmp_path, capsys):
    """A run trained on family.split = "test" and evaluated on eval.split = "test" scored
    100% on its training classes, without a word."""
    from metaloop import config

    run = _with_stored(tiny_run, tmp_path / "same", family_split="test")
    with pytest.warns(config.SharedSplitWarning, match=r"eval\.split = 'test' is family\.split "
                                                       r"= 'test'.*scores the training classes"):
        assert main(["eval", "--checkpoint", str(run), "--no-progress"]) == 0


def test_one_checkpoint_given_twice_is_refused_as_an_ensemble(method_runs, tmp_path, capsys):
    """``--checkpoint RUN RUN`` (or a run and its newest ``ckpt-*`` folder) was evaluated as
    "protonet, ensemble of 2 runs", and its record summed the one run's budget twice."""
    from conftest import refused

    run = Path(method_runs("protonet"))
    ckpt = run / (run / "LATEST").read_text().strip()
    rec = tmp_path / "rec" / "r.json"
    refused(["eval", "--checkpoint", str(run), str(run), "--record", str(rec)], capsys,
            tmp_path, f"ensemble: {run} is given twice ({ckpt.resolve()})", "give each run once")
    refused(["eval", "--checkpoint", str(run), str(ckpt), "--record", str(rec)], capsys,
            tmp_path, f"ensemble: {run} and {ckpt} are one checkpoint", "give each run once")
    assert not rec.parent.exists()
