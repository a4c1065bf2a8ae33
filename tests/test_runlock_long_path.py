"""A run folder whose name has a component too long for the file system (ENAMETOOLONG) is
a named error (exit status 2 in the command line), not a traceback, and nothing is made."""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path

import numpy as np
import pytest

from metaloop import runlock
from metaloop.cli.main import main

sys.path.insert(0, str(Path(__file__).parent / "train"))
from _cli import write_config  # noqa: E402

LONG = "a" * 256


@pytest.mark.parametrize("parent_exists", [True, False])
def test_acquire_names_a_component_too_long(tmp_path, parent_exists):
    out = tmp_path / "lp" / LONG
    if parent_exists:                   # then Path.exists() itself raises ENAMETOOLONG
        out.parent.mkdir()
    with pytest.raises(ValueError, match=r"cannot create output directory .*: File name too "
                                         r"long"):
        runlock.acquire(out)
    if parent_exists:
        with pytest.raises(ValueError, match=r"cannot use output directory .*: File name too "
                                             r"long"):
            runlock.acquire(out, create=False)
    assert os.listdir(tmp_path) == (["lp"] if parent_exists else [])
    assert not parent_exists or os.listdir(out.parent) == []

@pytest.mark.parametrize("argv", [
    ["train", "--config", "{cfg}"],
    ["compare", "--methods", "maml", "--iterations", "2"],
    ["vae", "--epochs", "1"],
    ["eval", "--checkpoint", "{run}"],
    ["forgetting", "--scenario", "split-data-class", "--data", "{vec}"],
])
@pytest.mark.parametrize("parent_exists", [True, False])
def test_every_writer_command_names_a_component_too_long(tmp_path, capsys, argv,
                                                         parent_exists):
    cfg = write_config(tmp_path / "c.toml", iterations=2, meta_batch=2, checkpoint_every=2,
                       seed=0)
    run = tmp_path / "run"
    if "{run}" in argv:
        assert main(["train", "--config", str(cfg), "--out", str(run), "--no-progress"]) == 0
    capsys.readouterr()
    vec = tmp_path / "vec.npz"
    rng = np.random.default_rng(0)
    np.savez(vec, x=rng.normal(size=(120, 4)).astype(np.float32),
             y=np.repeat(np.arange(4), 30))
    argv = [a.format(cfg=cfg, run=run, vec=vec) for a in argv]
    out = tmp_path / "lp" / LONG
    if parent_exists:                   # then Path.exists() itself raises ENAMETOOLONG
        out.parent.mkdir()
    assert main([*argv, "--out", str(out), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert re.fullmatch(f"metaloop {argv[0]}: error: cannot (create|use) output directory "
                        f"{re.escape(str(out))}: File name too long\n", err), err
    assert os.listdir(out.parent) == [] if parent_exists else not out.parent.exists()
