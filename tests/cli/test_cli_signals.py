"""SIGTERM and Ctrl-C at any moment of ``main``: one line and exit status 130, nothing
written; SIGTERM is turned into the KeyboardInterrupt that Ctrl-C gives from ``main``'s
first line, not only once the command runs. One more signal during the clean-up after an
interrupt is ignored, the next stops at once; once the command has its status, a signal
changes nothing, in the interpreter's shutdown too.

Signals are sent by the process to itself at the point of interest (``signal.raise_signal``
in a patched function, a ``sitecustomize`` hook), so every test is deterministic."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

import metaloop
from metaloop.cli import _signals
from metaloop.cli import main as cli_main
from metaloop.cli import train as cli_train

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
    that ``catch_signals`` recognises as its own; a handler of the user's stays."""
    before = signal.getsignal(signal.SIGTERM)
    try:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        _signals.interrupt_on_sigterm()
        ours = signal.getsignal(signal.SIGTERM)
        assert ours is not signal.SIG_DFL
        with pytest.raises(KeyboardInterrupt, match="stopped by SIGTERM"):
            signal.raise_signal(signal.SIGTERM)
        _signals.catch_signals()
        assert signal.getsignal(signal.SIGTERM) is ours
        _signals.release_signals()
        assert signal.getsignal(signal.SIGTERM) is ours

        def users(signum, frame):
            raise AssertionError("not raised")
        signal.signal(signal.SIGTERM, users)
        _signals.interrupt_on_sigterm()
        _signals.catch_signals()
        assert signal.getsignal(signal.SIGTERM) is users
        _signals.release_signals()
    finally:
        _signals.release_signals()
        signal.signal(signal.SIGTERM, before)



@pytest.mark.parametrize("sig", ["SIGINT", "SIGTERM"])
def test_a_handler_of_the_users_or_an_ignored_signal_is_left_by_main(monkeypatch, sig):
    """A program of the user's with its own handler, or a background job whose SIGINT is
    ignored: ``main`` leaves the handler as it is, before and after the command."""
    def users(signum, frame):
        raise AssertionError("not raised")

    number, seen = getattr(signal, sig), []

    def command(argv, started):
        seen.append(signal.getsignal(number))
        return 0

    monkeypatch.setattr(cli_main, "_main", command)
    before = signal.getsignal(number)
    try:
        for handler in (users, signal.SIG_IGN):
            signal.signal(number, handler)
            assert cli_main.main([]) == 0
            assert (seen[-1], signal.getsignal(number)) == (handler, handler)
    finally:
        signal.signal(number, before)


def _python(tmp_path: Path, *args: str, site: str | None = None,
            env: dict | None = None) -> subprocess.CompletedProcess:
    """``python *args`` in ``tmp_path``, importing this metaloop, with ``site`` as the
    ``sitecustomize`` it runs at start-up."""
    if site is not None:
        (tmp_path / "sitecustomize.py").write_text(site)
    src = str(Path(metaloop.__file__).resolve().parents[1])
    path = [str(tmp_path), src, os.environ.get("PYTHONPATH", "")]
    env = {**os.environ, **(env or {}), "PYTHONPATH": os.pathsep.join(p for p in path if p),
           "PYTHONDONTWRITEBYTECODE": "1"}
    return subprocess.run([sys.executable, *args], cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=120)


# The process sends itself LATE_SIGNAL in its shutdown, after the command has returned: in an
# atexit function (which Python runs with the signal handlers still set), or in a finaliser
# run when sitecustomize's module is torn down (after Python has set SIGINT and SIGTERM back to
# their default, which kills the process); then it writes the file LATE_MARK.
LATE = """
import atexit, os, signal

def _late(kill=os.kill, pid=os.getpid(), sig=getattr(signal, os.environ["LATE_SIGNAL"]),
          mark=os.environ["LATE_MARK"], open=open):
    kill(pid, sig)
    [0 for _ in range(100)]              # (Python runs a handler between instructions)
    with open(mark, "w") as f:
        f.write("after")

class _Finaliser:
    def __del__(self, late=_late):
        late()

if os.environ["LATE_WHEN"] == "atexit":
    atexit.register(_late)
else:
    _finaliser = _Finaliser()
"""
CONSOLE_SCRIPT = ("import sys; sys.argv[0] = '/usr/local/bin/metaloop'\n"
                  "from metaloop.cli.main import main\nsys.exit(main())")


@pytest.mark.parametrize("entry, when, sig", [
    ("python -m metaloop", "finaliser", "SIGTERM"),
    ("console script", "atexit", "SIGINT"),
])
def test_a_signal_in_the_shutdown_after_the_command_keeps_its_status(tmp_path, entry, when,
                                                                     sig):
    """A command that has printed all it prints and returned 0, then signalled while the
    interpreter shuts down: it exits 0 with nothing on stderr. A SIGTERM in the modules'
    teardown killed it (status -15: 143 in a shell), a SIGINT in an atexit function printed
    a traceback."""
    args = ["-m", "metaloop"] if entry == "python -m metaloop" else ["-c", CONSOLE_SCRIPT]
    r = _python(tmp_path, *args, "train", "--example-config", site=LATE,
                env={"LATE_SIGNAL": sig, "LATE_WHEN": when,
                     "LATE_MARK": str(tmp_path / "late")})
    assert (r.returncode, r.stderr) == (0, "")
    assert r.stdout == cli_train.example_config_text()
    assert (tmp_path / "late").read_text() == "after"     # the shutdown went on to the end


# The command returns, leaving a thread that Python's shutdown waits for: the thread sends
# the process SIGTERM, then waits HANG seconds (a teardown that hangs).
HANG = 30
HANGING = ("import os, signal, sys, threading\n"
           "sys.argv[0] = '/usr/local/bin/metaloop'\n"
           "from metaloop.cli.main import main\n"
           "code = main(sys.argv[1:])\n"
           "def hang():\n"
           "    os.kill(os.getpid(), signal.SIGTERM)\n"
           f"    threading.Event().wait({HANG})\n"
           "threading.Thread(target=hang).start()\n"
           "sys.exit(code)\n")


def test_a_signal_to_a_finished_command_whose_shutdown_hangs_ends_it_with_its_status(
        tmp_path):
    """A shutdown that hangs (here, joining a thread) after the command has its status is
    stopped by a signal, with the command's status: the signals were ignored until the
    process exited, so only SIGKILL could end it."""
    import time

    start = time.monotonic()
    r = _python(tmp_path, "-c", HANGING, "train", "--example-config")
    assert time.monotonic() - start < HANG / 2
    assert (r.returncode, r.stderr) == (0, "")
    assert r.stdout == cli_train.example_config_text()


SINUSOID = """
[family]
name = "sinusoid"
shots = 5
queries = 5
[model]
hidden = [8]
[method]
name = "maml"
[train]
iterations = 4
meta_batch = 2
"""


@pytest.mark.parametrize("first, second", [("SIGTERM", "SIGINT"),
                                           ("the training loop's stop", "SIGTERM")])
def test_a_second_signal_during_the_clean_up_lets_it_remove_the_run(monkeypatch, capsys,
                                                                    tmp_path, first, second):
    """``metaloop train`` interrupted before its first checkpoint removes the run folder it
    made; a second signal as it starts removing it interrupted the removal, leaving the
    folder. The second signal is ignored now: the folder goes, one line, status 130."""
    run, removed = tmp_path / "run", []
    (tmp_path / "c.toml").write_text(SINUSOID)
    rmtree = shutil.rmtree

    def train_config(cfg, out, **kwargs):
        (out / "metrics.jsonl").write_text("")             # the run has begun writing
        if first == "SIGTERM":
            signal.raise_signal(signal.SIGTERM)
            raise AssertionError("SIGTERM did not stop the run")
        raise KeyboardInterrupt     # the loop's, after a stop request (its own handler's)

    def interrupted_rmtree(path, *args, **kwargs):
        signal.raise_signal(getattr(signal, second))
        removed.append(Path(path))
        rmtree(path, *args, **kwargs)

    monkeypatch.setattr(cli_train.recipe, "train_config", train_config)
    monkeypatch.setattr(cli_train.shutil, "rmtree", interrupted_rmtree)
    monkeypatch.chdir(tmp_path)
    before = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)
    try:
        code = cli_main.main(["train", "--config", "c.toml", "--out", "run", "--no-progress"])
    except KeyboardInterrupt:
        pytest.fail("a KeyboardInterrupt escaped main")
    stopped = "stopped by SIGTERM" if first == "SIGTERM" else "stopped"
    assert (code, capsys.readouterr()) == (
        130, ("", f"metaloop train: interrupted: {stopped}; no checkpoint written\n"))
    assert [p.resolve() for p in removed] == [run.resolve()]
    assert sorted(tmp_path.iterdir()) == [tmp_path / "c.toml"]
    assert (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)) == before


def test_a_signal_as_the_lock_is_released_after_the_loops_stop_is_ignored(monkeypatch, capsys,
                                                                         tmp_path):
    """The training loop's own stop (its KeyboardInterrupt, caught by ``train``, which
    returns 130) ends the except block before the run folder's lock is released: a signal
    there was the first ``main``'s handler saw, so it raised out of the release, leaving the
    lock file and printing a second line."""
    released = []
    (tmp_path / "c.toml").write_text(SINUSOID)
    release = cli_train.runlock.release

    def train_config(cfg, out, **kwargs):
        (out / "metrics.jsonl").write_text("")
        raise KeyboardInterrupt                      # the loop's, after a stop request

    def interrupted_release(held, **kwargs):
        if held is not None:
            signal.raise_signal(signal.SIGTERM)
            released.append(held)
        return release(held, **kwargs)

    monkeypatch.setattr(cli_train.recipe, "train_config", train_config)
    monkeypatch.setattr(cli_train.runlock, "release", interrupted_release)
    monkeypatch.chdir(tmp_path)
    code = cli_main.main(["train", "--config", "c.toml", "--out", "run", "--no-progress"])
    assert (code, capsys.readouterr()) == (
        130, ("", "metaloop train: interrupted: stopped; no checkpoint written\n"))
    assert len(released) == 1
    assert sorted(tmp_path.iterdir()) == [tmp_path / "c.toml"]


def test_in_a_program_of_ones_own_a_third_signal_raises_out_of_the_clean_up(monkeypatch,
                                                                             capsys):
    """``main`` called in a program of the user's: the signal after the ignored one raises
    KeyboardInterrupt out of the clean-up, as Python's own handler does, instead of ending
    the user's process; ``main`` still returns 130."""
    steps = []

    def command(argv, started):
        started.append("train")
        try:
            signal.raise_signal(signal.SIGTERM)
            raise AssertionError("SIGTERM did not stop the command")
        except KeyboardInterrupt:
            signal.raise_signal(signal.SIGINT)
            steps.append("second ignored")
            signal.raise_signal(signal.SIGINT)
            steps.append("third ignored")
            raise

    monkeypatch.setattr(cli_main, "_main", command)
    assert cli_main.main(["train"]) == 130
    assert steps == ["second ignored"]
    assert capsys.readouterr() == ("", "metaloop train: interrupted\n")
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


# The metaloop command (its console script) whose command is interrupted by SIGTERM and, in
# its clean-up, gets two more signals: it goes on after the first, and stops at the second.
THIRD = """
import signal, sys
sys.argv[0] = "/usr/local/bin/metaloop"
from metaloop.cli import main as cli_main

def command(argv, started):
    started.append("train")
    try:
        signal.raise_signal(signal.SIGTERM)
        raise AssertionError("SIGTERM did not stop the command")
    except KeyboardInterrupt:
        signal.raise_signal(signal.SIGTERM)
        open("cleaned", "w").close()
        signal.raise_signal(signal.SIGINT)
        open("not-stopped", "w").close()
        raise

cli_main._main = command
sys.exit(cli_main.main(["train"]))
"""


def test_the_command_stops_at_once_on_a_third_signal_during_its_clean_up(tmp_path):
    """One more signal during the clean-up is ignored (torchrun forwards one Ctrl-C as two
    signals); the next ends the process at once, with one line and status 130."""
    r = _python(tmp_path, "-c", THIRD)
    assert (r.returncode, r.stdout) == (130, "")
    assert r.stderr == ("metaloop: stopped at once by another SIGINT during the clean-up "
                        "after an interrupt; what it had not yet removed is left\n")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cleaned"]
