"""The records of ``metaloop adapt --record --model <a metaloop train run>``: they name the
config the body was trained with, their command trains it first, and their budget counts that
training (its CPU seconds and iterations), as a meta-learned start's counts its meta-training.
"""

from __future__ import annotations

import functools
import json
import shutil
from pathlib import Path

import pytest

from metaloop import config
from metaloop.cli.adapt import command_settings
from metaloop.evaluate import mean_ci
from metaloop.evaluate.records import validate_record
from metaloop.recipes import adapt as recipe

REPO = Path(__file__).resolve().parents[2]
CONFIG = REPO / "configs" / "adapt_omniglot_pretrain_5w1s_cpu.toml"
_records = functools.partial(recipe.records, read_command=command_settings)
ADAPT = ("metaloop --threads 1 adapt --family omniglot --model runs/p --out runs/a "
         "--queries 15 --record rec --seed 0 --shots 1 --tasks 2 --ways 5")
TRAIN = "metaloop --threads 1 train --config configs/p.toml --out runs/p"
ACCS = {"probe-ridge": [0.8, 1.0], "finetune-zero": [0.6, 0.9]}


def _results(accs: dict) -> dict:
    rows = {}
    for name, acc in accs.items():
        m, c = mean_ci(acc)
        per = {"accuracy": acc, "adapt_seconds": [0.25] * len(acc),
               "cpu_seconds": [0.125] * len(acc)}
        rows[name] = {"approach": recipe.APPROACHES[name], "accuracy": {"mean": m, "ci95": c},
                      "trainable": 325, "adapt_seconds": 0.25, "per_task": per, "info": {}}
    return {"approaches": rows}


def _trained_run(tmp_path: Path, monkeypatch, *, seed: int | None = None) -> dict:
    """A working folder with ``configs/p.toml`` and ``runs/p``, a run folder whose newest
    checkpoint's ``state.json`` holds that config (its train.seed ``seed`` where given, as
    ``metaloop train --seed`` stores it), 2000 iterations and 412.34 CPU seconds."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "configs").mkdir()
    shutil.copy(CONFIG, tmp_path / "configs" / "p.toml")
    stored = config.load(tmp_path / "configs" / "p.toml")
    if seed is not None:
        stored["train"]["seed"] = seed
    ckpt = tmp_path / "runs" / "p" / "ckpt-00002000"
    ckpt.mkdir(parents=True)
    (ckpt.parent / "LATEST").write_text(ckpt.name)
    state = {"config": stored, "cpu_seconds": 412.34, "iteration": 2000, "threads": 1,
             "precision": "float32", "format_version": 1}
    (ckpt / "state.json").write_text(json.dumps(state))
    return state


def _settings() -> recipe.AdaptSettings:
    return recipe.AdaptSettings(family="omniglot", model="runs/p", ways=5, shots=1,
                                queries=15, tasks=2, seed=0, approaches="probe-ridge,finetune-zero")


def test_a_trained_bodys_records_name_its_config_and_count_its_training(tmp_path, monkeypatch):
    _trained_run(tmp_path, monkeypatch)
    recs = _records(_results(ACCS), tmp_path / "rec", _settings(), command=ADAPT)
    assert len(recs) == 2
    for path, rec in recs.items():
        validate_record(rec, where=str(path))
        assert rec["config"] == "configs/p.toml"
        # the command trains the body first, so that it reruns everything the record counts
        assert rec["command"] == f"{TRAIN} && {ADAPT}"
        adapt_cpu = 2 * 0.125
        assert rec["budget"] == {"cpu_seconds": round(412.34 + adapt_cpu, 1),
                                 "iterations": 2000}
        assert "body trained by metaloop train --config configs/p.toml: 2000 iterations, " \
               "412.3 CPU-s in the budget" in rec["note"]
    steps = {rec["approach"]: rec["note"] for rec in recs.values()}
    assert steps["finetune-zero"].endswith(f"; {_settings().steps} adaptation steps per task")
    assert "adaptation steps" not in steps["probe-ridge"]


def test_the_config_the_command_names_is_kept_and_its_train_command_not_repeated(
        tmp_path, monkeypatch):
    _trained_run(tmp_path, monkeypatch)
    shutil.copy(CONFIG, tmp_path / "same.toml")           # named by the command: preferred
    command = (f"metaloop --threads 1 train --config same.toml --out runs/p && {ADAPT}")
    recs = _records(_results(ACCS), tmp_path / "rec", _settings(), command=command)
    for rec in recs.values():
        assert rec["config"] == "same.toml" and rec["command"] == command


def test_a_train_seed_other_than_the_configs_is_in_the_command(tmp_path, monkeypatch):
    _trained_run(tmp_path, monkeypatch, seed=7)
    recs = _records(_results(ACCS), tmp_path / "rec", _settings(), command=ADAPT)
    for rec in recs.values():
        assert rec["config"] == "configs/p.toml"
        assert rec["command"] == f"{TRAIN} --seed 7 && {ADAPT}"


def test_a_config_edited_since_the_training_is_not_named(tmp_path, monkeypatch):
    _trained_run(tmp_path, monkeypatch)
    path = tmp_path / "configs" / "p.toml"
    path.write_text(path.read_text().replace("iterations = 2000", "iterations = 1500"))
    command = f"{TRAIN} && {ADAPT}"
    recs = _records(_results(ACCS), tmp_path / "rec", _settings(), command=command)
    for rec in recs.values():
        assert rec["config"] is None
        # the training still counts: its CPU seconds and iterations are the run's own
        assert rec["budget"]["cpu_seconds"] == round(412.34 + 0.25, 1)
        assert rec["budget"]["iterations"] == 2000


def test_a_text_encoders_records_have_no_config_and_only_the_adaptation(tmp_path):
    recs = _records(_results({"probe-ridge": [0.8, 1.0]}), tmp_path / "rec",
                    recipe.AdaptSettings(tasks=2, approaches="probe-ridge"),
                    command="metaloop adapt --tasks 2")
    (rec,) = recs.values()
    assert rec["config"] is None and rec["command"] == "metaloop adapt --tasks 2"
    assert rec["budget"] == {"cpu_seconds": 0.2}


@pytest.mark.parametrize("command, found", [
    ("metaloop --threads 1 train --config a.toml --out runs/x && metaloop adapt",
     [{"config": "a.toml", "out": "runs/x"}]),
    ("OMP_NUM_THREADS=1 python -m metaloop train --config=b.toml --seed 3 --out=r && "
     "metaloop adapt", [{"config": "b.toml", "seed": "3", "out": "r"}]),
    ("metaloop adapt --model runs/x", []),
])
def test_the_train_commands_of_a_command_line(command, found):
    assert recipe._train_commands(command) == found
