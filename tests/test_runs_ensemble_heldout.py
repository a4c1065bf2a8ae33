"""``Run.heldout()`` of an ensemble draws the tasks ``metaloop eval`` evaluates it on: its
members' common ``[eval]`` task keys (``eval_config``), not the first member's alone; members
that would draw other tasks are refused by name, as ``metaloop eval`` refuses them."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

import metaloop as ml
from metaloop.recipes.evaluation import eval_config, load_ensemble

sys.path.insert(0, str(Path(__file__).resolve().parent))
from conftest import copy_run, edit_state  # noqa: E402

SINUSOID = ('[family]\nname = "sinusoid"\nshots = 5\nqueries = 5\n[model]\nname = "mlp"\n'
            'hidden = [8]\n[method]\nname = "maml"\ninner_lr = 0.1\ninner_steps = 1\n'
            '[train]\niterations = 2\nmeta_batch = 2\ncheckpoint_every = 2\n'
            '[eval]\ntasks = 3\nsteps = [0, 1]\n')


@pytest.fixture(scope="module")
def base(tmp_path_factory) -> Path:
    from conftest import train_run

    return train_run(tmp_path_factory.mktemp("heldout_base"), SINUSOID)


def _with_eval(base: Path, dest: Path, **keys) -> Path:
    """A copy of ``base`` whose config's ``[eval]`` has ``keys``."""
    run = copy_run(base, dest)
    state = run / (run / "LATEST").read_text().strip() / "state.json"
    edit_state(state, lambda s: s["config"]["eval"].update(keys))
    return run


def _sizes(family) -> tuple:
    return family.shots, family.queries


def test_members_that_draw_other_tasks_are_refused_as_metaloop_eval_refuses(base, tmp_path):
    """The first member's family.shots = 5 tasks were drawn for both."""
    other = _with_eval(base, tmp_path / "b", shots=3)
    ens = load_ensemble([base, other])
    message = (rf"ensemble: {other} draws held-out tasks of 3 shots \(eval.shots = 3\), the "
               rf"first run \({base}\) 5 \(eval.shots = 0: its family.shots\)")
    with pytest.raises(ValueError, match=message):
        eval_config(ens)
    with pytest.raises(ValueError, match=message):
        ens.heldout()


def test_members_alike_in_their_tasks_draw_them(base, tmp_path):
    """eval.shots = 5 is family.shots = 5 (eval.shots = 0): the same tasks; members that
    differ only in how the tasks are scored (steps) draw them too."""
    same = _with_eval(base, tmp_path / "b", shots=5, queries=5)
    ens = load_ensemble([base, same])
    assert _sizes(ens.heldout()) == _sizes(ml.load_run(base).heldout()) == (5, 5)
    assert _sizes(ens.heldout()) == _sizes(ml.load_run(same).heldout())
    steps = _with_eval(base, tmp_path / "c", steps=[0, 2])
    ens = load_ensemble([base, steps])
    with pytest.raises(ValueError, match="eval.steps"):
        eval_config(ens)                                  # metaloop eval needs --steps
    assert _sizes(ens.heldout()) == (5, 5)
    assert ens.config["eval"]["steps"] == [0, 1]           # the first run's config, unchanged


def test_the_tasks_are_those_metaloop_eval_draws(base, tmp_path):
    """Members alike in eval.queries = 4 (not their family's 5) draw 4 queries, as the
    config ``metaloop eval`` evaluates them with says."""
    a = _with_eval(base, tmp_path / "a", queries=4)
    b = _with_eval(base, tmp_path / "b", queries=4, steps=[1])
    ens = load_ensemble([a, b])
    fam = ens.heldout()
    assert _sizes(fam) == (5, 4)
    cfg = eval_config(ens, steps=[1])
    assert (cfg["eval"]["queries"], cfg["eval"]["shots"]) == (4, 0)
