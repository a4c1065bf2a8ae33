"""SIGTERM and Ctrl-C at any moment of ``main``: one line and exit status 130, nothing
written; SIGTERM is turned into the KeyboardInterrupt that Ctrl-C gives from ``main``'s
first line, not only once the command runs."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

import metaloop
from metaloop.cli import _signals
from metaloop.cli import main as cli_main

STARTING = "metaloop: interrupted while starting; nothing was written\n"
# a SIGTERM sent to the process itself when the parser imports its first command's module
FINDER = """
import os, signal, sys
class _Term:
    def find_spec(self, name, path=None, target=None):
        if name == "metaloop.cli.compare":
            os.kill(os.getpid(), signal.SIGTERM)
        return None
sys.meta_path.insert(0, _Term())
"""


def test_sigterm_while_the_parser_is_built_is_one_line_and_130(tmp_path):
    """A real ``python -m metaloop train`` that gets SIGTERM while ``main`` builds its parser
    (importing the commands' modules): it was killed (status -15, no message)."""
    (tmp_path / "sitecustomize.py").write_text(FINDER)
    src = str(Path(metaloop.__file__).resolve().parents[1])
    path = [str(tmp_path), src, os.environ.get("PYTHONPATH", "")]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in path if p),
           "PYTHONDONTWRITEBYTECODE": "1"}
    r = subprocess.run([sys.executable, "-m", "metaloop", "train", "--config", "c.toml",
                        "--out", "run"], cwd=tmp_path, env=env, capture_output=True,
                       text=True, timeout=120)
    assert (r.returncode, r.stderr, r.stdout) == (130, STARTING, "")
    assert list(tmp_path.iterdir()) == [tmp_path / "sitecustomize.py"]


@pytest.mark.parametrize("at", ["keep_heap", "set_num_threads"])
def test_ctrl_c_after_parsing_before_the_command_runs_is_one_line_and_130(
        monkeypatch, capsys, tmp_path, at):
    """Between parsing and the command (the allocator and thread settings) an interrupt
    came outside ``main``'s handling: a traceback."""
    import torch

    def interrupted(*a, **k):
        raise KeyboardInterrupt

    if at == "keep_heap":
        monkeypatch.setattr(cli_main, "keep_heap", interrupted)
    else:
        monkeypatch.setattr(torch, "set_num_threads", interrupted)
    monkeypatch.chdir(tmp_path)
    try:
        code = cli_main.main(["--threads", "1", "--malloc", "heap", "train", "--config",
                              "c.toml", "--out", "run"])
    except KeyboardInterrupt:                     # not pytest's own: the test fails instead
        pytest.fail("the KeyboardInterrupt escaped main")
    assert code == 130
    assert capsys.readouterr() == ("", STARTING)
    assert not any(tmp_path.iterdir())


def test_sigterm_in_mains_start_is_turned_into_keyboard_interrupt(monkeypatch, capsys):
    """In-process: SIGTERM raised by ``build_parser`` is handled (and the handler before is
    set again after ``main``)."""
    def term():
        assert signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL, "SIGTERM not handled"
        signal.raise_signal(signal.SIGTERM)
        raise AssertionError("SIGTERM did not stop main")

    before = signal.getsignal(signal.SIGTERM)
    monkeypatch.setattr(cli_main, "build_parser", term)
    assert cli_main.main(["train", "--config", "c.toml"]) == 130
    assert capsys.readouterr() == ("", STARTING)
    assert signal.getsignal(signal.SIGTERM) == before


def test_interrupt_on_sigterm_is_kept_by_main_and_a_users_handler_is_left():
    """``interrupt_on_sigterm`` (for the command's process while it starts) sets the handler
    that ``sigterm_interrupts`` recognises as its own; a handler of the user's stays."""
    before = signal.getsignal(signal.SIGTERM)
    try:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        _signals.interrupt_on_sigterm()
        ours = signal.getsignal(signal.SIGTERM)
        assert ours is not signal.SIG_DFL
        with pytest.raises(KeyboardInterrupt, match="stopped by SIGTERM"):
            signal.raise_signal(signal.SIGTERM)
        with _signals.sigterm_interrupts():
            assert signal.getsignal(signal.SIGTERM) is ours
        assert signal.getsignal(signal.SIGTERM) is ours

        def users(signum, frame):
            raise AssertionError("not raised")
        signal.signal(signal.SIGTERM, users)
        _signals.interrupt_on_sigterm()
        with _signals.sigterm_interrupts():
            assert signal.getsignal(signal.SIGTERM) is users
    finally:
        signal.signal(signal.SIGTERM, before)
