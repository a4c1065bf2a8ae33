"""``metaloop train`` on 2 gloo ranks: a message every rank meets is printed once (rank 0), one
that a single rank meets is printed by that rank, named; a run that fails before its first
checkpoint leaves no run directory behind (one that existed, or holds a checkpoint, stays)."""

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from metaloop.cli import train as cli_train
from metaloop.cli.main import main
from metaloop.train import distributed
from metaloop.train.checkpoint import latest_checkpoint, load_checkpoint

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE))
from _cli import write_config  # noqa: E402
from _ranks import run_ranks  # noqa: E402

# Runs ``metaloop train ARGS`` in one rank. MODE: "plain"; "rank1" (rank 1 alone cannot build
# its learner, as when its node lacks the data); "warn" (every rank warns alike, rank 1 also
# warns alone); "die" (rank 1 dies before the first collective, as a crashed node).
WORKER = textwrap.dedent("""
    import os, sys, warnings
    from metaloop import build
    from metaloop.cli.main import main

    mode, rank = sys.argv[1], int(os.environ["RANK"])
    real = build.build_learner

    def patched(*args, **kwargs):
        if mode == "rank1" and rank == 1:
            raise ValueError("family.root /data/x does not exist on this node")
        if mode == "die" and rank == 1:
            os._exit(9)
        if mode == "warn":
            warnings.warn("every rank warns this")
            if rank == 1:
                warnings.warn("rank 1 alone warns this")
        return real(*args, **kwargs)

    build.build_learner = patched
    sys.exit(main(["train", "--no-progress", "--dist-timeout", "60", *sys.argv[2:]]))
""")


def _two_ranks(mode: str, *args: str, worker: str = WORKER) -> list[subprocess.CompletedProcess]:
    """Both ranks started by hand (as on two nodes), so each one's output is its own."""
    return run_ranks([["-c", worker, mode, *args]] * 2, env={"PYTHONWARNINGS": "default"})


def _config(tmp_path, meta_batch=4):
    return str(write_config(tmp_path / "c.toml", iterations=3, meta_batch=meta_batch,
                            checkpoint_every=2, seed=1))


@pytest.mark.slow               # five 2-rank launches: 70 to 100 s on 2 cores
def test_messages_once_and_a_failed_start_leaves_no_run_directory(tmp_path):
    # bad input every rank meets: rank 0 says it, once; nothing is created
    run = tmp_path / "small"
    r0, r1 = _two_ranks("plain", "--config", _config(tmp_path, meta_batch=1), "--out", str(run))
    assert (r0.returncode, r1.returncode) == (2, 2), r0.stderr + r1.stderr
    assert r0.stderr.count("error:") == 1 and "meta_batch=1 is smaller than the 2 ranks" \
        in r0.stderr, r0.stderr
    assert r1.stderr == "" and r1.stdout == "", r1.stderr
    assert not run.exists()

    # bad input rank 1 alone meets: rank 1 names it and exits 2; rank 0 stops (exit 1) naming
    # rank 1's error, and removes the run directory it had created
    run = tmp_path / "one_rank"
    r0, r1 = _two_ranks("rank1", "--config", _config(tmp_path), "--out", str(run))
    assert (r0.returncode, r1.returncode) == (1, 2), r0.stderr + r1.stderr
    assert r1.stderr == ("metaloop train: error: rank 1 of 2: family.root /data/x does not "
                         "exist on this node\n"), r1.stderr
    assert r0.stderr.count("error:") == 1, r0.stderr
    assert "1 of the 2 ranks failed to start (rank 1 of 2: ValueError: family.root /data/x" \
        in r0.stderr, r0.stderr
    assert "Traceback" not in r0.stderr + r1.stderr
    assert not run.exists()

    # a rank that dies before the first collective: rank 0 names the failure, leaves no folder
    run = tmp_path / "dead"
    r0, _ = _two_ranks("die", "--config", _config(tmp_path), "--out", str(run))
    assert r0.returncode == 1, r0.stderr
    assert "rank 0 of 2: start-up check (did every rank start?) failed" in r0.stderr, r0.stderr
    assert not run.exists()

    # warnings: one every rank gives is shown by rank 0 alone; rank 1's own by rank 1, named;
    # the summary once. The same --out then works again (nothing partial was left).
    run = tmp_path / "warned"
    r0, r1 = _two_ranks("warn", "--config", _config(tmp_path), "--out", str(run))
    assert (r0.returncode, r1.returncode) == (0, 0), r0.stderr + r1.stderr
    assert r0.stderr.count("every rank warns this") == 1 and "alone" not in r0.stderr
    assert "every rank warns this" not in r1.stderr, r1.stderr
    assert r1.stderr.count("rank 1 of 2: rank 1 alone warns this") == 1, r1.stderr
    assert r0.stdout.startswith("trained maml for 3 iterations on 2 ranks") and r1.stdout == ""
    assert latest_checkpoint(run).name == "ckpt-00000003"

    # a failed resume (rank 0's verdict, sent to rank 1) is said once; the run is untouched
    r0, r1 = _two_ranks("plain", "--resume", str(run), "--seed", "3")
    assert (r0.returncode, r1.returncode) == (2, 2), r0.stderr + r1.stderr
    assert r0.stderr.count("a resumed run keeps its seed") == 1 and r1.stderr == "", r1.stderr
    assert latest_checkpoint(run).name == "ckpt-00000003"


def test_a_run_that_fails_before_its_first_checkpoint_removes_its_directory(tmp_path,
                                                                              monkeypatch,
                                                                              capsys):
    cfg = _config(tmp_path)

    def fails(cfg, out, **kw):
        (Path(out) / "metrics.jsonl").write_text('{"iteration": 1}\n')   # a partial run
        raise RuntimeError("the device went away")

    monkeypatch.setattr(cli_train.recipe, "train_config", fails)
    run = tmp_path / "new"
    with pytest.raises(RuntimeError, match="went away"):
        main(["train", "--config", cfg, "--out", str(run), "--no-progress"])
    assert not run.exists()
    old = tmp_path / "old"                    # a folder that existed before is never removed
    old.mkdir()
    with pytest.raises(RuntimeError, match="went away"):
        main(["train", "--config", cfg, "--out", str(old), "--no-progress"])
    assert (old / "metrics.jsonl").exists()

    def interrupted(cfg, out, **kw):
        raise KeyboardInterrupt

    monkeypatch.setattr(cli_train.recipe, "train_config", interrupted)
    assert main(["train", "--config", cfg, "--out", str(run), "--no-progress"]) == 130
    assert not run.exists()
    assert capsys.readouterr().err.endswith(
        "metaloop train: interrupted: stopped; no checkpoint written\n")


def test_a_non_finite_stop_keeps_its_directory_and_metrics(tmp_path, monkeypatch, capsys):
    """A diverged run is a result, not bad input: its metrics.jsonl shows where the loss went,
    so its directory stays even without a checkpoint (a new run there starts afresh)."""
    cfg = _config(tmp_path)

    def diverges(cfg, out, **kw):
        (Path(out) / "metrics.jsonl").write_text('{"iteration": 1, "loss": 1e30}\n')
        raise cli_train.NonFiniteLossError("non-finite loss at iteration 2")

    monkeypatch.setattr(cli_train.recipe, "train_config", diverges)
    run = tmp_path / "diverged"
    assert main(["train", "--config", cfg, "--out", str(run), "--no-progress"]) == 1
    assert "non-finite loss at iteration 2" in capsys.readouterr().err
    assert (run / "metrics.jsonl").read_text().startswith('{"iteration": 1')


def test_a_non_finite_stop_at_the_first_iteration_leaves_no_empty_directory(
        tmp_path, monkeypatch, capsys):
    """QA repro: a loss that is NaN at iteration 1 left an empty run directory (no
    checkpoint, no metrics line to show), though a run stopped before its first checkpoint
    leaves none; a folder that existed before is kept."""
    cfg = _config(tmp_path)

    def diverges_at_once(cfg, out, **kw):
        raise cli_train.NonFiniteLossError("non-finite loss at iteration 1")

    monkeypatch.setattr(cli_train.recipe, "train_config", diverges_at_once)
    run = tmp_path / "diverged"
    assert main(["train", "--config", cfg, "--out", str(run), "--no-progress"]) == 1
    assert "non-finite loss at iteration 1" in capsys.readouterr().err
    assert not run.exists()
    run.mkdir()                                            # the user's own folder: kept
    assert main(["train", "--config", cfg, "--out", str(run), "--no-progress"]) == 1
    assert run.is_dir()


def test_a_folder_with_a_checkpoint_is_never_removed(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "ckpt-00000002").mkdir()          # a checkpoint whose LATEST was not written yet
    assert not cli_train._discard(run) and run.exists()
    (run / "ckpt-00000002").rmdir()
    (run / "LATEST").write_text("not a checkpoint name\n")   # damaged: keep, do not guess
    assert not cli_train._discard(run) and run.exists()
    (run / "LATEST").unlink()
    (run / "metrics.jsonl").write_text("")
    assert cli_train._discard(run) and not run.exists()


def test_an_empty_run_directory_does_not_block_a_new_run(tmp_path):
    """(An empty folder left by an older version is accepted as --out.)"""
    run = tmp_path / "run"
    run.mkdir()
    cfg = write_config(tmp_path / "c.toml", iterations=2, meta_batch=2, checkpoint_every=2,
                       seed=1)
    assert main(["train", "--config", str(cfg), "--out", str(run), "--no-progress"]) == 0
    assert latest_checkpoint(run).name == "ckpt-00000002"


def test_a_usage_error_is_printed_once_per_node(monkeypatch, capsys):
    """argparse's own errors (a misspelt flag) came from every rank of a node."""
    for local_rank, printed in (("0", True), ("1", False)):
        monkeypatch.setenv("LOCAL_RANK", local_rank)
        with pytest.raises(SystemExit) as e:
            main(["train", "--confg", "c.toml"])
        assert e.value.code == 2
        err = capsys.readouterr().err
        assert ("unrecognized arguments: --confg" in err) == printed, err


@pytest.mark.parametrize("resume", [False, True])
def test_a_failed_start_of_a_resume_says_its_checkpoints_are_kept(monkeypatch, resume):
    """QA repro: SIGTERM to rank 1 while a --resume started made rank 0 say `No checkpoint
    was written`, though the run's checkpoints are there and kept as they were."""
    monkeypatch.setattr(distributed, "is_active", lambda: True)
    monkeypatch.setattr(distributed, "rank_world", lambda: (0, 2))

    def gather(box, mine):                    # rank 1 was interrupted while it started
        box[:] = [mine, ("KeyboardInterrupt: stopped by SIGTERM", [])]

    monkeypatch.setattr(distributed.dist, "all_gather_object", gather)
    kept = "The run's checkpoints are kept as they were"
    distributed.begin_startup(resume=resume)
    with pytest.raises(distributed.StartupError) as e:
        distributed.agree_startup()
    assert "1 of the 2 ranks failed to start (rank 1 of 2: KeyboardInterrupt" in str(e.value)
    assert (kept in str(e.value)) == resume
    assert ("No checkpoint was written" in str(e.value)) == (not resume)

    def dead(box, mine):                      # rank 1 died while it started
        raise RuntimeError("Connection reset by peer")

    monkeypatch.setattr(distributed.dist, "all_gather_object", dead)
    distributed.begin_startup(resume=resume)
    with pytest.raises(distributed.DistributedError) as e:
        distributed.agree_startup()
    assert "start-up check (did every rank start?) failed" in str(e.value)
    assert (kept in str(e.value)) == resume and "--resume" not in str(e.value)
    assert not distributed.startup_open()


def test_a_rank_stopped_by_ctrl_c_while_it_started_is_named_without_an_empty_text(
        monkeypatch):
    """QA repro: Ctrl-C at rank 1 while it started gave rank 0 `(rank 1 of 2:
    KeyboardInterrupt: )`."""
    monkeypatch.setattr(distributed, "is_active", lambda: True)
    monkeypatch.setattr(distributed, "rank_world", lambda: (1, 2))
    sent = []

    def gather(box, mine):
        sent.append(mine)
        box[:] = [(None, []), mine]

    monkeypatch.setattr(distributed.dist, "all_gather_object", gather)
    distributed.begin_startup()
    distributed.agree_startup(KeyboardInterrupt())
    assert sent[0][0] == "KeyboardInterrupt"


# Runs ``metaloop train ARGS`` in one rank; SPEC "RANK:SIGNAL:WHEN" makes rank RANK ("all":
# every rank) send itself SIGNAL at WHEN: "start" (as it builds its learner), "mid" (after the
# all-reduce of iteration 2, so the others learn of it at the next one), "final" (before the
# barrier of the final checkpoint).
SIGNALLED = textwrap.dedent("""
    import os, signal, sys
    from metaloop import build
    from metaloop.cli.main import main
    from metaloop.train import distributed

    who, sig, when = sys.argv[1].split(":")
    mine = who == "all" or int(who) == int(os.environ["RANK"])
    reduce_step, barrier = distributed.reduce_step, distributed.barrier

    def reduce_then_signal(*args, **kwargs):
        out = reduce_step(*args, **kwargs)
        if mine and when == "mid" and args[4] == "iteration 2":
            os.kill(os.getpid(), getattr(signal, sig))
        return out

    def signal_then_barrier(what):
        if mine and when == "final" and what == "the final checkpoint":
            os.kill(os.getpid(), getattr(signal, sig))
        return barrier(what)

    def signal_then_build(*args, **kwargs):
        if mine and when == "start":
            os.kill(os.getpid(), getattr(signal, sig))
        return build_learner(*args, **kwargs)

    build_learner = build.build_learner
    build.build_learner = signal_then_build
    distributed.reduce_step, distributed.barrier = reduce_then_signal, signal_then_barrier
    sys.exit(main(["train", "--no-progress", "--dist-timeout", "60", *sys.argv[2:]]))
""")


@pytest.mark.slow               # six 2-rank launches: 25 to 70 s on 2 cores
def test_a_signal_to_one_rank_stops_all_alike_and_resumes_exactly(tmp_path):
    cfg = write_config(tmp_path / "c.toml", iterations=5, meta_batch=4, checkpoint_every=2,
                       seed=1)
    ref = tmp_path / "ref"
    r0, r1 = _two_ranks("plain", "--config", str(cfg), "--out", str(ref))
    assert (r0.returncode, r1.returncode) == (0, 0), r0.stderr + r1.stderr

    # SIGTERM to rank 1 alone: both stop after iteration 3, rank 0 writes the checkpoint and
    # says so once; the resume on 2 ranks ends bit for bit as the uninterrupted run
    run = tmp_path / "stopped"
    r0, r1 = _two_ranks("1:SIGTERM:mid", "--config", str(cfg), "--out", str(run),
                        worker=SIGNALLED)
    assert (r0.returncode, r1.returncode) == (130, 130), r0.stderr + r1.stderr
    assert r0.stderr == ("metaloop train: interrupted: stopped by another rank after iteration "
                         f"3; checkpoint in {run}\n"), r0.stderr
    assert r1.stderr == "" and latest_checkpoint(run).name == "ckpt-00000003"
    # SIGTERM to rank 1 as the resume starts: rank 1 says so, named; rank 0 names rank 1 and
    # says that the run's checkpoints are kept (QA repro: it said "No checkpoint was written")
    kept = sorted(p.name for p in run.iterdir())
    r0, r1 = _two_ranks("1:SIGTERM:start", "--resume", str(run), worker=SIGNALLED)
    assert (r0.returncode, r1.returncode) == (1, 130), r0.stderr + r1.stderr
    assert r1.stderr == ("metaloop train: interrupted: rank 1 of 2: stopped by SIGTERM; the "
                         f"checkpoint in {run} is kept\n"), r1.stderr
    assert r0.stderr == ("metaloop train: error: stopped before training, as 1 of the 2 ranks "
                         "failed to start (rank 1 of 2: KeyboardInterrupt: stopped by SIGTERM). "
                         "The run's checkpoints are kept as they were\n"), r0.stderr
    assert sorted(p.name for p in run.iterdir()) == kept
    r0, r1 = _two_ranks("plain", "--resume", str(run))
    assert (r0.returncode, r1.returncode) == (0, 0), r0.stderr + r1.stderr
    want, _ = load_checkpoint(ref)
    got, _ = load_checkpoint(run)
    assert want.keys() == got.keys()
    assert all(torch.equal(got[k], want[k]) for k in want)
    lines = [{k: v for k, v in json.loads(x).items() if k != "time"}
             for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert lines == [{k: v for k, v in json.loads(x).items() if k != "time"}
                     for x in (ref / "metrics.jsonl").read_text().splitlines()]

    # a signal during the final checkpoint (rank 1 alone, or every rank): the run completes,
    # every rank exits 0 and rank 0 prints the summary
    for spec in ("1:SIGINT:final", "all:SIGTERM:final"):
        run = tmp_path / spec.replace(":", "_")
        r0, r1 = _two_ranks(spec, "--config", str(cfg), "--out", str(run), worker=SIGNALLED)
        assert (r0.returncode, r1.returncode) == (0, 0), spec + r0.stderr + r1.stderr
        assert r0.stdout.startswith("trained maml for 5 iterations on 2 ranks"), r0.stdout
        assert r0.stderr == r1.stderr == "", r0.stderr + r1.stderr
        assert latest_checkpoint(run).name == "ckpt-00000005"
