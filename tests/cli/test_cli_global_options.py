"""The global options work with every subcommand, and every failure is a named error.

Each subcommand runs as ``metaloop --threads 1 <command> ...`` (the form the README teaches):
once with bad input (a missing file or folder), which must exit with status 2 and a
``metaloop <command>: error: ...`` line, never a traceback; and, where that is cheap, once on
a tiny valid input, which must succeed. The commands run in this process through ``main``, so
an exception escaping it (a traceback on the command line) fails the test; one run goes
through the real ``metaloop`` console entry point in a subprocess.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch

from metaloop.cli.main import COMMANDS, main


def _bad_input(tmp_path) -> dict[str, list[str]]:
    """Per command, arguments naming files and folders that do not exist."""
    missing = str(tmp_path / "missing")
    return {
        "compare": ["--config", f"{missing}.toml", "--out", str(tmp_path / "c"),
                    "--no-progress"],
        "train": ["--config", f"{missing}.toml", "--out", str(tmp_path / "t"), "--no-progress"],
        "eval": ["--checkpoint", missing, "--no-progress"],
        "predict": ["--checkpoint", missing, "--support", missing, "--query", missing],
        "adapt": ["--model", missing, "--family", "omniglot", "--out", str(tmp_path / "a")],
        "forgetting": ["--root", missing, "--steps", "2", "--out", str(tmp_path / "f"),
                       "--no-progress"],
        "vae": ["--root", missing, "--epochs", "1", "--out", str(tmp_path / "v"),
                "--no-progress"],
        "data": ["omniglot", "--root", missing],
    }


def _named_error(capsys, command: str, rc: int) -> str:
    err = capsys.readouterr().err
    assert rc == 2, err
    assert f"metaloop {command}: error: " in err, err
    assert "Traceback" not in err, err
    return err


def test_every_command_is_covered(tmp_path):
    assert set(_bad_input(tmp_path)) == set(COMMANDS)


@pytest.mark.parametrize("command", COMMANDS)
def test_bad_input_is_a_named_error_with_status_2(command, tmp_path, capsys, monkeypatch):
    seen, real = [], torch.set_num_threads
    monkeypatch.setattr(torch, "set_num_threads", lambda n: seen.append(n) or real(n))
    before = torch.get_num_threads()
    rc = main(["--threads", "1", command, *_bad_input(tmp_path)[command]])
    err = _named_error(capsys, command, rc)
    assert "missing" in err                              # the message names the path
    assert seen[0] == 1                                  # the global option took effect
    assert torch.get_num_threads() == before             # and main set the caller's back


@pytest.mark.parametrize("threads", ["-1", str(2**31)])
@pytest.mark.parametrize("command", COMMANDS)
def test_a_bad_global_option_is_a_named_error(command, threads, tmp_path, capsys):
    """--threads 2**31 was torch's ValueError 'Overflow when unpacking long', a traceback."""
    with pytest.raises(SystemExit) as e:
        main(["--threads", threads, command, *_bad_input(tmp_path)[command]])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert f"--threads must be >= 0 and below 2**31, got {threads}" in err
    assert "Traceback" not in err


def test_the_console_entry_point_prints_no_traceback(tmp_path):
    """``metaloop --threads 1 vae ...`` as a user types it (the form that once died with a
    TypeError because ``vae`` had its own ``--threads``)."""
    argv = [sys.executable, "-m", "metaloop", "--threads", "1", "vae",
            *_bad_input(tmp_path)["vae"]]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2, done.stderr
    assert "metaloop vae: error: " in done.stderr and "Traceback" not in done.stderr


# -- tiny valid runs --------------------------------------------------------------------------

SINUSOID = """\
[family]
name = "sinusoid"
shots = 5
queries = 5
[model]
hidden = [8]
[method]
name = "maml"
inner_lr = 0.01
[train]
iterations = 2
meta_batch = 2
checkpoint_every = 2
[eval]
tasks = 4
steps = [0, 1]
"""


def test_train_then_eval_with_the_global_option(tmp_path, capsys, monkeypatch):
    seen, real = [], torch.set_num_threads
    monkeypatch.setattr(torch, "set_num_threads", lambda n: seen.append(n) or real(n))
    before = torch.get_num_threads()
    cfg, run = tmp_path / "c.toml", tmp_path / "run"
    cfg.write_text(SINUSOID)
    assert main(["--threads", "1", "train", "--config", str(cfg), "--out", str(run),
                 "--no-progress"]) == 0
    assert main(["--threads", "1", "eval", "--checkpoint", str(run), "--tasks", "4",
                 "--out", str(tmp_path / "ev"), "--no-progress"]) == 0
    assert json.loads((tmp_path / "ev" / "results.json").read_text())
    assert seen[0] == 1 and torch.get_num_threads() == before


def test_compare_with_the_global_option(tmp_path, capsys):
    out = tmp_path / "cmp"
    assert main(["--threads", "1", "compare", "sinusoid", "--methods", "maml,scratch",
                 "--iterations", "2", "--meta-batch", "2", "--tasks", "4", "--out", str(out),
                 "--no-progress"]) == 0
    assert set(json.loads((out / "results.json").read_text())["methods"]) >= {"maml", "scratch"}


def test_forgetting_with_the_global_option(tmp_path, capsys, fashion_mnist_root):
    out = tmp_path / "f"
    assert main(["--threads", "1", "forgetting", "--scenario", "two-task", "--strategies",
                 "naive", "--seeds", "1", "--root", str(fashion_mnist_root), "--steps", "2",
                 "--eval-every", "2", "--train-per-class", "8", "--val-per-class", "2",
                 "--test-per-class", "4", "--hidden", "8", "--batch-size", "8",
                 "--out", str(out), "--no-progress"]) == 0
    assert (out / "results.json").exists()


def test_vae_with_the_global_option(tmp_path, capsys, fashion_mnist_root):
    out = tmp_path / "v"
    assert main(["--threads", "1", "vae", "--model", "ae", "--data", "fashion-mnist",
                 "--root", str(fashion_mnist_root), "--latent", "2", "--train-examples", "200",
                 "--test-examples", "50", "--epochs", "1", "--hidden", "16",
                 "--out", str(out), "--no-progress"]) == 0
    assert (out / "results.json").exists()


@pytest.mark.slow
def test_predict_and_adapt_with_the_global_option(tmp_path, capsys, omniglot_root):
    """An image run (tiny Conv4 MAML on Omniglot), then predict and adapt with it."""
    cfg, run = tmp_path / "c.toml", tmp_path / "run"
    cfg.write_text(f'[family]\nname = "omniglot"\nroot = "{omniglot_root}"\nways = 2\n'
                   f'shots = 1\nqueries = 1\n[model]\nname = "conv4"\nchannels = 4\n'
                   f'[method]\nname = "maml"\ninner_lr = 0.4\n[train]\niterations = 1\n'
                   f'meta_batch = 1\n[eval]\ntasks = 2\nsteps = [0, 1]\n')
    assert main(["--threads", "1", "train", "--config", str(cfg), "--out", str(run),
                 "--no-progress"]) == 0
    from PIL import Image

    for part, n in (("support", 1), ("query", 1)):
        for c in ("a", "b"):
            (tmp_path / part / c).mkdir(parents=True)
            for i in range(n):
                value = 0 if c == "a" else 255
                Image.new("L", (28, 28), value).save(tmp_path / part / c / f"{i}.png")
    assert main(["--threads", "1", "predict", "--checkpoint", str(run), "--support",
                 str(tmp_path / "support"), "--query", str(tmp_path / "query")]) == 0
    assert main(["--threads", "1", "adapt", "--model", str(run), "--family", "omniglot",
                 "--root", str(omniglot_root), "--ways", "2", "--shots", "1", "--queries",
                 "1", "--tasks", "2", "--steps", "1", "--out", str(tmp_path / "a")]) == 0


@pytest.mark.parametrize("command", COMMANDS)
def test_every_subcommand_describes_itself_with_an_example(command):
    """``metaloop COMMAND --help``: a description in users' words (not a module docstring
    with reST markup) and at least one runnable example."""
    from metaloop.cli.main import build_parser

    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command").choices[command]
    assert sub.description and "``" not in sub.description, sub.description
    assert sub.epilog and "example" in sub.epilog, sub.epilog
    assert any(f"metaloop {g}{command} " in sub.epilog for g in ("", "--threads 1 ")), \
        sub.epilog


def test_a_reader_that_goes_away_ends_the_command_quietly():
    """``metaloop ... | head``: when stdout's reader closes the pipe, the command stops with
    SIGPIPE's status (141) and no traceback, as shell tools do."""
    p = subprocess.Popen([sys.executable, "-m", "metaloop", "compare", "--print-config"],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    p.stdout.close()                    # gone before the child's first write (torch import)
    err = p.stderr.read().decode()
    p.stderr.close()
    assert p.wait(timeout=120) == 141, err
    assert "Traceback" not in err and "BrokenPipeError" not in err, err


def test_commands_other_than_train_are_refused_under_torchrun(tmp_path, monkeypatch, capsys):
    """Under torchrun every process would run the whole command and write the same --out:
    anything but ``train`` is refused by name before it reads or writes."""
    monkeypatch.setenv("WORLD_SIZE", "2")
    out = tmp_path / "cmp"
    assert main(["compare", "--iterations", "1", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "started by torchrun (WORLD_SIZE=2)" in err and "only metaloop train" in err
    assert not out.exists()
    monkeypatch.setenv("WORLD_SIZE", "1")                        # one process: as always
    assert main(["compare", "--print-config"]) == 0


def test_sigterm_stops_every_command_as_ctrl_c_does(tmp_path, capsys, monkeypatch):
    """SIGTERM (a scheduler, kill) during a command other than train is turned into the
    KeyboardInterrupt that Ctrl-C gives: exit 130 with one line and nothing left in --out
    (it killed the process outright: exit 143, an empty --out folder)."""
    import signal

    from metaloop import build

    def term(*a, **k):
        # raise the real signal only when a handler is set: with the default, it would kill
        # the test process instead of failing the test
        assert signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL, "SIGTERM not handled"
        signal.raise_signal(signal.SIGTERM)
        raise AssertionError("SIGTERM did not stop the command")

    monkeypatch.setattr(build, "build_family", term)
    out = tmp_path / "o"
    before = signal.getsignal(signal.SIGTERM)
    assert main(["compare", "--methods", "maml", "--iterations", "2", "--meta-batch", "2",
                 "--tasks", "2", "--no-progress", "--out", str(out)]) == 130
    assert "interrupted" in capsys.readouterr().err and not out.exists()
    assert signal.getsignal(signal.SIGTERM) == before              # the handler is restored


@pytest.mark.parametrize("world", ["1", "2"])
def test_a_torchrun_rank_leaves_without_the_interpreters_teardown(tmp_path, world):
    """A torchrun rank whose command had returned went through the interpreter's teardown,
    where gloo's threads now and then aborted it ("terminate called without an active
    exception") and a late signal killed it: torchrun then called a finished run failed.
    python -m metaloop now leaves a rank at once with the command's status (an atexit
    handler, installed here by sitecustomize, shows whether the teardown ran)."""
    (tmp_path / "sitecustomize.py").write_text(
        "import atexit, sys\natexit.register(lambda: print('teardown ran', file=sys.stderr))\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        [str(tmp_path), os.environ.get("PYTHONPATH", "")]), "WORLD_SIZE": world,
        "RANK": "0", "LOCAL_RANK": "0"}
    r = subprocess.run([sys.executable, "-m", "metaloop", "eval", "--checkpoint",
                        str(tmp_path / "none")], capture_output=True, text=True, timeout=120,
                       env=env)
    assert r.returncode == 2
    if world == "2":          # refused (only train is distributed), and left at once
        assert "only metaloop train is distributed" in r.stderr
        assert "teardown ran" not in r.stderr
    else:
        assert "teardown ran" in r.stderr
