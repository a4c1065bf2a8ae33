"""``metaloop eval`` of a run short of its iterations says whether a process is still
training it (its folder's lock is held: "in progress", with that pid) or it stopped (no one
holds the lock, even where a killed run left the lock file): only then does ``metaloop train
--resume`` finish it."""

from __future__ import annotations

import shutil
import subprocess
import sys

import pytest

from metaloop import runlock
from metaloop.cli.main import main

pytest.importorskip("fcntl")             # the lock is tested with flock

CONFIG = ('[family]\nname = "sinusoid"\nshots = 5\n[method]\nname = "maml"\n'
          '[train]\niterations = 4\ncheckpoint_every = 2\nmeta_batch = 2\n'
          '[eval]\ntasks = 2\nsteps = [0]\n')
HOLD = ("import sys\nfrom metaloop import runlock\nrunlock.acquire(sys.argv[1])\n"
        "print('held', flush=True)\nsys.stdin.read()\n")


def test_a_run_still_training_is_in_progress_and_a_killed_one_stopped(trained_run, tmp_path,
                                                                       capsys):
    run = tmp_path / "run"
    shutil.copytree(trained_run(CONFIG), run)
    (run / "LATEST").write_text("ckpt-00000002\n")      # its newest checkpoint so far
    writer = subprocess.Popen([sys.executable, "-c", HOLD, str(run)], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True)
    try:
        assert writer.stdout.readline() == "held\n"
        capsys.readouterr()
        assert main(["eval", "--checkpoint", str(run), "--no-progress"]) == 0
        err = capsys.readouterr().err
        assert f"note: {run} is in progress (pid {writer.pid}, iteration 2 of 4" in err, err
        assert "stopped" not in err and "--resume" not in err
    finally:
        writer.kill()                   # as a killed run: its lock file stays, not its lock
        writer.communicate()
    assert runlock.holder(run)["pid"] == writer.pid
    assert main(["eval", "--checkpoint", str(run), "--no-progress"]) == 0
    err = capsys.readouterr().err
    assert f"note: {run} stopped at iteration 2 of 4 (metaloop train --resume finishes it)" \
        in err, err
    assert "in progress" not in err
