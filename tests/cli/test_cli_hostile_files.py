"""Files from elsewhere that metaloop reads (a config, a downloaded run) are refused by name,
exit status 2, where they hold what no metaloop command writes: an integer past Python's
digit limit in a config, a checkpoint whose weights hold NaN, a stored config whose sizes
cannot be allocated."""

from __future__ import annotations

import argparse
import hashlib
import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from metaloop.cli import main as cli_main
from metaloop.cli.main import main
from tests.conftest import copy_run, edit_state, folder_config, write_image_folder

CONV_WEIGHT = "model.backbone.body.0.conv.weight"


@pytest.fixture(scope="module")
def folder_run(tmp_path_factory) -> tuple[Path, Path, Path]:
    """(a conv4 run of an image folder, a support folder of two classes, a query folder)."""
    base = tmp_path_factory.mktemp("hostile")
    images = write_image_folder(base / "images", classes=6, per_class=7, mixed=False)
    (base / "c.toml").write_text(folder_config(images))
    run = base / "run"
    assert main(["--threads", "1", "train", "--config", str(base / "c.toml"), "--out",
                 str(run), "--no-progress"]) == 0
    support = base / "support"
    for k in (0, 1):
        (support / f"class_{k:02d}").mkdir(parents=True)
        for i in range(2):
            src = images / f"class_{k:02d}" / f"{i:03d}.png"
            (support / f"class_{k:02d}" / src.name).write_bytes(src.read_bytes())
    query = base / "query"
    query.mkdir()
    (query / "q.png").write_bytes((images / "class_00" / "005.png").read_bytes())
    return run, support, query


def _newest(run: Path) -> Path:
    return run / (run / "LATEST").read_text().strip()


def _with_tensor(run: Path, name: str, value: torch.Tensor) -> None:
    """Replace one tensor of ``run``'s newest checkpoint, its sha256 entries rewritten as
    a consistent writer of the edited file would."""
    ckpt = _newest(run)
    tensors = load_file(str(ckpt / "tensors.safetensors"))
    tensors[name] = value
    save_file(tensors, str(ckpt / "tensors.safetensors"))
    digest = hashlib.sha256((ckpt / "tensors.safetensors").read_bytes()).hexdigest()
    edit_state(ckpt / "state.json", lambda s: s.update(tensors_sha256=digest))


def _err(argv: list[str], capsys) -> str:
    capsys.readouterr()
    assert main(["--threads", "1", *argv]) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and "Traceback" not in captured.err
    return captured.err.strip()


def test_a_config_integer_past_the_digit_limit_names_the_file(tmp_path, capsys):
    cfg = tmp_path / "big.toml"
    cfg.write_text("[family]\nways = " + "9" * 5000 + "\n")
    err = _err(["train", "--config", str(cfg), "--print-config"], capsys)
    assert err.startswith(f"metaloop train: error: config file {cfg} is not valid TOML: an "
                          f"integer of 5000 digits on line 2"), err
    assert "set_int_max_str_digits" not in err


@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_a_checkpoint_whose_weights_are_not_finite_is_refused_by_every_command(
        tmp_path, capsys, folder_run, value):
    run, support, query = folder_run
    bad = copy_run(run, tmp_path / "bad")
    weight = load_file(str(_newest(run) / "tensors.safetensors"))[CONV_WEIGHT]
    weight[0, 0, 0, 0] = value
    _with_tensor(bad, CONV_WEIGHT, weight)
    said = "NaN" if value != value else "inf"
    expected = f"checkpoint {_newest(bad)}: tensor {CONV_WEIGHT} holds 1 {said} of its "
    for argv in (["predict", "--checkpoint", str(bad), "--support", str(support), "--query",
                  str(query), "--no-progress"],
                 ["eval", "--checkpoint", str(bad), "--tasks", "2", "--no-progress"],
                 ["train", "--config", str(run.parent / "c.toml"), "--out", str(bad),
                  "--resume", "--no-progress"]):
        err = _err(argv, capsys)
        assert expected in err, (argv[0], err)
        assert "ridge_head" not in err and "features" not in err
    assert sorted(p.name for p in bad.iterdir()) == sorted(p.name for p in run.iterdir())


def test_out_of_memory_from_a_runs_stored_config_names_the_checkpoint_and_keys(
        tmp_path, capsys, folder_run):
    run, support, query = folder_run
    big = copy_run(run, tmp_path / "big")
    edit_state(_newest(big) / "state.json",
               lambda s: s["config"]["model"].update(channels=10**12))
    err = _err(["predict", "--checkpoint", str(big), "--support", str(support), "--query",
                str(query), "--no-progress"], capsys)
    assert err.startswith("metaloop predict: error: out of memory: could not allocate"), err
    assert (f"the model that a loaded run's stored config builds ({_newest(big)}: "
            f"model.channels = 1000000000000, family.image_size = 28, family.channels = 1)"
            in err), err


def test_the_memory_advice_names_each_loaded_runs_stored_sizes(tmp_path, folder_run):
    run, _, _ = folder_run
    mlp = tmp_path / "mlp" / "ckpt-00000003"
    mlp.mkdir(parents=True)
    (mlp / "state.json").write_text(json.dumps({"config": {"model": {"name": "mlp",
                                                                     "hidden": [8, 8]}}}))
    args = argparse.Namespace(command="eval", checkpoint=[run, mlp], ways=2, shots=1)
    text = cli_main._memory_text(MemoryError(), args)
    assert (f"({_newest(run)}: model.channels = 4, family.image_size = 28, family.channels = "
            f"1; {mlp}: model.hidden = [8, 8])" in text), text
    assert text.endswith("give smaller ones: --ways, --shots"), text
    # no loaded run (a folder that holds none, or a model by name): no clause
    for args in (argparse.Namespace(command="eval", checkpoint=[tmp_path], ways=2),
                 argparse.Namespace(command="adapt", model="minilm")):
        assert "stored config" not in cli_main._memory_text(MemoryError(), args)
