"""The run's ``metrics.jsonl`` is opened once for the run, not once per line, and keeps whole
lines: a resume continues it where its checkpoint was."""

import builtins
import json
import os

import torch

import metaloop as ml
from metaloop.meta import MAML
from metaloop.models import MLP


def _train(out, iterations, resume=False):
    torch.manual_seed(0)
    ml.train(MAML(MLP(1, (8, 8), 1), 0.01, 1), ml.tasks.Sinusoid(5, 5), iterations=iterations,
             meta_batch=2, progress=False, out_dir=out, checkpoint_every=3, resume=resume)


def _count_opens(monkeypatch) -> list:
    """Record every open of a ``metrics.jsonl`` (by Python's ``open`` or ``os.open``)."""
    opened = []
    real_open, real_os_open = builtins.open, os.open

    def recording_open(file, *a, **k):
        if str(file).endswith("metrics.jsonl"):
            opened.append(file)
        return real_open(file, *a, **k)

    def recording_os_open(path, *a, **k):
        if str(path).endswith("metrics.jsonl"):
            opened.append(path)
        return real_os_open(path, *a, **k)
    monkeypatch.setattr(builtins, "open", recording_open)
    monkeypatch.setattr(os, "open", recording_os_open)
    return opened


def test_the_log_is_opened_once_for_a_run_and_once_for_its_resume(tmp_path, monkeypatch):
    run = tmp_path / "run"
    opened = _count_opens(monkeypatch)
    _train(run, 7)
    assert len(opened) == 1, opened          # not once per line (7) and per checkpoint (3)
    lines = (run / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(x)["iteration"] for x in lines] == list(range(1, 8))
    with open(run / "metrics.jsonl", "a") as f:           # a line cut short by a kill
        f.write('{"iteration": 8, "lo')
    opened.clear()
    _train(run, 9, resume=True)
    assert len(opened) == 1, opened
    again = (run / "metrics.jsonl").read_text().splitlines()
    assert again[:6] == lines[:6]                         # up to the checkpoint at 6
    assert [json.loads(x)["iteration"] for x in again] == list(range(1, 10))
