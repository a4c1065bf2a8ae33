"""Ctrl-C while the ``metaloop`` command starts (torch's import, before ``main`` runs): one
line and exit status 130, no traceback; imported as a library, the KeyboardInterrupt
propagates unchanged.

The interrupt is made deterministic by a ``sys.meta_path`` finder that raises
KeyboardInterrupt when ``metaloop.adapt`` (the package's first import) is looked up.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

import metaloop

LINE = "metaloop: interrupted while starting; nothing was written\n"
FINDER = """
import sys
class _Interrupt:
    def find_spec(self, name, path=None, target=None):
        if name == "metaloop.adapt":
            raise KeyboardInterrupt
        return None
sys.meta_path.insert(0, _Interrupt())
"""


def _run(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    """``python *args`` in ``tmp_path``, importing this metaloop, with the finder installed
    at start-up (a ``sitecustomize`` on the path)."""
    (tmp_path / "sitecustomize.py").write_text(FINDER)
    src = str(Path(metaloop.__file__).resolve().parents[1])
    path = [str(tmp_path), src, os.environ.get("PYTHONPATH", "")]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in path if p),
           "PYTHONDONTWRITEBYTECODE": "1"}
    return subprocess.run([sys.executable, *args], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("argv0", ["/usr/local/bin/metaloop", "/venv/Scripts/metaloop.exe",
                                   "/venv/Scripts/metaloop-script.py"])
def test_the_console_script_interrupted_while_importing_prints_one_line(tmp_path, argv0):
    """The console script imports ``metaloop.cli.main`` (so the whole package and torch)
    before ``main`` runs, with ``sys.argv[0]`` its own path; Ctrl-C there printed a long
    traceback."""
    r = _run(tmp_path, "-c", f"import sys; sys.argv[0] = {argv0!r}\n"
                             f"from metaloop.cli.main import main\nsys.exit(main())")
    assert (r.returncode, r.stderr, r.stdout) == (130, LINE, "")


def test_python_dash_m_metaloop_interrupted_while_importing_prints_one_line(tmp_path):
    r = _run(tmp_path, "-m", "metaloop", "train", "--config", "nothing.toml")
    assert (r.returncode, r.stderr, r.stdout) == (130, LINE, "")
    assert list(tmp_path.iterdir()) == [tmp_path / "sitecustomize.py"]


@pytest.mark.parametrize("argv0", ["-c", "/home/me/metaloop_study.py", ""])
def test_a_library_import_still_raises_keyboard_interrupt(tmp_path, argv0):
    """A notebook, a test or a user's script importing metaloop gets the KeyboardInterrupt
    itself."""
    r = _run(tmp_path, "-c", f"import sys; sys.argv[0] = {argv0!r}\n"
                             f"try:\n    import metaloop\n"
                             f"except KeyboardInterrupt:\n    sys.exit(3)")
    assert (r.returncode, r.stderr) == (3, "")


def test_python_dash_m_of_another_package_that_imports_metaloop_still_raises(tmp_path):
    """While ``python -m userpkg`` locates its module ``sys.argv[0]`` is "-m" too; only
    ``python -m metaloop`` is the metaloop command."""
    pkg = tmp_path / "userpkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("import sys\ntry:\n    import metaloop\n"
                                     "except KeyboardInterrupt:\n    sys.exit(3)\n")
    (pkg / "__main__.py").write_text("")
    r = _run(tmp_path, "-m", "userpkg")
    assert (r.returncode, r.stderr) == (3, "")


def test_ctrl_c_while_the_arguments_are_parsed_is_one_line_and_130(monkeypatch, capsys,
                                                                   tmp_path):
    """QA repro: an interrupt in ``main``'s own start (building the parser, parsing) came
    before its ``try`` and printed a traceback."""
    from metaloop.cli import main as cli_main

    def interrupted():
        raise KeyboardInterrupt

    monkeypatch.setattr(cli_main, "build_parser", interrupted)
    monkeypatch.chdir(tmp_path)
    assert cli_main.main(["train", "--config", "c.toml", "--out", "runs/x"]) == 130
    out, err = capsys.readouterr()
    assert (out, err) == ("", LINE)
    assert not any(tmp_path.iterdir())


SIGTERM_FINDER = """
import os, signal, sys
class _Terminate:
    def find_spec(self, name, path=None, target=None):
        if name == "metaloop.adapt":
            os.kill(os.getpid(), signal.SIGTERM)
        return None
sys.meta_path.insert(0, _Terminate())
"""


def test_sigterm_while_the_command_imports_prints_one_line(tmp_path):
    """SIGTERM during the package's import (torch's, before ``main`` runs) ends the command
    as Ctrl-C does; it killed the process with status 143 and no message."""
    (tmp_path / "sitecustomize.py").write_text(SIGTERM_FINDER)
    src = str(Path(metaloop.__file__).resolve().parents[1])
    path = [str(tmp_path), src, os.environ.get("PYTHONPATH", "")]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in path if p),
           "PYTHONDONTWRITEBYTECODE": "1"}
    r = subprocess.run([sys.executable, "-m", "metaloop", "train", "--config", "nothing.toml"],
                       cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert (r.returncode, r.stderr, r.stdout) == (130, LINE, "")
    assert list(tmp_path.iterdir()) == [tmp_path / "sitecustomize.py"]


def test_a_library_import_leaves_sigterm_alone(tmp_path):
    r = _run(tmp_path, "-c", "import signal, sys\nsys.meta_path.pop(0)\nimport metaloop\n"
                             "sys.exit(signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL)")
    assert (r.returncode, r.stderr) == (0, "")


@pytest.mark.parametrize("local_rank,line", [("1", ""), ("0", LINE)])
def test_under_torchrun_only_a_nodes_first_rank_says_it_was_interrupted_while_starting(
        tmp_path, monkeypatch, local_rank, line):
    """torchrun stops a node's other ranks (SIGTERM) as soon as one exits with its own error,
    often while they still import torch: each printed this line after that rank's error, as
    if the run had been interrupted."""
    monkeypatch.setenv("LOCAL_RANK", local_rank)
    monkeypatch.setenv("WORLD_SIZE", "2")
    r = _run(tmp_path, "-m", "metaloop", "eval", "--checkpoint", "nowhere")
    assert (r.returncode, r.stderr, r.stdout) == (130, line, "")


@pytest.mark.parametrize("local_rank,line", [("1", ""), ("", LINE)])
def test_under_torchrun_mains_start_speaks_once_per_node(monkeypatch, capsys, tmp_path,
                                                        local_rank, line):
    from metaloop.cli import main as cli_main

    def interrupted():
        raise KeyboardInterrupt

    monkeypatch.setenv("LOCAL_RANK", local_rank)
    monkeypatch.setattr(cli_main, "build_parser", interrupted)
    monkeypatch.chdir(tmp_path)
    assert cli_main.main(["train", "--config", "c.toml", "--out", "runs/x"]) == 130
    assert capsys.readouterr() == ("", line)
