"""``metaloop.cli.forgetting.command_settings``: an older record's ``metaloop forgetting``
command (one written without ``setting``) is read by metaloop's own parser, every flag as a
run of that command reads it, so that ``--record`` replaces only a record of its own
setting."""

from __future__ import annotations

import json
import shlex

import numpy as np
import pytest
import torch

from metaloop.cli.forgetting import command_settings
from metaloop.cli.main import main
from metaloop.recipes import forgetting as recipe

# what a run of ``metaloop forgetting --scenario split-fmnist-class --strategies replay
# --replay-ratio balanced --buffer-size 500 --steps 6`` reads, every default included
WANT = {"scenario": "split-fmnist-class", "strategies": "replay", "seeds": 3, "seed": 0,
        "steps": 6, "pretrain_steps": None, "batch_size": None, "lr": 1e-3,
        "eval_every": None, "early_stop": None, "replay_ratio": "balanced",
        "buffer_size": 500, "head_weight": None, "temperature": None, "lora_rank": None,
        "hidden": [256, 256], "data": None, "train_per_class": None, "val_per_class": None,
        "test_per_class": None, "alphabets": None, "classes_per_experience": None,
        "image_size": None, "channels": None, "skip_corrupt": None, "class_depth": None,
        "drop_small": None}


@pytest.mark.parametrize("command", [
    "metaloop forgetting --scenario split-fmnist-class --strategies replay --replay-ratio "
    "balanced --buffer-size 500 --steps 6",
    # --flag=value, after OMP_NUM_THREADS
    "OMP_NUM_THREADS=1 metaloop forgetting --scenario=split-fmnist-class --strategies=replay "
    "--replay-ratio=balanced --buffer-size=500 --steps=6",
    # a global option before the subcommand, value-less flags, an abbreviated flag
    "metaloop --threads 1 --malloc system forgetting --no-progress --scenario "
    "split-fmnist-class --resume --strategies replay --replay-ratio balanced --buffer 500 "
    "--steps 6",
    # python -m metaloop, after another command
    "metaloop train --config c.toml && python -m metaloop forgetting --steps 6 --scenario "
    "split-fmnist-class --buffer-size 500 --replay-ratio balanced --strategies replay",
])
def test_a_command_reads_as_a_run_of_it_reads_it(command):
    assert command_settings(command) == WANT


@pytest.mark.parametrize("command,message", [
    ("metaloop forgetting --stepz 5", r"metaloop refuses it: .*unrecognized arguments: "
                                      r"--stepz 5"),
    ("metaloop forgetting --steps five", r"metaloop refuses it: .*--steps: invalid int "
                                         r"value: 'five'"),
    ("metaloop forgetting --replay-ratio", r"metaloop refuses it: .*--replay-ratio: expected "
                                           r"one argument"),
    ("metaloop forgetting --help", r"it runs nothing \(--help or --version\)"),
    ("metaloop --version forgetting", r"it runs nothing \(--help or --version\)"),
    ("metaloop adapt --ways 5", r"not a metaloop forgetting command"),
    ("metaloop forgetting --steps 5 ; rm -r runs", r"not one metaloop forgetting command"),
    ("python forgetting.py --steps 5", r"not one metaloop forgetting command"),
])
def test_a_command_metaloop_would_not_run_as_forgetting_is_not_read(command, message, capsys):
    with pytest.raises(ValueError, match=message):
        command_settings(command)
    assert capsys.readouterr() == ("", "")          # the parser's usage and help: not shown


# -- what an older record's command means to --record ---------------------------------------

TINY = ["--scenario", "split-data-class", "--strategies", "replay", "--replay-ratio",
        "balanced", "--seeds", "1", "--steps", "4", "--eval-every", "2", "--batch-size", "8",
        "--hidden", "8", "--no-progress"]


@pytest.fixture
def data(tmp_path):
    """A 4-class .npz: two experiences of two classes, noisy one-hot feature vectors."""
    g = torch.Generator().manual_seed(0)
    y = torch.arange(4).repeat_interleave(8)
    x = torch.nn.functional.one_hot(y, 4).float() * 2 + torch.randn(len(y), 4, generator=g)
    np.savez(tmp_path / "d.npz", x=x.numpy(), y=y.numpy())
    return tmp_path / "d.npz"


def _older_record(rec_dir, command: list[str]):
    """A record of replay-balanced as an earlier metaloop wrote it: no setting, its command
    telling what it measured."""
    rec_dir.mkdir(exist_ok=True)
    path = rec_dir / "continual_split_data_class_replay-balanced.json"
    path.write_text(json.dumps({"table": "continual", "metric": "avg acc (%)", "mean": 50.0,
                                "row": "kept row", "scenario": "split-data-class",
                                "strategy": "replay",
                                "command": shlex.join(["metaloop", *command])}))
    return path


def test_an_older_record_in_flag_equals_value_form_is_replaced_by_its_own_setting(
        tmp_path, data, capsys):
    """Its command, ``--buffer-size=5`` and the like, is the same setting as this run's:
    the record is replaced (keeping its row), not refused as unreadable."""
    rec_dir = tmp_path / "records"
    older = ["forgetting", *(f"{a}={b}" for a, b in zip(TINY[:-1:2], TINY[1:-1:2])),
             f"--data={data}", "--buffer-size=5", f"--out={tmp_path / 'old'}"]
    path = _older_record(rec_dir, older)
    assert main(["forgetting", *TINY, "--data", str(data), "--buffer-size", "5", "--out",
                 str(tmp_path / "run"), "--record", str(rec_dir)]) == 0
    assert f"replaced record {path}" in capsys.readouterr().out
    rec = json.loads(path.read_text())
    assert rec["row"] == "kept row" and rec["setting"]["buffer_size"] == 5


def test_an_older_record_with_an_abbreviated_flag_is_told_by_its_value(tmp_path, data,
                                                                       capsys):
    """``--buffer 7`` is --buffer-size 7 to the command line: a run of another buffer is
    refused naming the record's 7, before any work."""
    rec_dir, out = tmp_path / "records", tmp_path / "run"
    path = _older_record(rec_dir, ["forgetting", *TINY, "--data", str(data), "--buffer",
                                   "7"])
    before = path.read_bytes()
    assert main(["forgetting", *TINY, "--data", str(data), "--buffer-size", "5", "--out",
                 str(out), "--record", str(rec_dir)]) == 2
    err = capsys.readouterr().err
    assert f"{path} holds the record of another setting of replay" in err
    assert "it differs in --buffer-size (7 != 5)" in err, err
    assert path.read_bytes() == before and not out.exists()


def test_an_older_record_whose_command_metaloop_refuses_is_not_replaced(tmp_path, data,
                                                                       capsys):
    """A flag the command line does not know (``--stepz``) is no setting to pass over: the
    record's setting cannot be told, and it is not replaced."""
    rec_dir, out = tmp_path / "records", tmp_path / "run"
    path = _older_record(rec_dir, ["forgetting", *TINY, "--data", str(data), "--buffer-size",
                                   "5", "--stepz", "9"])
    before = path.read_bytes()
    assert main(["forgetting", *TINY, "--data", str(data), "--buffer-size", "5", "--out",
                 str(out), "--record", str(rec_dir)]) == 2
    err = capsys.readouterr().err
    assert f"{path} holds a record whose settings cannot be told" in err
    assert "unrecognized arguments: --stepz 9" in err, err
    assert path.read_bytes() == before and not out.exists()


def test_the_record_reader_strips_lora_from_another_strategys_command(monkeypatch):
    """lora's need for peft is lora's: the record of naive from a command with lora among
    its strategies is read without peft."""
    def no_peft(strategies):
        raise ValueError("--strategies has lora, whose adapters come from peft")
    monkeypatch.setattr(recipe, "_check_lora_available", no_peft)
    options = command_settings("metaloop forgetting --strategies naive,lora --steps 6")
    assert recipe._command_setting(options, "naive")[1]["steps"] == 6
    with pytest.raises(ValueError, match="peft"):
        recipe._command_setting(options, "lora")
