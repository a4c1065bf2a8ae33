"""``metaloop forgetting``'s flags: a strategy option given without a strategy that reads it,
or a scenario option for another scenario, is refused by name (exit 2, nothing written, no
data read) instead of being silently ignored."""

from __future__ import annotations

import pytest

from metaloop.cli.main import main
from metaloop.recipes import forgetting as recipe


def _refused(capsys, tmp_path, *argv):
    out = tmp_path / "run"
    capsys.readouterr()
    # no data under --root: an error about the data would mean the flags were accepted
    code = main(["forgetting", "--root", str(tmp_path / "no-data"), "--out", str(out),
                 "--no-progress", *argv])
    err = capsys.readouterr().err
    assert code == 2 and not out.exists()
    assert "metaloop forgetting: error:" in err
    return err


@pytest.mark.parametrize("argv, named", [
    (["--strategies", "naive,heads,lora", "--replay-ratio", "0.3"], "--replay-ratio 0.3"),
    (["--strategies", "naive,joint", "--replay-ratio", "balanced"], "--replay-ratio balanced"),
    (["--strategies", "joint", "--buffer-size", "100"], "--buffer-size 100"),
    (["--strategies", "naive,replay,lora", "--head-weight", "0.5"], "--head-weight 0.5"),
    (["--strategies", "replay", "--temperature", "4"], "--temperature 4.0"),
    (["--strategies", "naive,replay+heads", "--lora-rank", "4"], "--lora-rank 4"),
    # the default value given explicitly changes nothing either
    (["--strategies", "naive", "--replay-ratio", "0.1"], "--replay-ratio 0.1"),
])
def test_a_strategy_option_without_its_strategy_is_refused(argv, named, tmp_path, capsys):
    err = _refused(capsys, tmp_path, "--scenario", "two-task", *argv)
    assert f"{named} applies to the strateg" in err and "would change nothing" in err
    assert f"drop {named.split()[0]}" in err


@pytest.mark.parametrize("scenario", ["two-task", "split-fmnist-task", "split-fmnist-class"])
def test_alphabets_outside_the_omniglot_scenario_is_refused(scenario, tmp_path, capsys):
    err = _refused(capsys, tmp_path, "--scenario", scenario, "--alphabets", "3")
    assert f"--alphabets 3 sets the length of the omniglot-alphabets stream; {scenario}" in err


@pytest.mark.parametrize("argv", [
    ["--strategies", "replay", "--replay-ratio", "0.3", "--buffer-size", "10"],
    ["--strategies", "replay+heads", "--replay-ratio", "balanced", "--head-weight", "2",
     "--temperature", "3"],
    ["--strategies", "heads,lora", "--head-weight", "2", "--lora-rank", "2"],
    ["--scenario", "omniglot-alphabets", "--alphabets", "3"],
    # the committed record docs/results/forgetting_split_class_er1000.json's options
    ["--scenario", "split-fmnist-class", "--strategies", "replay,replay+heads",
     "--replay-ratio", "balanced", "--buffer-size", "1000"],
])
def test_options_with_a_strategy_that_reads_them_are_accepted(argv, tmp_path, capsys):
    """Accepted: the run gets as far as looking for the data (there is none)."""
    err = _refused(capsys, tmp_path, *argv)
    assert "would change nothing" not in err


def test_the_settings_keep_the_strategy_defaults():
    s = recipe.settings("two-task")
    assert {k: s[k] for k in recipe.STRATEGY_DEFAULTS} == recipe.STRATEGY_DEFAULTS
    assert recipe.settings("two-task", strategies="naive")["replay_ratio"] == 0.1
    with pytest.raises(ValueError, match="--lora-rank 2 applies to the strategy lora"):
        recipe.settings("two-task", strategies="naive", lora_rank=2)


def test_the_committed_records_commands_are_accepted():
    """Every ``metaloop forgetting`` command of docs/results' records gets past the checks."""
    import json
    import shlex
    from pathlib import Path

    from metaloop.cli.forgetting import SETTINGS
    from metaloop.cli.main import build_parser

    commands = set()
    for path in sorted((Path(__file__).resolve().parents[2] / "docs" / "results").glob("*.json")):
        for part in json.loads(path.read_text()).get("command", "").split("&&"):
            words = shlex.split(part)
            if "forgetting" in words and "metaloop" in words:
                commands.add(tuple(words[words.index("forgetting") + 1:]))
    assert len(commands) >= 5
    for argv in commands:
        args = build_parser().parse_args(["forgetting", *argv])
        recipe.settings(args.scenario, **{k: getattr(args, k) for k in SETTINGS})
        if args.scenario != "omniglot-alphabets":
            assert args.alphabets is None


def test_lora_without_peft_is_refused_before_any_training(tmp_path, capsys, monkeypatch):
    """The default --strategies include lora: without peft (the text extra) the run used to
    train experience 0 and the strategies before it, then end in a ModuleNotFoundError
    traceback; it is now named first (exit 2, nothing trained, nothing written)."""
    import sys

    import numpy as np

    def trained(*a, **k):
        raise AssertionError("trained before the missing peft was named")

    monkeypatch.setitem(sys.modules, "peft", None)               # import peft fails
    monkeypatch.setattr(recipe, "finetune_experience", trained)
    data = tmp_path / "f.npz"
    np.savez(data, x=np.eye(4, dtype=np.float32).repeat(10, 0), y=np.arange(4).repeat(10))
    out = tmp_path / "run"
    code = main(["forgetting", "--scenario", "split-data-class", "--data", str(data),
                 "--strategies", "naive,lora,joint", "--steps", "2", "--out", str(out),
                 "--no-progress"])
    err = capsys.readouterr().err
    assert code == 2 and not out.exists(), err
    assert "error: --strategies has lora, whose adapters come from peft" in err
    assert "pip install -e '.[text]'" in err and "(--strategies naive,joint)" in err
    with pytest.raises(ValueError, match="peft"):
        recipe.settings("two-task")                              # the default strategies
    assert recipe.settings("two-task", strategies="naive,joint")["strategies"] == [
        "naive", "joint"]


def test_seeds_torch_cannot_take_are_named_before_any_training():
    """--seed 2**64 - 1000 used to train experience 0 of the seed, then fail to seed the
    fine-tuning (1000 + seed) with torch's "Overflow when unpacking long long"."""
    import torch

    with pytest.raises(ValueError, match="--seed 18446744073709550616 with --seeds 1 gives "
                                         "seeds outside"):
        recipe.settings("two-task", seed=2**64 - 1000, seeds=1)
    low, high = recipe.SEED_RANGE
    torch.Generator().manual_seed(low)                        # the ends are ones torch takes
    torch.Generator().manual_seed(high + recipe.FINETUNE_SEED)
    assert recipe.settings("two-task", seed=high, seeds=1)["seeds"] == [high]
    assert recipe.settings("two-task", seed=low, seeds=1)["seeds"] == [low]
    for seed, seeds in ((high, 2), (low - 1, 3)):
        with pytest.raises(ValueError, match=f"--seed {seed} with --seeds {seeds} gives seeds "
                                             f"outside {low}..{high}"):
            recipe.settings("two-task", seed=seed, seeds=seeds)


@pytest.mark.parametrize("argv, message", [
    (["--scenario", "two-task", "--train-per-class", "0"], "--train-per-class must be positive"),
    (["--scenario", "split-fmnist-class", "--test-per-class", "-1"],
     "--test-per-class must be positive"),
    (["--scenario", "omniglot-alphabets", "--val-per-class", "-1"],
     "--val-per-class must be >= 0"),
])
def test_a_count_that_is_not_positive_names_its_flag(argv, message, tmp_path, capsys):
    """It named the library's argument: ``train_per_class must be a positive int or None``."""
    err = _refused(capsys, tmp_path, *argv)
    assert f"metaloop forgetting: error: {message}" in err, err
