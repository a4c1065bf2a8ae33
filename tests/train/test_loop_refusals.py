"""``train`` refuses bad arguments and run directories by name, before any iteration runs and
without writing anything: a resume past the iterations asked for, a new run into a directory
that holds one, bad intervals, seed, config, and an Ensemble learner."""

import re
import shutil
import sys
from pathlib import Path

import pytest
import torch

import metaloop as ml
from metaloop.cli.main import main
from metaloop.train.checkpoint import load_checkpoint, save_checkpoint

sys.path.insert(0, str(Path(__file__).parent))
from _cli import write_config  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from conftest import edit_state  # noqa: E402


def _learner():
    torch.manual_seed(0)
    return ml.meta.MAML(ml.models.MLP(1, (8,), 1), 0.01, 1)


def _snapshot(run: Path) -> dict:
    return {str(p.relative_to(run)): p.read_bytes() for p in sorted(run.rglob("*"))
            if p.is_file()}


def _params(learner) -> dict:
    return {n: p.detach().clone() for n, p in learner.model.named_parameters()}


FAM = ml.tasks.Sinusoid(5, 5)


@pytest.fixture(scope="module")
def six(tmp_path_factory):
    """A finished 6-iteration run (checkpoints 3 and 6), trained by the library."""
    run = tmp_path_factory.mktemp("six") / "run"
    ml.train(_learner(), FAM, iterations=6, meta_batch=2, out_dir=run, checkpoint_every=3,
             progress=False)
    return run


def test_resume_with_fewer_iterations_than_the_run_has_is_refused(six, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(six, run)
    before = _snapshot(run)
    learner = _learner()
    init = _params(learner)
    with pytest.raises(ValueError, match=r"already at iteration 6, past the 2 iterations "
                                         r"asked for"):
        ml.train(learner, FAM, iterations=2, meta_batch=2, out_dir=run, resume=True,
                 progress=False)
    assert _snapshot(run) == before                       # no ckpt-2, LATEST unchanged
    assert all(torch.equal(init[n], p) for n, p in _params(learner).items())


def test_resume_of_a_finished_run_with_its_own_iterations_is_a_no_op(six, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(six, run)
    before = _snapshot(run)
    learner = _learner()
    r = ml.train(learner, FAM, iterations=6, meta_batch=2, out_dir=run, resume=True,
                 progress=False)
    assert r["iteration"] == 6 and _snapshot(run) == before
    tensors, _ = load_checkpoint(run)
    assert torch.equal(tensors["model.head.weight"], learner.model.head.weight.detach())


@pytest.mark.parametrize("kw, named", [
    ({"lr": 0.01}, "lr (0.001 != 0.01)"),
    ({"meta_batch": 3}, "meta_batch (2 != 3)"),
    ({"optimizer": "sgd"}, "optimizer ('adam' != 'sgd')"),
    ({"lr_schedule": "cosine"}, "lr_schedule ('constant' != 'cosine')"),
    ({"weight_decay": 0.1}, "weight_decay (0.0 != 0.1)"),
    ({"clip_grad_norm": 1.0}, "clip_grad_norm (0.0 != 1.0)"),
])
def test_a_library_resume_with_other_training_arguments_is_refused_naming_them(
        six, tmp_path, kw, named):
    """Without a config= to compare, the arguments that set the remaining iterations' numbers
    are checked against the run's (they went on silently, or crashed in SGD's step with
    KeyError 'momentum' for an Adam run); the run is left as it was."""
    run = tmp_path / "run"
    shutil.copytree(six, run)
    before = _snapshot(run)
    args = {"meta_batch": 2, **kw}
    with pytest.raises(ValueError, match=re.escape(
            f"refusing to resume {run}: it was trained with other arguments") + ".*"
            + re.escape(named)):
        ml.train(_learner(), FAM, iterations=8, out_dir=run, resume=True, progress=False,
                 **args)
    assert _snapshot(run) == before
    r = ml.train(_learner(), FAM, iterations=8, meta_batch=2, out_dir=run, resume=True,
                 progress=False)                   # its own arguments: a constant rate goes on
    assert r["iteration"] == 8


def test_a_scheduled_run_resumed_with_other_iterations_is_refused(tmp_path):
    """A cosine rate reads the total iterations, so more of them change the steps to come."""
    run = tmp_path / "run"
    kw = dict(meta_batch=2, out_dir=run, checkpoint_every=2, lr_schedule="cosine",
              progress=False)
    ml.train(_learner(), FAM, iterations=4, **kw)
    before = _snapshot(run)
    with pytest.raises(ValueError, match=re.escape("iterations (4 != 6)")):
        ml.train(_learner(), FAM, iterations=6, resume=True, **kw)
    assert _snapshot(run) == before
    assert ml.train(_learner(), FAM, iterations=4, resume=True, **kw)["iteration"] == 4


def test_a_checkpoint_without_training_arguments_is_checked_for_its_optimizer(six, tmp_path):
    """One written before the arguments were stored: SGD on Adam's state is refused by name
    (it crashed with KeyError 'momentum'), and the run's own optimizer goes on."""
    run = tmp_path / "run"
    shutil.copytree(six, run)
    edit_state(run / "ckpt-00000006" / "state.json", lambda s: s.pop("train_args", None),
               as_older=True)
    before = _snapshot(run)
    with pytest.raises(ValueError, match=re.escape("optimizer ('adam' != 'sgd')")):
        ml.train(_learner(), FAM, iterations=8, meta_batch=2, out_dir=run, resume=True,
                 optimizer="sgd", progress=False)
    assert _snapshot(run) == before
    assert ml.train(_learner(), FAM, iterations=8, meta_batch=2, out_dir=run, resume=True,
                    lr=0.5, progress=False)["iteration"] == 8     # unchecked but the optimizer


def test_a_library_resume_with_a_smaller_model_is_refused_naming_the_extra_tensors(tmp_path):
    """The run's network has a layer this model lacks (every tensor the model has fits): it
    was resumed into the model until torch's optimizer refused the state ("doesn't match
    the size of optimizer's group"), with the model's parameters already overwritten."""
    run = tmp_path / "run"
    torch.manual_seed(0)
    ml.train(ml.meta.MAML(ml.models.MLP(1, (8, 8, 8), 1), 0.01, 1), FAM, iterations=2,
             meta_batch=2, out_dir=run, progress=False)
    before = _snapshot(run)
    learner = _learner()                                       # MLP(1, (8,), 1)
    init = _params(learner)
    with pytest.raises(ValueError, match=re.escape(
            f"checkpoint {run} (iteration 2) is corrupt or of another model: it holds the "
            f"tensors ['model.body.fc1.bias', 'model.body.fc1.weight', 'model.body.fc2.bias', "
            f"'model.body.fc2.weight'], which the model lacks")):
        ml.train(learner, FAM, iterations=4, meta_batch=2, out_dir=run, resume=True,
                 progress=False)
    assert all(torch.equal(init[n], p) for n, p in _params(learner).items())
    assert _snapshot(run) == before


def test_cli_resume_with_a_config_of_fewer_iterations_exits_2(tmp_path, capsys):
    six = write_config(tmp_path / "six.toml", iterations=6, meta_batch=2, checkpoint_every=3,
                       seed=0)
    two = write_config(tmp_path / "two.toml", iterations=2, meta_batch=2, checkpoint_every=3,
                       seed=0)
    run = tmp_path / "run"
    assert main(["train", "--config", str(six), "--out", str(run), "--no-progress"]) == 0
    before = _snapshot(run)
    capsys.readouterr()
    assert main(["train", "--config", str(two), "--resume", str(run), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert f"refusing to resume {run}: the run is already at iteration 6, past the 2 " \
           f"iterations asked for" in err
    assert _snapshot(run) == before


def test_a_new_run_into_a_directory_holding_a_run_is_refused(six, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(six, run)
    before = _snapshot(run)
    with pytest.raises(ValueError) as e:
        ml.train(_learner(), FAM, iterations=2, meta_batch=2, out_dir=run, progress=False)
    msg = str(e.value)
    assert f"{run} already holds a run at iteration 6" in msg
    assert "resume=True" in msg and "another out_dir" in msg
    assert _snapshot(run) == before                        # metrics.jsonl not truncated
    assert load_checkpoint(run)[1]["iteration"] == 6


def test_a_new_run_into_a_directory_with_a_damaged_latest_is_refused(six, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(six, run)
    (run / "LATEST").write_text("nonsense\n")
    before = _snapshot(run)
    with pytest.raises(ValueError, match="LATEST is corrupt"):
        ml.train(_learner(), FAM, iterations=2, meta_batch=2, out_dir=run, progress=False)
    assert _snapshot(run) == before


@pytest.mark.parametrize("resume", [True, False])
def test_a_checkpoint_directory_given_as_the_run_directory_is_refused(six, tmp_path, resume):
    """Resumed (or started) in ``ckpt-*``, a run wrote its LATEST, checkpoints and metrics
    inside that checkpoint, beside the run it belongs to."""
    run = tmp_path / "run"
    shutil.copytree(six, run)
    before = _snapshot(run)
    with pytest.raises(ValueError, match=rf"ckpt-00000006 is one checkpoint of a run .*give "
                                         rf"its run directory {run} \(nothing was written\)"):
        ml.train(_learner(), FAM, iterations=9, meta_batch=2, out_dir=run / "ckpt-00000006",
                 resume=resume, checkpoint_every=3, progress=False)
    assert _snapshot(run) == before


@pytest.mark.parametrize("flags", [["--resume", "{ck}"], ["--config", "{cfg}", "--out", "{ck}"]])
def test_cli_names_a_checkpoint_directory_given_as_the_run_directory(tmp_path, capsys, flags):
    cfg = write_config(tmp_path / "c.toml", iterations=2, meta_batch=2, checkpoint_every=1,
                       seed=0)
    run = tmp_path / "run"
    assert main(["train", "--config", str(cfg), "--out", str(run), "--no-progress"]) == 0
    capsys.readouterr()
    before = _snapshot(run)
    ck = run / "ckpt-00000002"
    args = [f.format(ck=ck, cfg=cfg) for f in flags]
    assert main(["train", *args, "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert err == (f"metaloop train: error: {ck} is one checkpoint of a run (it holds "
                   f"state.json), not a run directory: a run there would write its "
                   f"checkpoints inside it; give its run directory {run} (nothing was "
                   f"written)\n"), err
    assert _snapshot(run) == before


def test_latest_never_names_a_pruned_checkpoint(tmp_path):
    """A checkpoint of a later iteration that is no part of this run's history (left by a
    run killed before it wrote LATEST) does not get the new checkpoint pruned."""
    run = tmp_path / "run"
    ml.train(_learner(), FAM, iterations=1, meta_batch=2, out_dir=run, checkpoint_every=1,
             progress=False)
    save_checkpoint(tmp_path / "other", 6, {"x": torch.zeros(1)}, {})
    (tmp_path / "other" / "ckpt-00000006").rename(run / "ckpt-00000006")   # LATEST unwritten
    r = ml.train(_learner(), FAM, iterations=3, meta_batch=2, out_dir=run,
                 checkpoint_every=1, progress=False, resume=True)
    assert r["iteration"] == 3
    assert sorted(p.name for p in run.glob("ckpt-*")) == \
        ["ckpt-00000002", "ckpt-00000003", "ckpt-00000006"]
    assert load_checkpoint(run)[1]["iteration"] == 3


@pytest.mark.parametrize("kw, message", [
    ({"log_every": 0}, "log_every must be a positive int, or None"),
    ({"log_every": -3}, "log_every must be a positive int"),
    ({"log_every": 1.5}, "log_every must be a positive int"),
    ({"checkpoint_every": 0}, "checkpoint_every must be a positive int, got 0"),
    ({"checkpoint_every": -1}, "checkpoint_every must be a positive int, got -1"),
    ({"val_every": -1, "val_family": FAM}, r"val_every must be an int >= 0 \(0: no "
                                           r"validation\), got -1"),
    ({"val_every": True, "val_family": FAM}, "val_every must be an int >= 0"),
    ({"val_every": 1}, "val_every=1 .* no val_family was given"),
    ({"val_every": 1, "val_family": FAM, "val_tasks": 0}, "val_tasks must be a positive int"),
    ({"seed": "a"}, "seed must be an int in \\[0, 2\\*\\*64\\).*got 'a'"),
    ({"seed": -1}, "seed must be an int"),
    ({"seed": 1.0}, "seed must be an int"),
    ({"config": [1]}, "config must be a dict"),
    ({"config": {"a": {1, 2}}}, "config must be JSON-serialisable.*set"),
])
def test_bad_arguments_are_named_before_anything_is_written(tmp_path, kw, message):
    learner = _learner()
    init = _params(learner)
    with pytest.raises(ValueError, match=message):
        ml.train(learner, FAM, iterations=2, meta_batch=2, out_dir=tmp_path / "run",
                 progress=False, **kw)
    assert not (tmp_path / "run").exists()
    assert all(torch.equal(init[n], p) for n, p in _params(learner).items())


@pytest.mark.parametrize("out_dir", ["", "  "])
def test_an_empty_out_dir_is_refused_not_the_current_directory(tmp_path, monkeypatch,
                                                               out_dir):
    """ml.train(out_dir="") wrote the run (checkpoints, LATEST, metrics.jsonl) into the
    current directory; the command line refuses an empty path."""
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ValueError, match=r"out_dir is the empty path .* current directory"):
        ml.train(_learner(), FAM, iterations=2, meta_batch=2, out_dir=out_dir, progress=False)
    assert list(tmp_path.iterdir()) == []


def test_a_non_json_config_is_refused_before_any_iteration(tmp_path):
    """It used to fail with a TypeError when the final checkpoint was written."""
    class Counting:
        def __init__(self):
            self.n, self.kind, self.shots, self.queries = 0, FAM.kind, FAM.shots, FAM.queries

        def sample(self, n, generator=None):
            self.n += 1
            return FAM.sample(n, generator=generator)
    fam = Counting()
    with pytest.raises(ValueError, match="config must be JSON-serialisable"):
        ml.train(_learner(), fam, iterations=3, meta_batch=2, out_dir=tmp_path / "run",
                 config={"when": object()}, progress=False)
    assert fam.n == 0 and not (tmp_path / "run").exists()


def test_resume_without_a_run_directory_is_refused():
    """resume=True without out_dir was ignored: a fresh run from the initial weights."""
    learner = _learner()
    init = _params(learner)
    with pytest.raises(ValueError, match="resume=True continues the run in out_dir, but "
                                         "out_dir is None"):
        ml.train(learner, FAM, iterations=2, meta_batch=2, resume=True, progress=False)
    assert all(torch.equal(init[n], p) for n, p in _params(learner).items())


def test_validation_off_and_on_keep_their_documented_meanings():
    r = ml.train(_learner(), FAM, iterations=2, meta_batch=2, val_every=0, progress=False)
    assert r["val"] is None
    r = ml.train(_learner(), FAM, iterations=2, meta_batch=2, val_every=1, val_family=FAM,
                 val_tasks=4, progress=False)
    assert set(r["val"]) == {"val_loss"}


def test_an_ensemble_is_refused_naming_its_members(tmp_path):
    ens = ml.meta.Ensemble([_learner(), _learner()])
    with pytest.raises(ValueError, match="an Ensemble .* trained by training its members"):
        ml.train(ens, FAM, iterations=3, meta_batch=2, out_dir=tmp_path / "run",
                 progress=False)
    assert not (tmp_path / "run").exists()
