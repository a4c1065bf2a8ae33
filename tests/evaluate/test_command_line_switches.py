"""``records.command_line`` writes a two-way switch that is off as ``--no-key``: a record's
command, parsed back, is the command that ran, for every switch on, off or absent; a plain
flag (``store_true``) that is off is left out, as a flag not given."""

import argparse
import itertools
import json
import shlex
import sys
from pathlib import Path

import pytest

from metaloop.cli._args import Switch
from metaloop.cli._records import parse_command, rerun_command
from metaloop.cli.main import build_parser, main
from metaloop.evaluate import records

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from conftest import omniglot_config  # noqa: E402

BASE = {"eval": ["eval", "--checkpoint", "runs/a", "runs/b"]}
"""For each subcommand with a switch: a short command line that its parser accepts."""


def _switches() -> dict[str, list[str]]:
    """``{subcommand: the dests of its Switch options}`` of ``metaloop``'s parser."""
    (sub,) = [a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction)]
    found = {name: [a.dest for a in p._actions if isinstance(a, Switch)]
             for name, p in sub.choices.items()}
    return {name: dests for name, dests in found.items() if dests}


def _flag(dest: str, value: bool | None) -> list[str]:
    """The words that give ``dest`` the value ``value`` (none for ``None``)."""
    word = dest.replace("_", "-")
    return [] if value is None else [f"--{word}" if value else f"--no-{word}"]


def test_every_switch_of_every_subcommand_is_covered():
    assert _switches() == {"eval": ["within_alphabet", "refine_jointly"]}
    assert set(_switches()) <= set(BASE)


@pytest.mark.parametrize("command", sorted(BASE))
def test_a_record_command_parses_back_to_the_namespace_for_every_switch_value(command):
    parser = build_parser()
    dests = _switches()[command]
    for values in itertools.product((True, False, None), repeat=len(dests)):
        argv = ["--threads", "1", *BASE[command]]
        for dest, value in zip(dests, values):
            argv += _flag(dest, value)
        args = parser.parse_args(argv)
        assert [getattr(args, d) for d in dests] == list(values)
        line = records.command_line(args)
        words = shlex.split(line)
        for dest, value in zip(dests, values):
            word = dest.replace("_", "-")
            assert (f"--{word}" in words) is (value is True), (values, line)
            assert (f"--no-{word}" in words) is (value is False), (values, line)
        assert vars(parse_command(line, command)) == vars(args), (values, line)
        # the same through the command the --record subcommands share
        assert vars(parse_command(rerun_command(args), command)) == vars(args)


def test_a_plain_flag_that_is_off_is_left_out():
    args = build_parser().parse_args([*BASE["eval"], "--no-within-alphabet"])
    assert args.tf32 is False and args.no_progress is False
    words = shlex.split(records.command_line(args))
    assert "--no-within-alphabet" in words
    assert not {w for w in words if w.startswith("--no-")} - {"--no-within-alphabet"}
    assert "--tf32" not in words and "--no-progress" not in words
    words = shlex.split(records.command_line(
        build_parser().parse_args([*BASE["eval"], "--tf32", "--no-progress"])))
    assert "--tf32" in words and "--no-progress" in words and "--no-tf32" not in words


def test_switches_are_those_of_the_subcommand_or_the_ones_given():
    ns = argparse.Namespace(command="adapt", within_alphabet=False, resume=False, shots=5)
    assert shlex.split(records.command_line(ns)) == ["metaloop", "adapt", "--shots", "5"]
    ns = argparse.Namespace(command="other", colour=False, resume=False, tasks=3)
    assert shlex.split(records.command_line(ns, program="tool", switches=("colour",))) == [
        "tool", "other", "--no-colour", "--tasks", "3"]
    ns = argparse.Namespace(command="eval", within_alphabet=False, refine_jointly=True)
    assert shlex.split(records.command_line(ns, switches=())) == [
        "metaloop", "eval", "--refine-jointly"]


@pytest.fixture(scope="module")
def omniglot_runs(omniglot_root, trained_run):
    """Two ProtoNet runs on Omniglot's background alphabets whose configs draw held-out tasks
    within one alphabet and refine the prototypes jointly by 2 steps."""
    lines = ('split = "background_val"\nwithin_alphabet = true\ntasks = 2\nsteps = [0]\n'
             'refine = 2\nrefine_jointly = true\n')
    return [str(trained_run(omniglot_config(omniglot_root, ways=3, channels=4,
                                            family_lines='split = "background_train"\n',
                                            eval_lines=lines), "--seed", seed))
            for seed in ("0", "1")]


@pytest.mark.parametrize("flags", [["--no-within-alphabet"], ["--no-refine-jointly"],
                                   ["--no-within-alphabet", "--no-refine-jointly"],
                                   ["--within-alphabet", "--no-refine-jointly"]])
def test_a_record_of_off_switches_carries_them_and_reruns_the_same(omniglot_runs, tmp_path,
                                                                   flags):
    record = tmp_path / "r.json"
    argv = ["eval", "--checkpoint", *omniglot_runs, *flags, "--record", str(record),
            "--no-progress"]
    assert main(argv) == 0
    command = json.loads(record.read_text())["command"]
    assert set(flags) <= set(shlex.split(command))
    assert vars(parse_command(command, "eval")) == vars(build_parser().parse_args(argv))
    # its command, rerun, measures the same
    again = tmp_path / "again.json"
    rerun = shlex.split(command)[1:]
    rerun[rerun.index("--record") + 1] = str(again)
    assert main(rerun) == 0
    first, second = json.loads(record.read_text()), json.loads(again.read_text())
    assert (first["mean"], first["per_task"]) == (second["mean"], second["per_task"])
