"""``metaloop train`` with ``method.compile = true`` on the CPU and no working C++ compiler:
refused by name (exit 2) before any data is read and with nothing written, not stopped by
inductor's ``InvalidCxxCompiler`` traceback at the first iteration."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from metaloop.cli.main import main

COMPILED = """
[family]
name = "sinusoid"
shots = 5
queries = 5
[model]
hidden = [8]
[method]
name = "maml"
compile = true
[train]
iterations = 2
meta_batch = 2
checkpoint_every = 1
"""

ADVICE = ("install g++ or set method.compile = false")


def _fake_compiler(folder: Path) -> Path:
    """``folder/g++`` and ``folder/c++``: links to /bin/false, as a tester without a compiler
    saw it."""
    folder.mkdir()
    for name in ("g++", "c++", "gcc", "cc"):
        (folder / name).symlink_to("/bin/false")
    return folder / "g++"


def test_no_compiler_is_refused_before_training_in_process(tmp_path, capsys):
    inductor_config = pytest.importorskip("torch._inductor.config")
    fake = _fake_compiler(tmp_path / "bin")
    cfg, run = tmp_path / "c.toml", tmp_path / "run"
    cfg.write_text(COMPILED)
    with inductor_config.patch({"cpp.cxx": (None, str(fake))}):    # given back on every torch
        assert main(["train", "--config", str(cfg), "--out", str(run), "--no-progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == (f"metaloop train: error: method.compile = true needs a C++ compiler for "
                   f"torch.compile on the CPU (none works: tried {fake}); {ADVICE}"), err
    assert not run.exists()


def test_no_compiler_is_refused_by_the_command(tmp_path):
    """As the tester ran it: ``PATH=/tmp/x:$PATH CXX=/tmp/x/g++ metaloop train ...``."""
    pytest.importorskip("torch._inductor.cpp_builder")
    fake = _fake_compiler(tmp_path / "bin")
    cfg, run = tmp_path / "c.toml", tmp_path / "run"
    cfg.write_text(COMPILED)
    env = {**os.environ, "PATH": f"{fake.parent}{os.pathsep}{os.environ.get('PATH', '')}",
           "CXX": str(fake), "TORCHINDUCTOR_FORCE_DISABLE_CACHES": "1"}
    done = subprocess.run([sys.executable, "-m", "metaloop", "train", "--config", str(cfg),
                           "--out", str(run), "--no-progress"], env=env, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 2, done.stderr[-2000:]
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("metaloop train: error: method.compile = "
                                                   "true needs a C++ compiler"), lines
    assert ADVICE in lines[0] and "InvalidCxxCompiler" not in done.stderr
    assert not run.exists()


def test_eager_or_cuda_runs_are_not_asked(tmp_path, monkeypatch):
    """Without ``compile`` or off the CPU the compiler is not looked for."""
    from metaloop import config

    def boom():
        raise AssertionError("looked for a compiler")
    monkeypatch.setattr("metaloop.meta._strategies.cpu_compiler_problem", boom)
    cfg = config.validate({"family": {"name": "sinusoid"}, "method": {"name": "maml"}})
    config.check_compiler(cfg, "cpu")
    cfg["method"]["compile"] = True
    config.check_compiler(cfg, "cuda")
    with pytest.raises(AssertionError):
        config.check_compiler(cfg, "cpu")
