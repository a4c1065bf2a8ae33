"""``metaloop.recipes.evaluation.eval_config`` of an ensemble: the members' ``[eval]`` settings
are their common ones. Members whose configs differ in one that no change sets for all are
refused by name (the first run's was used for every member without a word); the steps are
those of the members that take steps, also behind a solved head; members alike score as
one ensemble always scored."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

import metaloop as ml
from metaloop.evaluate import evaluate
from metaloop.meta import Ensemble
from metaloop.recipes.evaluation import eval_config, evaluate_run, load_ensemble
from metaloop.train.loop import on_model

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from conftest import tensor_config, train_run, write_tensor_file  # noqa: E402

SINUSOID = ('[family]\nname = "sinusoid"\nshots = 5\nqueries = 5\n[model]\nname = "mlp"\n'
            'hidden = [8]\n[method]\nname = "maml"\ninner_lr = 0.1\ninner_steps = {inner}\n'
            '[train]\niterations = 2\nmeta_batch = 2\ncheckpoint_every = 2\n'
            '[eval]\ntasks = 3\nsteps = {steps}\n')
MAML = 'name = "maml"\ninner_lr = 0.4\ninner_steps = 1\n'


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    d = tmp_path_factory.mktemp("members")
    data = write_tensor_file(d / "v.npz")
    proto = 'name = "protonet"\n'
    made = {
        "a": (SINUSOID.format(inner=1, steps="[0, 1, 2]"),),
        "b": (SINUSOID.format(inner=1, steps="[0, 1, 2]"), "--seed", "1"),
        "c": (SINUSOID.format(inner=3, steps="[0, 3]"),),
        "c2": (SINUSOID.format(inner=3, steps="[3, 0, 3]"), "--seed", "1"),
        "proto": (tensor_config(data, proto),),
        "proto_r": (tensor_config(data, proto, eval_lines="tasks = 4\nsteps = [0]\nrefine = 2\n"
                                  "refine_temperature = 1.5\n"),),
        "proto_t": (tensor_config(data, proto, eval_lines="tasks = 4\nsteps = [0]\n"
                                  "refine_temperature = 1.5\n"),),
        "maml": (tensor_config(data, MAML, eval_lines="tasks = 4\nsteps = [0, 2]\n"),),
        "proto_3way": (tensor_config(data, proto).replace("ways = 2\n", "ways = 3\n"),),
        "proto_3way_2": (tensor_config(data, proto, eval_lines="tasks = 4\nsteps = [0]\n"
                                       "ways = 3\n"),),
    }
    return {name: train_run(d / name, *how) for name, how in made.items()}


def test_members_evaluated_after_other_steps_are_refused_by_name(runs):
    """A MAML run evaluated after 3 steps ensembled with one evaluated after 1 and 2 was
    scored after the first run's steps."""
    ens = load_ensemble([runs["a"], runs["c"]])
    with pytest.raises(ValueError, match=(
            rf"ensemble: {runs['c']} has eval.steps = \[0, 3\], the first run \({runs['a']}\) "
            rf"\[0, 1, 2\]; the members are evaluated together with one eval.steps: give "
            rf"--steps \(metaloop eval\) to set it for every member")):
        eval_config(ens)
    # a change applies to every member; the same steps written otherwise are the same
    assert eval_config(ens, steps=[3])["eval"]["steps"] == [3]
    assert eval_config(load_ensemble([runs["c"], runs["c2"]]))["eval"]["steps"] == [0, 3]


def test_the_steps_are_those_of_the_members_that_take_steps(runs):
    """A solved head first (its eval.steps [0]) decided the steps of a MAML member, which
    was scored unadapted; the solved head's own steps are not compared."""
    ens = load_ensemble([runs["proto"], runs["maml"]])
    cfg = eval_config(ens)
    assert cfg["eval"]["steps"] == [0, 2]
    assert evaluate_run(ens, config=cfg)["result"]["steps"] == [0, 2]
    assert eval_config(ens, steps=[1])["eval"]["steps"] == [1]


def test_members_that_refine_otherwise_are_refused_and_unrefined_settings_are_free(runs):
    ens = load_ensemble([runs["proto"], runs["proto_r"]])
    with pytest.raises(ValueError, match=rf"ensemble: {runs['proto_r']} has eval.refine = 2, "
                                         rf"the first run \({runs['proto']}\) 0; .* give "
                                         rf"--refine \(metaloop eval\)"):
        eval_config(ens)
    # nothing refined: the temperatures change nothing, and differ freely
    assert eval_config(load_ensemble([runs["proto"], runs["proto_t"]]))["eval"]["refine"] == 0
    # refined by a change: the temperature the members give must agree
    with pytest.raises(ValueError, match=r"has eval.refine_temperature = 1.5, the first run "
                                         r".* 0.5; .* give --refine-temperature"):
        eval_config(ens, refine=1)
    cfg = eval_config(ens, refine=1, refine_temperature=0.5)
    assert (cfg["eval"]["refine"], cfg["eval"]["refine_temperature"]) == (1, 0.5)


def test_a_key_without_a_flag_is_named_by_its_config_key(runs, tmp_path):
    text = SINUSOID.format(inner=1, steps="[0, 1, 2]").replace("tasks = 3\n",
                                                               "tasks = 3\nseed = 7\n")
    other = train_run(tmp_path / "s", text)
    with pytest.raises(ValueError, match=rf"ensemble: {other} has eval.seed = 7, the first run "
                                         rf"\({runs['a']}\) 1000003; .*: give every member's "
                                         rf"config the same eval.seed"):
        eval_config(load_ensemble([runs["a"], other]))
    assert eval_config(load_ensemble([runs["a"], other]), seed=5)["eval"]["seed"] == 5


def test_members_alike_score_as_their_ensemble(runs):
    """Members with one config: the first run's [eval] section, and the numbers of the
    ``Ensemble`` of the loaded learners evaluated directly."""
    ens = load_ensemble([runs["a"], runs["b"]])
    cfg = eval_config(ens)
    assert cfg == eval_config(ml.load_run(runs["a"]))
    ec = cfg["eval"]
    got = evaluate_run(ens, config=cfg)["result"]
    learners = [ml.load_run(runs[k]).learner for k in ("a", "b")]
    held = on_model(ml.load_run(runs["a"]).heldout(), learners[0].model)
    want = evaluate(Ensemble(learners), held, tasks=ec["tasks"], steps=ec["steps"],
                    seed=ec["seed"])
    assert got["per_task"] == want["per_task"]


def test_members_trained_on_other_ways_draw_the_same_tasks_or_are_refused(runs):
    """Held-out tasks of ``eval.ways = 0`` have the first run's family.ways: a 3-way member
    after a 2-way one was scored on 2-way tasks, and before it on 3-way ones."""
    a, b = runs["proto"], runs["proto_3way"]
    for first, other, n, m in ((a, b, 2, 3), (b, a, 3, 2)):
        with pytest.raises(ValueError, match=(
                rf"ensemble: {other} draws held-out tasks of {m} ways \(eval.ways = 0: its "
                rf"family.ways\), the first run \({first}\) {n} \(eval.ways = 0: its "
                rf"family.ways\); the members are evaluated on the same tasks: give --ways")):
            eval_config(load_ensemble([first, other]))
        assert eval_config(load_ensemble([first, other]), ways=2)["eval"]["ways"] == 2
    # 3-way tasks either way: written in [eval] by one, the family's by the other
    for members in ([runs["proto_3way_2"], b], [b, runs["proto_3way_2"]]):
        cfg = eval_config(load_ensemble(members))
        assert (cfg["eval"]["ways"] or cfg["family"]["ways"]) == 3


def test_a_switch_is_offered_both_ways():
    """Members that disagree on a switch are aligned by turning it on or off for all."""
    from metaloop.recipes.evaluation import _fix

    for key in ("within_alphabet", "refine_jointly"):
        flag = key.replace("_", "-")
        assert _fix(key).startswith(f"give --{flag} or --no-{flag} (metaloop eval) to set it "
                                    "for every member, or every member's config the same ")
    assert _fix("steps").startswith("give --steps (metaloop eval) to set")
