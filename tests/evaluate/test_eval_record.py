"""``metaloop eval --record PATH`` writes a valid record of the evaluation it printed."""

from __future__ import annotations

import json
import shlex

import torch

from metaloop.cli.main import main
from metaloop.evaluate.records import load_records


def _train(tmp_path):
    cfg = tmp_path / "c.toml"
    cfg.write_text('[family]\nname = "sinusoid"\nshots = 5\n[method]\nname = "maml"\n'
                   '[train]\niterations = 4\ncheckpoint_every = 2\nmeta_batch = 2\n'
                   '[eval]\ntasks = 6\nsteps = [0, 1]\n')
    run = tmp_path / "run"
    assert main(["train", "--config", str(cfg), "--out", str(run), "--no-progress"]) == 0
    return run


def test_eval_record_matches_results_json(tmp_path):
    run = _train(tmp_path)
    rec_path = tmp_path / "docs" / "results" / "sine.json"
    argv = ["--threads", "1", "eval", "--checkpoint", str(run), "--out", str(tmp_path / "ev"),
            "--record", str(rec_path), "--no-progress"]
    assert main(argv) == 0
    res = json.loads((tmp_path / "ev" / "results.json").read_text())["methods"]["maml"]
    (rec,) = load_records(rec_path.parent)
    assert rec["table"] == "sinusoid" and rec["row"] == "maml"
    assert rec["metric"] == "query loss after 1 step"
    assert rec["mean"] == res["loss"]["mean"][-1] and rec["ci95"] == res["loss"]["ci95"][-1]
    assert rec["n"] == 6 and rec["budget"]["iterations"] == 4
    assert rec["budget"]["cpu_seconds"] >= 0
    assert rec["torch"] == torch.__version__.split("+")[0]
    assert rec["published"] is None and rec["run_config"]["train"]["iterations"] == 4
    # the command printed in the record reproduces the run: same flags, same parse
    parts = shlex.split(rec["command"])
    assert parts[0] == "metaloop" and parts[1:4] == ["--threads", "1", "eval"]
    assert set(argv[3:]) <= set(parts)


def test_a_bad_record_path_fails_before_evaluating_and_writes_nothing(tmp_path, capsys):
    run = _train(tmp_path)
    assert main(["eval", "--checkpoint", str(run), "--out", str(tmp_path / "ev"),
                 "--record", str(tmp_path / "r.txt"), "--no-progress"]) == 2
    assert "record path must end in .json" in capsys.readouterr().err
    assert not (tmp_path / "ev").exists()
    assert not (tmp_path / "r.txt").exists()
