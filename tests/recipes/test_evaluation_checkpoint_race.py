"""``check_distinct`` (``metaloop eval``'s refusal of one checkpoint given twice) compares the
``ckpt-*`` folders the members were loaded from, as ``load_ensemble`` recorded them: a run
training into a member's folder (``metaloop train --resume`` moving its ``LATEST``) after the
load changes nothing, and one that moves it during the load has the run loaded again."""

from __future__ import annotations

import re
import shutil
import sys
from pathlib import Path

import pytest
import torch

from metaloop import runs
from metaloop.recipes.evaluation import check_distinct, load_ensemble
from metaloop.train.checkpoint import (
    atomic_write_text,
    latest_checkpoint,
    load_checkpoint,
)

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from conftest import (  # noqa: E402
    tensor_config,
    train_run,
    write_next_checkpoint,
    write_tensor_file,
)


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    """An R2D2 run on a tensor file, with one checkpoint."""
    d = tmp_path_factory.mktemp("eval_checkpoint_race")
    return train_run(d, tensor_config(write_tensor_file(d / "v.npz")))


@pytest.fixture
def run(trained, tmp_path) -> Path:
    """A copy of the trained run, for a test to write checkpoints into."""
    return Path(shutil.copytree(trained, tmp_path / "run"))


def _iteration(ckpt: Path) -> int:
    return load_checkpoint(ckpt)[1]["iteration"]


def _holds(member, ckpt: Path) -> bool:
    """Whether a loaded member's model holds the weights stored in ``ckpt``."""
    stored = load_checkpoint(ckpt)[0]
    mine = dict(member.learner.model.named_parameters())
    return all(torch.equal(p.detach(), stored[f"model.{n}"]) for n, p in mine.items())


def test_a_checkpoint_written_after_the_load_leaves_one_checkpoint_given_twice(run):
    """A run folder and the ``ckpt-*`` folder its LATEST named at the load are one checkpoint,
    still refused after LATEST moved on to a newer one (which neither member holds)."""
    loaded = latest_checkpoint(run)
    assert loaded is not None
    ens = load_ensemble([run, loaded])
    write_next_checkpoint(run)
    assert latest_checkpoint(run) != loaded
    with pytest.raises(ValueError, match=re.escape(f"ensemble: {run} and {loaded} are one "
                                                   f"checkpoint ({loaded})")):
        check_distinct(ens)


def test_a_run_folder_and_a_newer_checkpoint_than_it_loaded_are_two(run):
    """A run folder loaded at one checkpoint and its newer ``ckpt-*`` folder hold other
    weights: LATEST moving to the newer one after the load does not make them one."""
    first = latest_checkpoint(run)
    assert first is not None
    newer = write_next_checkpoint(run)
    atomic_write_text(run / "LATEST", first.name + "\n")    # not yet pointed at, as mid-write
    ens = load_ensemble([run, newer])
    atomic_write_text(run / "LATEST", newer.name + "\n")    # ... and now it is
    check_distinct(ens)
    assert [m.iteration for m in ens.members] == [_iteration(first), _iteration(newer)]


def test_a_latest_moved_during_the_load_has_the_run_loaded_again(run, monkeypatch):
    """LATEST moving while the run folder loads: the member holds the newer checkpoint's
    weights, and that is the checkpoint compared (the older one given beside it is
    another)."""
    first = latest_checkpoint(run)
    assert first is not None
    real, written = runs.load_run, []

    def load_run(path, **kw):
        loaded = real(path, **kw)
        if Path(path) == run and not written:          # a run training on writes one
            written.append(write_next_checkpoint(run))
        return loaded

    monkeypatch.setattr(runs, "load_run", load_run)
    ens = load_ensemble([run, first])
    check_distinct(ens)
    member = ens.members[0]
    assert member.iteration == _iteration(written[0]) == _iteration(first) + 1
    assert _holds(member, written[0]) and not _holds(member, first)


def test_a_latest_moving_during_every_load_is_named(run, monkeypatch):
    """A LATEST that moves during each load: refused, naming the run folder, rather than
    compared at a checkpoint the member may not hold."""
    real = runs.load_run

    def load_run(path, **kw):
        loaded = real(path, **kw)
        write_next_checkpoint(run)
        return loaded

    monkeypatch.setattr(runs, "load_run", load_run)
    with pytest.raises(ValueError, match=re.escape(f"{run}: its LATEST moved to a newer "
                                                   f"checkpoint during each of 3 loads")):
        load_ensemble([run])
