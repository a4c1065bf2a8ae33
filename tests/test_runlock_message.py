"""The message of a run folder in use names the holder's ``--out`` whatever the length of
its command (the middle is cut, not the end) and the lock file that says who holds it."""

from __future__ import annotations

import subprocess
import sys

import pytest

from metaloop import runlock

pytest.importorskip("fcntl")             # the lock is tested with flock

HOLD = ("import sys\nfrom metaloop import runlock\nrunlock.acquire(sys.argv[1])\n"
        "print('held', flush=True)\nsys.stdin.read()\n")


def test_a_long_command_keeps_its_out_and_both_ends():
    from metaloop.runlock import _shortened
    words = ["metaloop", "train", "--config", "configs/" + "x" * 120 + ".toml",
             *["--set", "train.iterations=5"] * 10, "--out", "runs/" + "y" * 60, "--resume",
             "--no-progress"]
    text = _shortened(words)
    assert f"--out runs/{'y' * 60}" in text and "..." in text
    assert text.startswith("metaloop train --config ") and text.endswith("--no-progress")
    assert len(text) <= runlock.COMMAND_CHARS
    # --out first, or as --out=VALUE, or longer than the limit itself: still all there
    words = ["metaloop", "eval", "--out=" + "o" * 300, *["--tasks", "5"] * 40]
    assert "--out=" + "o" * 300 in _shortened(words)
    words = ["metaloop", "predict", "--out", "p", *["--steps", "5"] * 40]
    assert _shortened(words).startswith("metaloop predict --out p ")
    short = ["metaloop", "train", "--out", "runs/a"]
    assert _shortened(short) == "metaloop train --out runs/a"


def test_the_in_use_message_names_the_holders_out_and_the_lock_file(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    argv = [str(run), *["--set", "a.b=" + "z" * 20] * 12, "--out", "runs/the-one-to-stop"]
    holder = subprocess.Popen([sys.executable, "-c", HOLD, *argv], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline() == "held\n"
        with pytest.raises(runlock.RunInUseError) as e:
            runlock.acquire(run)
    finally:
        holder.kill()
        holder.communicate()
    said = str(e.value)
    assert f"pid {holder.pid}" in said and "--out runs/the-one-to-stop" in said, said
    assert f"(its lock file: {run / runlock.LOCK_FILE})" in said, said
