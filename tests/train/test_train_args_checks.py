"""``ml.train`` checks its arguments before anything is written: a resume with another seed
or another learner (or other settings of it) than the run's is refused by name, flags must
be True or False, the learner and the families must be what training needs, and every
argument is documented."""

import inspect
import re
import shutil
import sys
from pathlib import Path

import pytest
import torch

import metaloop as ml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from conftest import edit_state  # noqa: E402

from metaloop.train import loop  # noqa: E402

FAM = ml.tasks.Sinusoid(5, 5)


def _net():
    torch.manual_seed(0)
    return ml.models.MLP(1, (8,), 1)


def _snapshot(run: Path) -> dict:
    return {str(p.relative_to(run)): p.read_bytes() for p in sorted(run.rglob("*"))
            if p.is_file()}


@pytest.fixture(scope="module")
def two(tmp_path_factory):
    """A finished 2-iteration MAML run (seed 0), trained by the library without config=."""
    run = tmp_path_factory.mktemp("two") / "run"
    ml.train(ml.meta.MAML(_net()), FAM, iterations=2, meta_batch=2, seed=0, out_dir=run,
             checkpoint_every=2, progress=False)
    return run


@pytest.mark.parametrize("learner, kw, named", [
    (lambda: ml.meta.MAML(_net()), {"seed": 5}, "seed (0 != 5)"),
    (lambda: ml.meta.Reptile(_net()), {}, "learner ('MAML' != 'Reptile')"),
    (lambda: ml.meta.ANIL(_net()), {}, "learner ('MAML' != 'ANIL')"),
    (lambda: ml.meta.MAML(_net(), first_order=True), {},
     "learner.first_order (False != True)"),
    (lambda: ml.meta.MAML(_net(), inner_lr=0.1), {}, "learner.inner.lr (0.01 != 0.1)"),
    (lambda: ml.meta.MAML(_net(), inner_steps=3), {}, "learner.inner.steps (1 != 3)"),
])
def test_a_resume_with_another_seed_or_learner_is_refused_naming_both_values(
        two, tmp_path, learner, kw, named):
    """They went on without a word: the seed was ignored, and a MAML run continued as
    Reptile or FOMAML. The run is left as it was."""
    run = tmp_path / "run"
    shutil.copytree(two, run)
    before = _snapshot(run)
    with pytest.raises(ValueError, match=re.escape(
            f"refusing to resume {run}: it was trained with other arguments") + ".*"
            + re.escape(named)):
        ml.train(learner(), FAM, iterations=4, meta_batch=2, out_dir=run, resume=True,
                 progress=False, **{"seed": 0, **kw})
    assert _snapshot(run) == before


def test_another_learner_is_named_alone_not_with_its_settings(two, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(two, run)
    with pytest.raises(ValueError) as e:
        ml.train(ml.meta.Reptile(_net(), inner_lr=0.5), FAM, iterations=4, meta_batch=2,
                 out_dir=run, resume=True, progress=False)
    assert "learner ('MAML' != 'Reptile')" in str(e.value)
    assert "learner.inner" not in str(e.value)


def test_the_run_resumes_with_its_own_seed_and_learner_as_an_uninterrupted_run(
        two, tmp_path):
    """Execution-only settings (batching) may differ; the numbers are those of one run."""
    run = tmp_path / "run"
    shutil.copytree(two, run)
    resumed = ml.meta.MAML(_net(), batching="loop")
    ml.train(resumed, FAM, iterations=4, meta_batch=2, out_dir=run, resume=True,
             progress=False)
    whole = ml.meta.MAML(_net())
    ml.train(whole, FAM, iterations=4, meta_batch=2, progress=False)
    for (n, p), (_, q) in zip(resumed.model.named_parameters(),
                              whole.model.named_parameters()):
        torch.testing.assert_close(p, q, msg=n)


def test_a_checkpoint_that_stores_no_seed_or_learner_still_resumes(two, tmp_path):
    """One written before they were stored: only what it stores is checked."""
    run = tmp_path / "run"
    shutil.copytree(two, run)

    def older(state):
        args = state["train_args"]
        for k in [k for k in args if k == "seed" or k.startswith("learner")]:
            del args[k]
    edit_state(run / "ckpt-00000002" / "state.json", older)
    r = ml.train(ml.meta.Reptile(_net()), FAM, iterations=3, meta_batch=2, seed=7,
                 out_dir=run, resume=True, progress=False)
    assert r["iteration"] == 3


def test_the_learner_settings_stored_tell_the_methods_apart():
    def net():
        return ml.models.MLP(2, (8,), 3)
    settings = loop.learner_settings
    r2d2, mon = settings(ml.meta.R2D2(net())), settings(ml.meta.MetaOptNet(net()))
    assert r2d2["learner.inner"] != mon["learner.inner"]
    maml = settings(ml.meta.MAML(_net(), batching="loop", compile=False))
    assert maml == settings(ml.meta.MAML(_net(), batching="vmap"))   # how, not which
    assert not any(k.endswith(("batching", "compile", "checkpoint")) for k in maml)


def test_settings_kept_in_private_attributes_are_stored_for_a_resume():
    """ProtoNet(transductive=False) or refine=3 changes every number, but the settings live
    in private attributes, which a resume did not compare."""
    def net():
        return ml.models.MLP(2, (8,), 3)
    settings = loop.learner_settings
    plain = settings(ml.meta.ProtoNet(net()))
    assert plain["learner.transductive"] is True and plain["learner.refine"] == 0
    assert settings(ml.meta.ProtoNet(net(), transductive=False))["learner.transductive"] \
        is False
    refined = settings(ml.meta.ProtoNet(net(), refine=3, refine_temperature=0.25))
    assert (refined["learner.refine"], refined["learner.refine_temperature"]) == (3, 0.25)
    assert settings(ml.meta.Reptile(_net(), transductive=False))["learner.transductive"] \
        is False


def test_a_resume_with_another_refinement_is_refused(tmp_path):
    fam = ml.tasks.Episodes(torch.randn(40, 2, generator=torch.Generator().manual_seed(0)),
                            torch.arange(40) % 4, ways=2, shots=1, queries=2)

    def proto(**kw):
        torch.manual_seed(0)
        return ml.meta.ProtoNet(ml.models.MLP(2, (8,), 2), **kw)
    run = tmp_path / "run"
    ml.train(proto(), fam, iterations=2, meta_batch=2, out_dir=run, checkpoint_every=2,
             progress=False)
    with pytest.raises(ValueError, match=r"learner\.refine \(0 != 2\)"):
        ml.train(proto(refine=2), fam, iterations=4, meta_batch=2, out_dir=run, resume=True,
                 progress=False)


@pytest.mark.parametrize("flag", ["resume", "progress", "cuda_graph"])
def test_a_string_flag_is_refused_by_name_and_writes_nothing(tmp_path, flag):
    """"no" showed the bar; resume="False" and cuda_graph="False" read as True."""
    out = tmp_path / "new" / "run"
    with pytest.raises(ValueError, match=rf"^{flag} must be True or False, got 'False'$"):
        ml.train(ml.meta.MAML(_net()), FAM, iterations=1, meta_batch=2, out_dir=out,
                 **{"progress": False, flag: "False"})
    assert not (tmp_path / "new").exists()


def test_progress_zero_or_one_is_a_flag(tmp_path, capsys):
    ml.train(ml.meta.MAML(_net()), FAM, iterations=1, meta_batch=2, progress=0)
    assert "meta-train" not in capsys.readouterr().err


def test_progress_none_shows_no_bar_as_evaluate_takes_it(capsys):
    """``ml.evaluate(progress=None)`` is the default there; the same value was refused here."""
    ml.train(ml.meta.MAML(_net()), FAM, iterations=1, meta_batch=2, progress=None)
    assert "meta-train" not in capsys.readouterr().err


@pytest.mark.parametrize("learner, family, val, words", [
    (lambda: ml.meta.MAML(_net()), None, None,
     "train: family must be a task family with sample(n, generator) "
     "(ml.tasks.TaskFamily), got NoneType"),
    (_net, FAM, None, "train: learner must be a metaloop learner (ml.meta.Learner), but MLP "
                      "has no meta_gradient or model (an nn.Module)"),
    (lambda: torch.nn.Linear(1, 1), FAM, None, "but Linear has no meta_gradient"),
    (lambda: ml.meta.MAML(_net()), FAM, [1, 2],
     "train: val_family must be a task family with sample(n, generator) "
     "(ml.tasks.TaskFamily), got list"),
])
def test_what_is_no_learner_or_family_is_named_before_anything_is_written(
        tmp_path, learner, family, val, words):
    """They failed with AttributeError ('NoneType' ... 'sample', or torch's module code)."""
    out = tmp_path / "new" / "run"
    with pytest.raises(ValueError) as e:
        ml.train(learner(), family, iterations=1, meta_batch=2, out_dir=out,
                 val_family=val, val_every=1 if val is not None else 0, progress=False)
    assert words in str(e.value)
    assert not (tmp_path / "new").exists()


def test_resume_of_a_folder_with_no_checkpoint_raises_the_documented_error(tmp_path):
    out = tmp_path / "none"
    with pytest.raises(FileNotFoundError, match=re.escape(str(out))):
        ml.train(ml.meta.MAML(_net()), FAM, iterations=1, meta_batch=2, out_dir=out,
                 resume=True, progress=False)
    assert not out.exists()
    assert "FileNotFoundError:" in inspect.getdoc(loop.train)


def test_every_argument_of_train_is_documented():
    doc = inspect.getdoc(loop.train)
    args = doc.split("Args:")[1].split("Returns:")[0]
    missing = [p for p in inspect.signature(loop.train).parameters
               if not re.search(rf"(?:^|\s|/ ){p}(?: / \w+)*:", args, re.M)]
    assert missing == []


def test_reptiles_test_time_batch_is_no_training_setting():
    """``Reptile.test_batch`` sets test-time adaptation only: a resume may change it."""
    from metaloop.train.loop import learner_settings

    make = lambda tb: ml.meta.Reptile(ml.models.MLP(1, (4,), 1), 0.01, 2, loss="mse",  # noqa: E731
                                      test_batch=tb)
    assert learner_settings(make(2)) == learner_settings(make(5))
    assert not any(k.endswith("test_batch") for k in learner_settings(make(2)))


def test_a_new_run_into_a_folder_of_other_files_is_refused_and_writes_nothing(tmp_path):
    """``--out /etc`` (through a link) or a folder of the user's own: the run wrote its
    checkpoints beside their files and emptied their metrics.jsonl."""
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "metrics.jsonl").write_text("precious\n")
    (mine / "notes.txt").write_text("x")
    with pytest.raises(ValueError, match=r"holds files that no metaloop run wrote "
                                         r"\('metrics.jsonl', 'notes.txt'\)"):
        ml.train(ml.meta.MAML(_net()), FAM, iterations=1, meta_batch=2, out_dir=mine,
                 progress=False)
    assert sorted(p.name for p in mine.iterdir()) == ["metrics.jsonl", "notes.txt"]
    assert (mine / "metrics.jsonl").read_text() == "precious\n"


def test_a_new_run_goes_on_over_what_a_run_stopped_before_its_first_checkpoint_left(tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    (out / "metrics.jsonl").write_text('{"iteration": 1, "loss": 1.0}\n')
    (out / ".metaloop-lock").write_text("")
    (out / ".ckpt-00000001.tmp").mkdir()
    ml.train(ml.meta.MAML(_net()), FAM, iterations=1, meta_batch=2, out_dir=out,
             progress=False)
    assert (out / "LATEST").is_file()


@pytest.mark.parametrize("leftover", ["cut", "nul", "tmp", "system"])
def test_a_new_run_goes_on_over_a_cut_log_temporary_files_and_a_file_managers_files(
        tmp_path, leftover):
    """A power loss can cut a log's first line short or leave it NUL bytes; a killed
    rewrite leaves ``.metrics.jsonl.*``; a file manager adds ``.DS_Store``: each was taken
    for a file no metaloop run wrote."""
    out = tmp_path / "run"
    out.mkdir()
    if leftover == "cut":
        (out / "metrics.jsonl").write_text('{"iteration": 1, "lo')
    elif leftover == "nul":
        (out / "metrics.jsonl").write_bytes(b"\0" * 64)
    elif leftover == "tmp":
        (out / ".metrics.jsonl.x1y2z3").write_text("")
    else:
        for name in (".DS_Store", "Thumbs.db", "desktop.ini", "._ckpt"):
            (out / name).write_text("")
    ml.train(ml.meta.MAML(_net()), FAM, iterations=1, meta_batch=2, out_dir=out,
             progress=False)
    assert (out / "LATEST").is_file()
