"""A resume whose ``metrics.jsonl`` was deleted says so: the log's lines up to the checkpoint
are lost, and it restarts after it (the weights resume exactly from the checkpoint)."""

import json

import torch

import metaloop as ml
from metaloop.meta import MAML
from metaloop.models import MLP


def _train(out, iterations, resume=False):
    torch.manual_seed(0)
    ml.train(MAML(MLP(1, (8, 8), 1), 0.01, 1), ml.tasks.Sinusoid(5, 5), iterations=iterations,
             meta_batch=2, progress=False, out_dir=out, checkpoint_every=3, resume=resume)


def test_a_deleted_log_is_named_on_resume(tmp_path, capsys):
    run = tmp_path / "run"
    _train(run, 7)
    (run / "metrics.jsonl").unlink()
    capsys.readouterr()
    _train(run, 9, resume=True)
    err = capsys.readouterr().err
    assert err.count("\n") == 1, err
    assert f"{run / 'metrics.jsonl'} is missing" in err
    assert "up to iteration 7 are lost" in err and "restarts after iteration 7" in err
    lines = (run / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(x)["iteration"] for x in lines] == [8, 9]      # after the checkpoint at 7


def test_a_log_that_is_there_gets_no_note(tmp_path, capsys):
    run = tmp_path / "run"
    _train(run, 7)
    capsys.readouterr()
    _train(run, 9, resume=True)
    assert "missing" not in capsys.readouterr().err
    lines = (run / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(x)["iteration"] for x in lines] == list(range(1, 10))
