"""``metaloop vae``'s flags: an option that the chosen run does not read, given with another
value than its default, is refused by name (exit 2, nothing written, before any data is
read) instead of being silently ignored. A default given explicitly is accepted anywhere:
the committed records' commands spell out every option."""

from __future__ import annotations

import json
import shlex
import sys
from pathlib import Path

import pytest

from metaloop.cli.main import build_parser, main
from metaloop.recipes import generative as recipe

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from conftest import write_tiny_fashion  # noqa: E402

RECORDS = Path(__file__).resolve().parents[2] / "docs" / "results"



def _run(tmp_path, capsys, *argv):
    """Exit 2 with nothing written (there is no data under --root); the message."""
    out = tmp_path / "run"
    capsys.readouterr()
    assert main(["--threads", "1", "vae", "--data", "fashion-mnist", "--root",
                 str(tmp_path / "no-data"), "--out", str(out), "--no-progress", *argv]) == 2
    assert not out.exists()
    return capsys.readouterr().err


def test_the_checked_defaults_are_the_command_defaults():
    args = build_parser().parse_args(["vae"])
    for name, default in recipe.OPTION_DEFAULTS.items():
        assert getattr(args, name) == default, name


@pytest.mark.parametrize("argv, named, run", [
    # one model: no classifier, inversion or protocol
    (["--classifier-epochs", "5"], "--classifier-epochs 5", "--model vae"),
    (["--quality-samples", "50"], "--quality-samples 50", "--model vae"),
    (["--invert-steps", "3"], "--invert-steps 3", "--model vae"),
    (["--invert-lrs", "0.1"], "--invert-lrs 0.1", "--model vae"),
    (["--stages", "2"], "--stages 2", "--model vae"),
    (["--curve-k", "5"], "--curve-k 5", "--model vae"),
    (["--checkpoint-every", "5"], "--checkpoint-every 5", "--model vae"),
    (["--model", "ae", "--beta", "0.5"], "--beta 0.5", "--model ae"),
    (["--model", "ae", "--k", "10"], "--k 10", "--model ae"),
    (["--arch", "conv", "--hidden", "64"], "--hidden 64", "--model vae"),
    # the latent sweep
    (["--sweep-latent", "2,4", "--latent", "8"], "--latent 8", "--sweep-latent"),
    (["--sweep-latent", "2", "--model", "ae"], "--model ae", "--sweep-latent"),
    (["--sweep-latent", "2", "--train-eval-examples", "5"], "--train-eval-examples 5",
     "--sweep-latent"),
    (["--sweep-latent", "2", "--invert-lr", "0.1"], "--invert-lr 0.1", "--sweep-latent"),
    (["--sweep-latent", "2", "--curve-every", "3"], "--curve-every 3", "--sweep-latent"),
    # the inversion comparison
    (["--compare-inversion", "--model", "cvae"], "--model cvae", "--compare-inversion"),
    (["--compare-inversion", "--k", "10"], "--k 10", "--compare-inversion"),
    (["--compare-inversion", "--invert-lrs", "0.1,0.2"], "--invert-lrs 0.1,0.2",
     "--compare-inversion"),
    (["--compare-inversion", "--stages", "2"], "--stages 2", "--compare-inversion"),
    # the transfer study: classifiers only
    (["--inversion-transfer", "--epochs", "3"], "--epochs 3", "--inversion-transfer"),
    (["--inversion-transfer", "--latent", "8"], "--latent 8", "--inversion-transfer"),
    (["--inversion-transfer", "--hidden", "16"], "--hidden 16", "--inversion-transfer"),
    (["--inversion-transfer", "--likelihood", "gaussian"], "--likelihood gaussian",
     "--inversion-transfer"),
    (["--inversion-transfer", "--binarize", "static"], "--binarize static",
     "--inversion-transfer"),
    (["--inversion-transfer", "--invert-l2", "1"], "--invert-l2 1.0", "--inversion-transfer"),
    (["--inversion-transfer", "--invert-jitter", "0"], "--invert-jitter 0",
     "--inversion-transfer"),
    (["--inversion-transfer", "--eval-every", "2"], "--eval-every 2", "--inversion-transfer"),
    # the IWAE protocol: options of the other runs that its model and training don't cover
    (["--protocol", "iwae", "--inversion-transfer"], "--inversion-transfer", "--protocol iwae"),
    (["--protocol", "iwae", "--classifier-epochs", "5"], "--classifier-epochs 5",
     "--protocol iwae"),
    (["--protocol", "iwae", "--invert-steps", "5"], "--invert-steps 5", "--protocol iwae"),
    (["--protocol", "iwae", "--eval-every", "5"], "--eval-every 5", "--protocol iwae"),
    (["--protocol", "iwae", "--eval-batch", "5"], "--eval-batch 5", "--protocol iwae"),
    (["--protocol", "iwae", "--train-eval-examples", "5"], "--train-eval-examples 5",
     "--protocol iwae"),
    (["--protocol", "iwae", "--test-examples", "5"], "--test-examples 5", "--protocol iwae"),
    (["--protocol", "iwae", "--evaluate", "--quality-samples", "5"], "--quality-samples 5",
     "--protocol iwae"),
])
def test_an_option_the_run_does_not_read_is_refused(argv, named, run, tmp_path, capsys):
    err = _run(tmp_path, capsys, *argv)
    assert f"metaloop vae: error: {named} would change nothing in this run ({run})" in err
    assert err.rstrip().endswith(f"drop {named.split()[0]}")


def test_protocol_classes_is_refused(tmp_path, capsys):
    err = _run(tmp_path, capsys, "--protocol", "iwae", "--classes", "1")
    assert "--classes only applies to the CVAE" in err


@pytest.mark.parametrize("argv", [
    ["--model", "cvae", "--classes", "1", "--k", "5", "--beta", "0.5", "--eval-every", "2"],
    ["--arch", "conv", "--hidden", "200,200"],                      # the default: accepted
    ["--sweep-latent", "2", "--k", "0", "--classifier-epochs", "1", "--quality-samples", "9"],
    ["--compare-inversion", "--latent", "8", "--invert-l2", "1", "--invert-lr", "0.1"],
    ["--inversion-transfer", "--invert-lrs", "0.1", "--invert-lr", "0.1",
     "--classifier-epochs", "1", "--test-examples", "9"],
    ["--protocol", "iwae", "--evaluate", "--test-examples", "9", "--k", "9"],
    ["--protocol", "iwae", "--stages", "1", "--curve-k", "2", "--k", "9"],
])
def test_options_the_run_reads_are_accepted(argv, tmp_path, capsys):
    err = _run(tmp_path, capsys, *argv)
    assert "would change nothing" not in err


def _record_commands():
    """``metaloop vae`` commands of the committed records (each as an argv after ``vae``)."""
    found = set()
    for path in sorted(RECORDS.glob("*.json")):
        command = json.loads(path.read_text()).get("command", "")
        for part in command.split("&&"):
            words = shlex.split(part)
            if "vae" in words and "metaloop" in words:
                found.add(tuple(words[words.index("vae") + 1:]))
    return sorted(found)


def test_the_committed_records_commands_are_accepted():
    commands = _record_commands()
    assert len(commands) >= 10
    for argv in commands:
        args = build_parser().parse_args(["vae", *argv])
        recipe._check_read(args)            # raises, naming the option, if one were refused


def test_evaluate_refuses_options_that_are_not_the_runs(tmp_path_factory, tmp_path, capsys):
    """--evaluate measures the checkpoint with its own settings, so --stages and the like
    changed nothing in the measurement, yet went into the record's training command."""
    root = write_tiny_fashion(tmp_path_factory.mktemp("tiny_fashion_eval"), 100, 30)
    out = tmp_path / "iwae"
    run = ["--threads", "1", "vae", "--protocol", "iwae", "--data", "fashion-mnist", "--root",
           str(root), "--latent", "3", "--hidden", "16,16", "--curve-k", "5",
           "--curve-examples", "10", "--out", str(out), "--no-progress"]
    assert main([*run, "--stages", "2", "--until-pass", "1"]) == 0
    capsys.readouterr()
    record = tmp_path / "docs" / "generative_iwae_x.json"
    evaluate = [*run, "--evaluate", "--k", "5", "--record", str(record)]
    for extra, named in ((["--stages", "3"], "--stages 3 (the run's: 2)"),
                         ([], "--stages 8 (the run's: 2)"),
                         (["--stages", "2", "--hidden", "8"], "--hidden 8 (the run's: 16,16)"),
                         (["--stages", "2", "--seed", "1", "--curve-k", "6"],
                          "--seed 1 (the run's: 0), --curve-k 6 (the run's: 5)")):
        assert main([*evaluate, *extra]) == 2
        err = capsys.readouterr().err
        assert "--evaluate measures the run in" in err and named in err, err
        assert not record.exists()
    assert main([*evaluate, "--stages", "2"]) == 0
    assert "--stages 2" in json.loads(record.read_text())["command"]


@pytest.mark.parametrize("argv, message", [
    # QA: inf passed the up-front check and failed after the classifiers and models trained
    (["--compare-inversion", "--invert-tv", "inf"], "--invert-tv must be a finite number >= 0, "
                                                    "got inf"),
    (["--compare-inversion", "--invert-l2", "inf"], "--invert-l2 must be a finite number >= 0, "
                                                    "got inf"),
    (["--compare-inversion", "--invert-l2", "-1"], "--invert-l2 must be a finite number >= 0"),
    (["--protocol", "iwae", "--max-minutes", "inf"], "--max-minutes must be a finite number > 0, "
                                                     "got inf"),
    (["--protocol", "iwae", "--max-minutes", "0"], "--max-minutes must be a finite number > 0"),
])
def test_a_number_that_is_not_finite_is_refused_by_its_flag(argv, message, tmp_path, capsys):
    err = _run(tmp_path, capsys, *argv)
    assert message in err and err.count("\n") == 1


@pytest.mark.parametrize("argv", [
    ["--model", "ae", "--k", "5000"],
    ["--compare-inversion", "--k", "5000"],
    ["--inversion-transfer", "--k", "5000"],
    ["--inversion-transfer", "--batch-size", "100"],
    ["--inversion-transfer", "--binarize", "dynamic"],
])
def test_a_default_the_help_gives_is_accepted_where_the_run_does_not_read_it(argv):
    """--k 5000, --batch-size 100 and --binarize dynamic are the help's defaults (their
    parser default is None, as they differ by run); given to a run that does not read them
    they were refused as changing something."""
    recipe._check_read(build_parser().parse_args(["vae", *argv]))


@pytest.mark.parametrize("argv, named", [
    (["--model", "ae", "--k", "10"], "--k 10"),
    (["--inversion-transfer", "--batch-size", "50"], "--batch-size 50"),
    (["--inversion-transfer", "--binarize", "none"], "--binarize none"),
])
def test_another_value_of_those_is_still_refused(argv, named):
    with pytest.raises(ValueError, match=f"{named} would change nothing"):
        recipe._check_read(build_parser().parse_args(["vae", *argv]))
