"""``metaloop eval --tasks 1``: the table prints ``± n/a``, and the note on stderr says the
same (``(± n/a)``), not a ``± 0`` the table does not print."""

from __future__ import annotations

import sys
from pathlib import Path

from metaloop.cli.main import main

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from conftest import train_run  # noqa: E402

SINUSOID = ('[family]\nname = "sinusoid"\n[model]\nname = "mlp"\nhidden = [8]\n'
            '[method]\nname = "maml"\ninner_lr = 0.01\ninner_steps = 1\n'
            '[train]\niterations = 2\nmeta_batch = 2\ncheckpoint_every = 2\n'
            '[eval]\ntasks = 2\nsteps = [0, 1]\n')


def test_the_one_task_note_says_what_the_table_prints(tmp_path, capsys):
    run = train_run(tmp_path, SINUSOID)
    capsys.readouterr()
    assert main(["eval", "--checkpoint", str(run), "--tasks", "1", "--no-progress"]) == 0
    got = capsys.readouterr()
    assert "± n/a" in got.out
    assert "note: one task has no confidence interval (± n/a); give --tasks 2 or more" \
        in got.err
    assert "± 0" not in got.err
