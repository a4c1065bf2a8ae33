"""Under torchrun, a refusal that every rank meets is printed by one rank (local rank 0, or
rank 0) while the others stay quiet. torchrun stops every worker as soon as one exits with an
error, so a quiet rank that exited first used to stop the printing rank before it printed:
the user read no message at all. The quiet ranks now wait (bounded) until torchrun stops
them, after the printing rank has printed and exited."""

import os
import subprocess
import sys
import textwrap
import time

import pytest

from metaloop.train import distributed

# local rank 0 starts late, as on a loaded machine: before, rank 1's refusal got it stopped
SLOW_RANK0 = textwrap.dedent("""
    import os, sys, time
    from metaloop.cli.main import main
    if os.environ.get("LOCAL_RANK") == "0":
        time.sleep(2)
    sys.exit(main(sys.argv[1:]))
""")


def _torchrun(tmp_path, *args: str) -> subprocess.CompletedProcess:
    script = tmp_path / "slow0.py"
    script.write_text(SLOW_RANK0)
    env = {k: v for k, v in os.environ.items()
           if k not in ("WORLD_SIZE", "RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT",
                        "TORCHELASTIC_RUN_ID")}
    return subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone",
                           "--nproc_per_node", "2", str(script), "--threads", "1", *args],
                          env={**env, "OMP_NUM_THREADS": "1"}, cwd=tmp_path,
                          capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("args, said", [
    (("eval", "--checkpoint", "nowhere"), "metaloop eval: error: started by torchrun"),
    (("train", "--config", "nowhere.toml", "--out", "run", "--dist-timeout", "-1"),
     "metaloop train: error: --dist-timeout must be a positive number of seconds"),
])
def test_a_refusal_under_torchrun_is_printed_once_even_when_rank_0_is_slow(tmp_path, args,
                                                                            said):
    done = _torchrun(tmp_path, *args)
    assert done.returncode != 0
    assert done.stderr.count(said) == 1, done.stderr
    assert "interrupted" not in done.stderr


def test_a_quiet_rank_waits_only_under_torchrun_and_only_after_a_quiet_refusal(monkeypatch):
    monkeypatch.setattr(distributed, "_left_to_another", True)
    monkeypatch.delenv("TORCHELASTIC_RUN_ID", raising=False)
    start = time.monotonic()
    distributed.let_another_print(2, seconds=30)      # not under torchrun: at once
    assert time.monotonic() - start < 5
    monkeypatch.setenv("TORCHELASTIC_RUN_ID", "x")
    start = time.monotonic()
    distributed.let_another_print(2, seconds=0.5)
    assert time.monotonic() - start >= 0.5
    start = time.monotonic()
    distributed.let_another_print(0, seconds=30)      # a success, or 130: at once
    distributed.let_another_print(130, seconds=30)
    monkeypatch.setattr(distributed, "_left_to_another", False)
    distributed.let_another_print(2, seconds=30)      # this rank printed its own
    assert time.monotonic() - start < 5


def test_a_sigterm_while_a_rank_reports_a_dead_peer_leaves_status_1(monkeypatch, tmp_path,
                                                                   capsys):
    """torchrun SIGTERMs the surviving workers as soon as one dies: when that signal reached
    rank 0 while it printed why it stopped, it exited 130 ("interrupted") instead of 1."""
    import signal

    from metaloop.cli import train as cli_train
    from metaloop.cli.main import main

    def dead_peer(args, held):
        raise distributed.DistributedError("rank 0 of 2: all_reduce of the meta-gradient at "
                                           "iteration 5 failed")

    said = cli_train._error

    def signalled_error(e):
        os.kill(os.getpid(), signal.SIGTERM)             # torchrun's, as the line is printed
        said(e)

    monkeypatch.setattr(distributed, "init", lambda device, timeout_s: False)
    monkeypatch.setattr(cli_train, "_run", dead_peer)
    monkeypatch.setattr(cli_train, "_error", signalled_error)
    assert main(["train", "--config", "c.toml", "--out", str(tmp_path / "r")]) == 1
    err = capsys.readouterr().err
    assert "all_reduce of the meta-gradient at iteration 5 failed" in err
    assert "interrupted" not in err
