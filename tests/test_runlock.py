"""One writer per run folder (metaloop.runlock): a second process is refused by name and
changes nothing; a killed holder leaves no stale lock; one process nests without deadlock."""

from __future__ import annotations

import errno
import fcntl
import hashlib
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

import metaloop as ml
from metaloop import runlock
from metaloop.cli.main import main
from metaloop.recipes.report import output_dir
from metaloop.train.checkpoint import latest_checkpoint, load_checkpoint

sys.path.insert(0, str(Path(__file__).parent / "train"))
from _cli import write_config  # noqa: E402

ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "error"}
HOLD = ("import sys\nfrom metaloop import runlock\nrunlock.acquire(sys.argv[1])\n"
        "print('held', flush=True)\nsys.stdin.read()\n")


class Holder:
    """Another process that holds the lock of ``folder`` until it is stopped."""

    def __init__(self, folder: Path):
        self.proc = subprocess.Popen([sys.executable, "-c", HOLD, str(folder)], env=ENV,
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True)
        line = self.proc.stdout.readline()
        assert line == "held\n", self.proc.communicate()

    def __enter__(self):
        return self.proc

    def __exit__(self, *exc):
        self.proc.kill()
        self.proc.communicate()


def _snapshot(folder: Path) -> dict:
    """Every file's bytes and mtime, and every folder's mtime (an entry made or removed)."""
    snap = {".": folder.stat().st_mtime_ns}
    for p in sorted(folder.rglob("*")):
        rel = str(p.relative_to(folder))
        snap[rel] = (p.stat().st_mtime_ns, None if p.is_dir()
                     else hashlib.sha256(p.read_bytes()).hexdigest())
    return snap


def _held_elsewhere(folder: Path) -> bool:
    """Whether the folder's lock is held (flock conflicts between two opens of the file, in
    one process too)."""
    fd = os.open(folder / runlock.LOCK_FILE, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
    return False


def _learner():
    torch.manual_seed(0)
    model = ml.models.MLP(in_dim=1, hidden=(8,), out_dim=1)
    return ml.meta.MAML(model, inner_lr=0.01, inner_steps=1, first_order=True, loss="mse")


def _train(out, **kw):
    return ml.train(_learner(), ml.tasks.Sinusoid(shots=5, queries=5), iterations=4,
                    meta_batch=2, checkpoint_every=2, out_dir=out, progress=False, **kw)


def _cli(*argv) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "metaloop", "--threads", "1", *argv],
                          env=ENV, capture_output=True, text=True, timeout=120)


def test_a_second_train_on_a_held_folder_exits_2_and_changes_no_file(tmp_path):
    cfg = write_config(tmp_path / "c.toml", iterations=6, meta_batch=2, checkpoint_every=3,
                       seed=0)
    run = tmp_path / "runs" / "x"
    assert main(["train", "--config", str(cfg), "--out", str(run), "--no-progress"]) == 0
    assert not (run / runlock.LOCK_FILE).exists()        # let go: the file is removed
    with Holder(run) as holder:
        before = _snapshot(run)
        for argv in (["train", "--resume", str(run)],
                     ["train", "--config", str(cfg), "--out", str(run)]):
            r = _cli(*argv, "--no-progress")
            assert r.returncode == 2, r.stderr
            assert r.stderr == (
                f"metaloop train: error: run folder {run} is in use by another metaloop "
                f"process (pid {holder.pid} on host {socket.gethostname()}, `python -c {run}`); "
                f"wait for it to end or stop it (its lock file: {run / runlock.LOCK_FILE})\n")
            assert r.stdout == ""
            assert _snapshot(run) == before


def test_after_the_holder_is_killed_resume_works_and_leaves_no_lock_file(tmp_path):
    cfg = write_config(tmp_path / "c.toml", iterations=600, meta_batch=2,
                       checkpoint_every=5, seed=0)
    run = tmp_path / "run"
    proc = subprocess.Popen([sys.executable, "-m", "metaloop", "--threads", "1", "train",
                             "--config", str(cfg), "--out", str(run), "--no-progress"],
                            env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 120
        while latest_checkpoint(run) is None:
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "no checkpoint"
            time.sleep(0.01)
        assert _held_elsewhere(run)
        with pytest.raises(runlock.RunInUseError, match=f"pid {proc.pid} on host"):
            _train(run, resume=True)
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
    finally:
        proc.kill()
        proc.communicate()
    assert proc.returncode == -signal.SIGKILL, "the run ended before the kill"
    assert (run / runlock.LOCK_FILE).exists()       # its file stays, its lock does not
    assert not _held_elsewhere(run)
    assert load_checkpoint(run)[1]["iteration"] < 600
    assert main(["train", "--resume", str(run), "--no-progress"]) == 0
    assert load_checkpoint(run)[1]["iteration"] == 600
    assert not (run / runlock.LOCK_FILE).exists()


def test_ml_train_on_a_folder_another_process_holds_raises_the_named_error(tmp_path):
    run = tmp_path / "run"
    _train(run)
    with Holder(run) as holder:
        before = _snapshot(run)
        with pytest.raises(runlock.RunInUseError) as e:
            _train(run, resume=True)
        assert isinstance(e.value, ValueError)
        assert str(e.value).startswith(f"run folder {run} is in use by another metaloop "
                                       f"process (pid {holder.pid} on host ")
        with pytest.raises(runlock.RunInUseError):
            _train(run)                                     # a new run there: the same
        assert _snapshot(run) == before


def test_one_process_nests_its_writers_without_deadlock_and_a_nested_folder_is_its_own(
        tmp_path):
    out = tmp_path / "compare"
    with output_dir(out):                        # as metaloop compare holds its --out
        with runlock.hold(out):
            _train(out / "direct")
        assert _held_elsewhere(out)              # the inner release kept the outer lock
        inner = out / "runs" / "maml_0"
        with runlock.hold(inner):
            assert _held_elsewhere(inner)
            assert _train(inner)["iteration"] == 4       # ml.train inside its own lock
            assert _held_elsewhere(inner) and _held_elsewhere(out)
        assert not (inner / runlock.LOCK_FILE).exists()
        assert _held_elsewhere(out)
    assert not (out / runlock.LOCK_FILE).exists()
    assert latest_checkpoint(inner).name == "ckpt-00000004"


def test_two_runs_in_two_folders_run_at_once(tmp_path):
    cfg = write_config(tmp_path / "c.toml", iterations=40, meta_batch=2, checkpoint_every=20,
                       seed=0)
    procs = [subprocess.Popen([sys.executable, "-m", "metaloop", "--threads", "1", "train",
                               "--config", str(cfg), "--out", str(tmp_path / name),
                               "--no-progress"], env=ENV, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for name in ("a", "b")]
    for p in procs:
        _, err = p.communicate(timeout=120)
        assert p.returncode == 0, err
    assert [load_checkpoint(tmp_path / n)[1]["iteration"] for n in "ab"] == [40, 40]


def test_a_failed_start_leaves_no_folder_and_no_lock(tmp_path, capsys):
    run = tmp_path / "new" / "run"
    assert main(["train", "--resume", str(run)]) == 2          # the lock made the folders
    assert "no checkpoint in" in capsys.readouterr().err
    assert not (tmp_path / "new").exists()
    assert main(["train", "--config", str(tmp_path / "none.toml"), "--out", str(run)]) == 2
    assert not (tmp_path / "new").exists()
    with pytest.raises(FileNotFoundError):
        _train(run, resume=True)                 # nothing to resume: nothing left
    assert not (tmp_path / "new").exists()
    with pytest.raises(ValueError, match="iterations"):
        ml.train(_learner(), ml.tasks.Sinusoid(shots=5, queries=5), iterations=0,
                 meta_batch=2, out_dir=run)
    assert not (tmp_path / "new").exists()


@pytest.mark.parametrize("argv", [
    ["compare", "--methods", "maml", "--iterations", "2"],
    ["vae", "--epochs", "1"],
    ["train", "--config", "{cfg}"],
])
def test_every_writer_command_refuses_a_held_folder_by_name(tmp_path, capsys, argv):
    cfg = write_config(tmp_path / "c.toml", iterations=2, meta_batch=2, checkpoint_every=2,
                       seed=0)
    out = tmp_path / "out"
    out.mkdir()
    with Holder(out):
        before = _snapshot(out)
        argv = [a.format(cfg=cfg) for a in argv]
        assert main([*argv, "--out", str(out), "--no-progress"]) == 2
        err = capsys.readouterr().err
        assert err.startswith(f"metaloop {argv[0]}: error: run folder {out} is in use by "
                              f"another metaloop process (pid "), err
        assert err.count("\n") == 1
        assert _snapshot(out) == before


@pytest.mark.parametrize("argv", [
    ["compare", "--config", "{missing}.toml"],
    ["eval", "--checkpoint", "{missing}"],
    ["predict", "--checkpoint", "{missing}", "--support", "{missing}", "--query", "{missing}"],
    ["forgetting", "--scenario", "split-fmnist-task", "--data", "{missing}.npz"],
    ["adapt", "--model", "{missing}", "--family", "folder", "--data", "{missing}"],
])
def test_a_held_folder_is_named_before_the_command_reads_anything(tmp_path, capsys, argv):
    """QA repro: compare, eval --out, predict --out and forgetting read their config,
    checkpoint or data first, so a second run on a held folder was told of its missing input
    (and would have loaded a model or data set before being refused)."""
    out = tmp_path / "out"
    out.mkdir()
    with Holder(out):
        before = _snapshot(out)
        argv = [a.format(missing=tmp_path / "missing") for a in argv]
        assert main([*argv, "--out", str(out), "--no-progress"]) == 2
        err = capsys.readouterr().err
        assert err.startswith(f"metaloop {argv[0]}: error: run folder {out} is in use by "
                              f"another metaloop process (pid "), err
        assert _snapshot(out) == before


def test_a_file_system_without_locks_runs_unlocked_with_a_warning(tmp_path, monkeypatch):
    def flock(fd, op):
        raise OSError(errno.ENOLCK, "No locks available")
    monkeypatch.setattr(runlock.fcntl, "flock", flock)
    with pytest.warns(runlock.RunLockWarning, match="has no locks"):
        with runlock.hold(tmp_path / "run"):
            pass
    assert not (tmp_path / "run" / runlock.LOCK_FILE).exists()


class _FakeMsvcrt:
    """Windows' msvcrt.locking, played by flock: a held region refuses with EACCES."""
    LK_UNLCK, LK_NBLCK = 0, 2

    def __init__(self):
        self.calls = []

    def locking(self, fd, mode, nbytes):
        self.calls.append((mode, os.lseek(fd, 0, os.SEEK_CUR), nbytes))
        if mode == self.LK_UNLCK:
            fcntl.flock(fd, fcntl.LOCK_UN)
            return
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise OSError(errno.EACCES, "Permission denied") from None


def test_windows_locks_a_byte_past_the_holder_line(tmp_path, monkeypatch):
    fake = _FakeMsvcrt()
    monkeypatch.setattr(runlock, "fcntl", None)
    monkeypatch.setattr(runlock, "msvcrt", fake)
    run = tmp_path / "run"
    with runlock.hold(run):
        assert runlock.holder(run)["pid"] == os.getpid()         # readable while locked
        assert _held_elsewhere(run)
    assert fake.calls == [(fake.LK_NBLCK, runlock._WINDOWS_BYTE, 1),
                          (fake.LK_UNLCK, runlock._WINDOWS_BYTE, 1)]
    assert not (run / runlock.LOCK_FILE).exists()
    # another process's lock (a second open of the file, as flock sees one)
    (run / runlock.LOCK_FILE).write_text("")
    fd = os.open(run / runlock.LOCK_FILE, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        with pytest.raises(runlock.RunInUseError, match="its pid is not known yet"):
            runlock.acquire(run)
    finally:
        os.close(fd)


def test_under_torchrun_a_held_folder_stops_every_rank_and_rank_0_says_it_once(tmp_path):
    cfg = write_config(tmp_path / "c.toml", iterations=2, meta_batch=2, checkpoint_every=2,
                       seed=0)
    out = tmp_path / "out"
    out.mkdir()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = str(s.getsockname()[1])
    base = {k: v for k, v in ENV.items()
            if k not in ("WORLD_SIZE", "RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")}
    with Holder(out) as holder:
        before = _snapshot(out)
        procs = [subprocess.Popen(
            [sys.executable, "-m", "metaloop", "train", "--config", str(cfg), "--out",
             str(out), "--no-progress", "--dist-timeout", "60"],
            env={**base, "RANK": str(r), "LOCAL_RANK": str(r), "WORLD_SIZE": "2",
                 "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": port},
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for r in (0, 1)]
        done = [p.communicate(timeout=120) for p in procs]
        assert [p.returncode for p in procs] == [2, 2], done
        assert done[0][1].startswith(f"metaloop train: error: run folder {out} is in use by "
                                     f"another metaloop process (pid {holder.pid} on host ")
        assert done[0][1].count("\n") == 1
        assert done[1][1] == ""
        assert _snapshot(out) == before


FORK = ("import os, sys, time\nfrom metaloop import runlock\nrunlock.acquire(sys.argv[1])\n"
        "child = os.fork()\nif child == 0:\n    null = os.open(os.devnull, os.O_WRONLY)\n"
        "    os.dup2(null, 1)\n    os.dup2(null, 2)\n    time.sleep(60)\n    os._exit(0)\n"
        "print(child, flush=True)\nos._exit(0)\n")


@pytest.mark.skipif(not hasattr(os, "fork"), reason="POSIX fork")
def test_a_forked_child_that_outlives_its_parent_leaves_the_folder_free(tmp_path):
    run = tmp_path / "run"
    parent = subprocess.run([sys.executable, "-c", FORK, str(run)], env=ENV,
                            capture_output=True, text=True, timeout=120)
    assert parent.returncode == 0, parent.stderr
    child = int(parent.stdout)            # still running: its parent ended without release
    try:
        os.kill(child, 0)
        assert not _held_elsewhere(run)
        with runlock.hold(run):
            assert runlock.holder(run)["pid"] == os.getpid()
    finally:
        os.kill(child, signal.SIGKILL)


def test_another_thread_of_the_process_is_refused_as_another_process_is(tmp_path):
    import threading

    run = tmp_path / "run"
    _train(run)
    errors = []

    def second():
        try:
            _train(run, resume=True)
        except Exception as e:           # noqa: BLE001 (checked below)
            errors.append(e)

    with runlock.hold(run):
        before = _snapshot(run)
        t = threading.Thread(target=second)
        t.start()
        t.join(timeout=120)
        with runlock.hold(run):          # the holding thread itself nests
            pass
        assert _held_elsewhere(run)
        assert _snapshot(run) == before
    assert len(errors) == 1 and isinstance(errors[0], runlock.RunInUseError), errors
    assert str(errors[0]).startswith(f"run folder {run} is in use by another thread of this "
                                     f"process (pid {os.getpid()})")
    assert not (run / runlock.LOCK_FILE).exists()


RANK = """
import sys
import torch
import torch.distributed as dist
import metaloop as ml
from metaloop.train import distributed
distributed.init("cpu", timeout_s=60)
torch.manual_seed(0)
model = ml.models.MLP(in_dim=1, hidden=(8,), out_dim=1)
learner = ml.meta.MAML(model, inner_lr=0.01, inner_steps=1, first_order=True, loss="mse")
try:
    ml.train(learner, ml.tasks.Sinusoid(shots=5, queries=5), iterations=2, meta_batch=2,
             out_dir=sys.argv[1], resume=True, progress=False)
except ml.RunInUseError as e:
    print("refused:", str(e).split(" (")[0], flush=True)
dist.destroy_process_group()
"""


def test_ml_train_under_torchrun_on_a_held_folder_raises_the_named_error_on_every_rank(
        tmp_path):
    run = tmp_path / "run"
    _train(run)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = str(s.getsockname()[1])
    base = {k: v for k, v in ENV.items()
            if k not in ("WORLD_SIZE", "RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")}
    with Holder(run):
        before = _snapshot(run)
        procs = [subprocess.Popen(
            [sys.executable, "-c", RANK, str(run)],
            env={**base, "RANK": str(r), "LOCAL_RANK": str(r), "WORLD_SIZE": "2",
                 "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": port},
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for r in (0, 1)]
        try:
            done = [p.communicate(timeout=90) for p in procs]
        finally:
            for p in procs:
                p.kill()
        assert [p.returncode for p in procs] == [0, 0], done
        assert [out for out, _ in done] == [f"refused: run folder {run} is in use by another "
                                            f"metaloop process\n"] * 2, done
        assert _snapshot(run) == before


def test_an_interpreter_without_argv_holds_a_folder_naming_python(tmp_path, monkeypatch):
    monkeypatch.delattr(sys, "argv")            # an embedded interpreter sets none
    with runlock.hold(tmp_path / "run"):
        assert runlock.holder(tmp_path / "run")["command"] == "python"


def test_a_folder_made_again_after_another_start_removed_it_is_removed_on_failure(
        tmp_path, monkeypatch):
    run = tmp_path / "new" / "run"
    run.mkdir(parents=True)                 # made by another process's start, which fails
    real_open, calls = runlock._open, []

    def open_after_removal(file):
        if not calls:                       # that start removes what it made, meanwhile
            run.rmdir()
            run.parent.rmdir()
        calls.append(file)
        return real_open(file)
    monkeypatch.setattr(runlock, "_open", open_after_removal)
    with pytest.raises(RuntimeError):
        with runlock.hold(run):             # this one makes the folders again, then fails
            assert run.is_dir()
            raise RuntimeError("bad data")
    assert len(calls) == 2
    assert not (tmp_path / "new").exists()


def test_a_holder_started_with_python_c_is_named_as_python_c(tmp_path):
    with Holder(tmp_path / "run"):                      # python -c '...' RUN
        assert runlock.holder(tmp_path / "run")["command"] == f"python -c {tmp_path / 'run'}"
        with pytest.raises(runlock.RunInUseError, match="`python -c "):
            runlock.acquire(tmp_path / "run")


@pytest.mark.parametrize("meanwhile", ["the parent removed", "made and removed"])
def test_a_start_whose_new_folder_another_failed_start_removes_meanwhile_makes_it_again(
        tmp_path, monkeypatch, meanwhile):
    run = tmp_path / "new" / "run"
    real_mkdir, calls = os.mkdir, []

    def mkdir(p, *args, **kwargs):          # another start on run fails and removes its folders
        if Path(p) == run and run.parent.is_dir() and not calls:
            calls.append(p)
            if meanwhile == "the parent removed":
                run.parent.rmdir()          # between this start's mkdir of new and of new/run
            else:                           # it made run, then removed it before is_dir()
                raise FileExistsError(errno.EEXIST, "File exists", str(p))
        return real_mkdir(p, *args, **kwargs)
    monkeypatch.setattr(os, "mkdir", mkdir)
    with pytest.raises(RuntimeError, match="bad data"):
        with runlock.hold(run):             # no "cannot create output directory"
            assert run.is_dir() and runlock.holder(run)["pid"] == os.getpid()
            raise RuntimeError("bad data")
    assert calls
    assert not (tmp_path / "new").exists()  # the folders it made are removed as ever


def test_locked_takes_the_folder_parameters_default_where_a_call_leaves_it_out(tmp_path):
    """The default of the decorated function's folder parameter was not read: a call that
    left it out ran with no lock at all."""
    default = tmp_path / "run"

    @runlock.locked("out")
    def write(x, out=default):
        return runlock.holder(out)

    assert write(1) is not None                  # held while the function ran
    assert runlock.holder(default) is None       # and let go after
