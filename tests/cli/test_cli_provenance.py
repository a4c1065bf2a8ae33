"""Which checkpoint answered: ``metaloop eval``, ``predict`` and ``adapt`` of a run a process
is still training (its folder's lock held) load its newest complete checkpoint, say so on
stderr (naming its iteration and identity, ``"ckpt-* sha256 <16 hex>"``, as adapt's
identity records ``--model``), and eval's and predict's results.json record which checkpoint
of each run was loaded ("loaded"). A resume of adapt refused because its ``--model`` has
moved on to another checkpoint says whether the kept one still exists."""

from __future__ import annotations

import hashlib
import importlib
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from metaloop.cli.main import main
from metaloop.recipes import adapt as recipe

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from conftest import folder_config, train_run, write_image_folder  # noqa: E402

pytest.importorskip("fcntl")             # the lock is tested with flock

SINUSOID = ('[family]\nname = "sinusoid"\nshots = 5\n[method]\nname = "maml"\n'
            '[train]\niterations = 4\ncheckpoint_every = 2\nmeta_batch = 2\n'
            '[eval]\ntasks = 2\nsteps = [0]\n')
HOLD = ("import sys\nfrom metaloop import runlock\nrunlock.acquire(sys.argv[1])\n"
        "print('held', flush=True)\nsys.stdin.read()\n")
finetune_mod = importlib.import_module("metaloop.adapt.finetune")


class Training:
    """A process holding the run folder's lock, as ``metaloop train`` training into it."""

    def __init__(self, run: Path):
        self.run = run

    def __enter__(self):
        self.p = subprocess.Popen([sys.executable, "-c", HOLD, str(self.run)],
                                  stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        assert self.p.stdout.readline() == "held\n"
        self.pid = self.p.pid
        return self

    def __exit__(self, *exc):
        self.p.kill()
        self.p.communicate()


def _in_progress(src: Path, dst: Path, ckpt: str = "ckpt-00000002") -> Path:
    """A copy of the finished run ``src`` whose newest checkpoint so far is ``ckpt``."""
    shutil.copytree(src, dst)
    (dst / "LATEST").write_text(ckpt + "\n")
    return dst


def _identity(ckpt: Path) -> str:
    digest = hashlib.sha256((ckpt / "tensors.safetensors").read_bytes()).hexdigest()
    return f"{ckpt.name} sha256 {digest[:16]}"


def test_eval_records_which_checkpoint_of_each_run_it_scored(trained_run, tmp_path, capsys):
    done = trained_run(SINUSOID)
    run = _in_progress(done, tmp_path / "run")
    other = trained_run(SINUSOID, "--seed", "1")
    out = tmp_path / "ev"
    with Training(run) as t:
        capsys.readouterr()
        assert main(["eval", "--checkpoint", str(run), str(other), "--out", str(out),
                     "--no-progress"]) == 0
        err = capsys.readouterr().err
    ident = _identity(run / "ckpt-00000002")
    assert (f"note: {run} is in progress (pid {t.pid}, iteration 2 of 4 in its newest "
            f"checkpoint, {ident}); scored as it is") in err, err
    loaded = json.loads((out / "results.json").read_text())["loaded"]
    assert loaded == [
        {"run_dir": str(run), "checkpoint": "ckpt-00000002", "iteration": 2,
         "identity": ident, "in_progress": True},
        {"run_dir": str(other), "checkpoint": "ckpt-00000004", "iteration": 4,
         "identity": _identity(other / "ckpt-00000004"), "in_progress": False}]
    # the lock let go (a run stopped): not in progress, the same checkpoint named
    assert main(["eval", "--checkpoint", str(run), "--out", str(out), "--no-progress"]) == 0
    (one,) = json.loads((out / "results.json").read_text())["loaded"]
    assert one == {"run_dir": str(run), "checkpoint": "ckpt-00000002", "iteration": 2,
                   "identity": ident, "in_progress": False}


@pytest.fixture(scope="module")
def image_run(tmp_path_factory):
    """A ProtoNet run on an image folder, 4 iterations with a checkpoint every 2, a support
    and a query folder of its images, and another folder of 4 classes to adapt to."""
    d = tmp_path_factory.mktemp("provenance")
    photos = write_image_folder(d / "photos", classes=8, per_class=6, mixed=False)
    cfg = folder_config(photos).replace("iterations = 2\n", "iterations = 4\n")
    run = train_run(d, cfg)
    assert (run / "ckpt-00000002").is_dir() and (run / "ckpt-00000004").is_dir()
    classes = sorted(p.name for p in photos.iterdir() if p.is_dir() and p.name[0] != ".")[:2]
    for c in classes:
        files = sorted(f for f in (photos / c).iterdir() if f.suffix == ".png")
        (d / "s" / c).mkdir(parents=True)
        shutil.copy(files[0], d / "s" / c / files[0].name)
        (d / "q").mkdir(exist_ok=True)
        shutil.copy(files[1], d / "q" / f"{c}_{files[1].name}")
    other = write_image_folder(d / "other", classes=4, per_class=4, seed=3, mixed=False)
    return run, d / "s", d / "q", other


def test_predict_notes_a_run_in_progress_on_stderr_and_records_the_checkpoint(
        image_run, tmp_path, capsys):
    src, support, query, _ = image_run
    run = _in_progress(src, tmp_path / "run")
    out = tmp_path / "p"
    with Training(run) as t:
        capsys.readouterr()
        assert main(["predict", "--checkpoint", str(run), "--support", str(support),
                     "--query", str(query), "--json", "--out", str(out)]) == 0
        got = capsys.readouterr()
    ident = _identity(run / "ckpt-00000002")
    assert (f"note: {run} is in progress (pid {t.pid}, iteration 2 of 4 in its newest "
            f"checkpoint, {ident}); its answers are that checkpoint's") in got.err, got.err
    assert len(json.loads(got.out)) == 2                 # stdout: the JSON alone
    res = json.loads((out / "results.json").read_text())
    assert res["loaded"] == [{"run_dir": str(run), "checkpoint": "ckpt-00000002",
                              "iteration": 2, "identity": ident, "in_progress": True}]
    # a finished run: no note
    assert main(["predict", "--checkpoint", str(src), "--support", str(support), "--query",
                 str(query), "--json"]) == 0
    assert "in progress" not in capsys.readouterr().err


def _adapt(run, data, out, *extra):
    return ["adapt", "--model", str(run), "--family", "folder", "--data", str(data),
            "--ways", "2", "--shots", "1", "--queries", "2", "--tasks", "2", "--steps", "1",
            "--approaches", "probe-ridge,finetune-random", "--out", str(out), "--no-progress",
            *extra]


def _interrupted_in_progress(image_run, tmp_path, monkeypatch, capsys):
    """An adapt run of a --model run in progress (at ckpt-00000002), interrupted after its
    first held-out task; returns (the model run, the data, --out, stderr)."""
    src, _, _, other = image_run
    model = _in_progress(src, tmp_path / "model")
    out = tmp_path / "out"
    real, calls = finetune_mod.finetune, []

    def fake(*a, **kw):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(*a, **kw)
    with Training(model) as t, monkeypatch.context() as m:
        m.setattr(finetune_mod, "finetune", fake)
        capsys.readouterr()
        assert main(_adapt(model, other, out)) == 130
        err = capsys.readouterr().err
    ident = _identity(model / "ckpt-00000002")
    assert (f"note: {model} is in progress (pid {t.pid}, iteration 2 of 4 in its newest "
            f"checkpoint, {ident}); adapted from as it is; a --resume of this run will need "
            f"that same checkpoint, and training keeps only its newest ones") in err, err
    assert f"copy {(model / 'ckpt-00000002').resolve()} elsewhere" in err
    kept = json.loads((out / recipe.PARTIAL).read_text())
    assert kept["identity"]["model_checkpoint"] == ident and kept["tasks_done"] == 1
    (model / "LATEST").write_text("ckpt-00000004\n")     # training has moved on
    return model, other, out


def test_adapt_resume_after_the_model_moved_on_names_the_kept_checkpoint_gone(
        image_run, tmp_path, monkeypatch, capsys):
    model, other, out = _interrupted_in_progress(image_run, tmp_path, monkeypatch, capsys)
    shutil.rmtree(model / "ckpt-00000002")                # pruned by training
    assert main(_adapt(model, other, out, "--resume")) == 2
    err = capsys.readouterr().err
    assert "refusing to resume" in err and "the checkpoint of --model" in err
    assert (f"the kept run's checkpoint ckpt-00000002 of {model.resolve()} no longer exists "
            f"(training keeps only its newest checkpoints), so the kept tasks cannot be "
            f"resumed: start without --resume in a new --out") in err, err


def test_adapt_resume_after_the_model_moved_on_resumes_from_the_kept_checkpoint(
        image_run, tmp_path, monkeypatch, capsys):
    model, other, out = _interrupted_in_progress(image_run, tmp_path, monkeypatch, capsys)
    assert main(_adapt(model, other, out, "--resume")) == 2
    err = capsys.readouterr().err
    ckpt = (model / "ckpt-00000002").resolve()
    assert (f"the kept run's checkpoint still exists: resume with the kept run's arguments "
            f"and --model {ckpt}") in err, err
    assert "give the kept run's arguments, or another --out" not in err
    copy = tmp_path / "safe" / "ckpt-00000002"
    shutil.copytree(ckpt, copy)
    shutil.rmtree(ckpt)
    assert main(_adapt(copy, other, out, "--resume")) == 0, capsys.readouterr().err
    assert f"resuming {out}: 1 of 2 held-out tasks scored" in capsys.readouterr().out
    assert (out / "results.json").is_file() and not (out / recipe.PARTIAL).exists()
