"""What a script reads: ``metaloop train``'s result line prints the metrics as JSON, and each
writing command's ``--help`` names the machine-readable files it writes."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import pytest

from metaloop.cli.main import main

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from conftest import train_run  # noqa: E402

SINUSOID = ('[family]\nname = "sinusoid"\n[model]\nname = "mlp"\nhidden = [8]\n'
            '[method]\nname = "maml"\ninner_lr = 0.01\ninner_steps = 1\n'
            '[train]\niterations = 2\nmeta_batch = 2\ncheckpoint_every = 2\n')


def test_train_prints_its_metrics_as_json(tmp_path, capsys):
    run = train_run(tmp_path, SINUSOID)
    line = capsys.readouterr().out.strip().splitlines()[-1]
    m = re.fullmatch(r"trained maml for 2 iterations; last meta-batch (\{.*\}); "
                     r"checkpoint in (.*)", line)
    assert m, line
    assert set(json.loads(m.group(1))) == {"loss"}
    assert m.group(2) == str(run)


@pytest.mark.parametrize("command,files", [
    ("train", ["metrics.jsonl", "state.json"]), ("eval", ["results.json"]),
    ("predict", ["results.json", "--json"]), ("adapt", ["results.json"]),
    ("vae", ["results.json", "metrics.jsonl"])])
def test_help_names_the_machine_readable_files(command, files, capsys):
    with pytest.raises(SystemExit):
        main([command, "--help"])
    text = capsys.readouterr().out
    tail = text[text.index("machine-readable output:"):]
    for name in files:
        assert name in tail
