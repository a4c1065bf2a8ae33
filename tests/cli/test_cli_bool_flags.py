"""``metaloop eval``'s switches (``--within-alphabet`` / ``--no-within-alphabet``,
``--refine-jointly`` / ``--no-refine-jointly``): absent, the config's value stands; given, it
is set either way for the run or every ensemble member; both in one command line are a usage
error (exit 2); an off switch that would change nothing is refused by name."""

import argparse
import json
import shlex
import sys
from pathlib import Path

import pytest

from metaloop import build
from metaloop import config as _config
from metaloop.cli._args import Switch
from metaloop.cli.main import build_parser, main

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from conftest import omniglot_config, refused  # noqa: E402

LAKE_SPLITS = 'split = "background_train"\n'
WITHIN = 'split = "background_val"\nwithin_alphabet = true\ntasks = 4\nsteps = [0]\n'
RANDOM = 'split = "background_val"\ntasks = 4\nsteps = [0]\n'


@pytest.fixture(scope="module")
def within_runs(omniglot_root, trained_run):
    """Two ProtoNet runs trained alike (the same weights) on the background alphabets,
    whose configs evaluate on background_val: within one alphabet, and of random classes."""
    def run(eval_lines):
        return str(trained_run(omniglot_config(omniglot_root, ways=3, channels=4,
                                               family_lines=LAKE_SPLITS,
                                               eval_lines=eval_lines)))
    return run(WITHIN), run(RANDOM)


@pytest.fixture(scope="module")
def joint_runs(omniglot_root, trained_run):
    """Two ProtoNet runs whose configs refine the prototypes by 2 steps, one jointly with
    the other members of an ensemble, one on its own."""
    def run(jointly, seed):
        lines = f"tasks = 2\nsteps = [0]\nrefine = 2\nrefine_jointly = {jointly}\n"
        return str(trained_run(omniglot_config(omniglot_root, ways=3, channels=4,
                                               eval_lines=lines), "--seed", seed))
    return run("true", "0"), run("false", "1")


def _eval(tmp_path, name, *argv) -> dict:
    """``metaloop eval`` with ``--out tmp_path/name``, which must exit 0; its results.json."""
    out = tmp_path / name
    assert main(["eval", *argv, "--out", str(out), "--no-progress"]) == 0
    return json.loads((out / "results.json").read_text())


def test_no_within_alphabet_evaluates_random_tasks_of_a_run_trained_with_it(
        within_runs, tmp_path, capsys):
    within, random = within_runs
    assert "error_rate" in _eval(tmp_path, "as-config", "--checkpoint", within)
    capsys.readouterr()
    res = _eval(tmp_path, "off", "--checkpoint", within, "--no-within-alphabet")
    assert "error rate" not in capsys.readouterr().out and "error_rate" not in res
    cfg = _config.validate(res["config"])
    assert cfg["eval"]["within_alphabet"] is False
    assert build.eval_family(cfg, None).within_alphabet == 0.0
    # the same tasks, and scores, as the twin run whose config draws random classes
    assert res["methods"] == _eval(tmp_path, "random", "--checkpoint", random)["methods"]


def test_a_record_of_an_off_switch_writes_it_in_its_command(within_runs, tmp_path):
    """The record's command reproduces the evaluation: ``--no-within-alphabet`` in it."""
    record = tmp_path / "r.json"
    assert main(["eval", "--checkpoint", within_runs[0], "--no-within-alphabet", "--record",
                 str(record), "--no-progress"]) == 0
    command = json.loads(record.read_text())["command"]
    assert "--no-within-alphabet" in shlex.split(command)
    assert build_parser().parse_args(shlex.split(command)[1:]).within_alphabet is False


def test_ensemble_members_that_disagree_are_aligned_by_either_switch(
        within_runs, joint_runs, tmp_path, capsys):
    members = list(within_runs)
    refused(["eval", "--checkpoint", *members, "--no-progress"], capsys, tmp_path,
            f"ensemble: {members[1]} has eval.within_alphabet = False")
    res = _eval(tmp_path, "off", "--checkpoint", *members, "--no-within-alphabet")
    assert res["config"]["eval"]["within_alphabet"] is False and "error_rate" not in res
    res = _eval(tmp_path, "on", "--checkpoint", *members, "--within-alphabet")
    assert res["config"]["eval"]["within_alphabet"] is True and "error_rate" in res
    members = list(joint_runs)
    refused(["eval", "--checkpoint", *members, "--no-progress"], capsys, tmp_path,
            f"ensemble: {members[1]} has eval.refine_jointly = False")
    for flag, value in (("--no-refine-jointly", False), ("--refine-jointly", True)):
        res = _eval(tmp_path, flag, "--checkpoint", *members, flag)
        assert res["config"]["eval"]["refine_jointly"] is value
        assert [m["checkpoint"] for m in res["ensemble"]["members"]] == members


@pytest.mark.parametrize("flag", ["within-alphabet", "refine-jointly"])
@pytest.mark.parametrize("off_first", [False, True])
def test_a_switch_given_both_ways_is_a_usage_error(within_runs, tmp_path, capsys, flag,
                                                   off_first):
    both = [f"--no-{flag}", f"--{flag}"] if off_first else [f"--{flag}", f"--no-{flag}"]
    out = tmp_path / "out"
    with pytest.raises(SystemExit) as e:
        main(["eval", "--checkpoint", within_runs[0], *both, "--out", str(out)])
    assert e.value.code == 2 and not out.exists()
    assert f"--{flag} and --no-{flag} both given" in capsys.readouterr().err


def test_an_off_switch_that_would_change_nothing_is_refused(
        method_runs, within_runs, joint_runs, tmp_path, capsys):
    refused(["eval", "--checkpoint", joint_runs[0], "--no-refine-jointly"], capsys, tmp_path,
            "--no-refine-jointly keeps the members of an ensemble from sharing",
            "one --checkpoint is given", "would change nothing")
    refused(["eval", "--checkpoint", *within_runs, "--no-within-alphabet",
             "--no-refine-jointly"], capsys, tmp_path,
            "--no-refine-jointly sets how --refine refines the prototypes, but no --refine K",
            "drop --no-refine-jointly")
    refused(["eval", "--checkpoint", method_runs("maml", "sinusoid"), "--no-within-alphabet"],
            capsys, tmp_path, "--no-within-alphabet: ", "is family 'sinusoid'")
    refused(["eval", "--checkpoint", within_runs[0], "--lake-runs", "nosuch",
             "--no-within-alphabet"], capsys, tmp_path,
            "so --no-within-alphabet would change nothing")


def test_refine_0_turns_off_a_joint_refinement_with_the_refinement(joint_runs, tmp_path):
    """A config that refines jointly was refused with --refine 0 (eval.refine_jointly = true
    with nothing refined), although nothing is left to share."""
    for members in ([joint_runs[0]], list(joint_runs)):
        res = _eval(tmp_path, f"r{len(members)}", "--checkpoint", *members, "--refine", "0")
        assert res["config"]["eval"]["refine"] == 0
        assert res["config"]["eval"]["refine_jointly"] is False


def test_switch_is_none_when_absent_and_set_either_way():
    p = argparse.ArgumentParser(prog="p", exit_on_error=False)
    p.add_argument("--on", action=Switch)
    assert p.parse_args([]).on is None
    assert p.parse_args(["--on"]).on is True and p.parse_args(["--on", "--on"]).on is True
    assert p.parse_args(["--no-on"]).on is False
    with pytest.raises(argparse.ArgumentError, match="--on and --no-on both given"):
        p.parse_args(["--on", "--no-on"])
    with pytest.raises(ValueError, match="a Switch's default is None"):
        p.add_argument("--other", action=Switch, default=True)
    help_text = " ".join(p.format_help().split())
    assert "[--on | --no-on]" in help_text and "default:" not in help_text


def test_a_switch_with_a_short_alias_names_its_long_forms():
    p = argparse.ArgumentParser(prog="p", exit_on_error=False)
    p.add_argument("-w", "--within", action=Switch)
    assert p.parse_args(["-w"]).within is True
    with pytest.raises(argparse.ArgumentError, match="--within and --no-within both given"):
        p.parse_args(["-w", "--no-within"])
