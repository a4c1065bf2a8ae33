"""A file that cannot be written (a full disk, safetensors' "File too large") is named in a
``WriteError`` (exit status 2 on the command line), never a traceback; what was there before
stays as it was, and no temporary file is left. A damaged ``LATEST`` names the checkpoints
the run keeps."""

from __future__ import annotations

import errno
from pathlib import Path

import pytest
import torch
from safetensors import SafetensorError

from metaloop.cli.main import main
from metaloop.generative import experiment, plots
from metaloop.recipes import adapt
from metaloop.train import checkpoint
from metaloop.train.checkpoint import WriteError

TOO_LARGE = "Error while serializing: I/O error: File too large (os error 27)"


def _too_large(*args, **kwargs):
    raise SafetensorError(TOO_LARGE)


def _full_disk(*args, **kwargs):
    raise OSError(errno.ENOSPC, "No space left on device")


def test_a_checkpoint_safetensors_cannot_write_is_a_named_write_error(tmp_path, monkeypatch):
    run = tmp_path / "run"
    checkpoint.save_checkpoint(run, 1, {"w": torch.ones(2)}, {})
    monkeypatch.setattr(checkpoint, "save_file", _too_large)
    with pytest.raises(WriteError, match=f"cannot write {run / 'ckpt-00000002'}: .*File too "
                                         "large"):
        checkpoint.save_checkpoint(run, 2, {"w": torch.ones(2)}, {})
    assert (run / "LATEST").read_text() == "ckpt-00000001\n"
    assert sorted(p.name for p in run.iterdir()) == ["LATEST", "ckpt-00000001"]


def test_train_on_a_full_disk_exits_2_naming_the_checkpoint(tmp_path, monkeypatch, capsys):
    config = tmp_path / "c.toml"
    config.write_text('[family]\nname = "sinusoid"\n[model]\nname = "mlp"\nhidden = [8]\n'
                      '[method]\nname = "maml"\ninner_lr = 0.01\ninner_steps = 1\n'
                      '[train]\niterations = 2\nmeta_batch = 2\ncheckpoint_every = 2\n'
                      '[eval]\ntasks = 2\nsteps = [0, 1]\n')
    monkeypatch.setattr(checkpoint, "save_file", _too_large)
    out = tmp_path / "run"
    assert main(["train", "--config", str(config), "--out", str(out), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert f"metaloop train: error: cannot write {out / 'ckpt-00000002'}: " in err, err
    assert "File too large" in err and "Traceback" not in err
    assert not list(out.glob(".ckpt-*")) and not (out / "LATEST").exists()


@pytest.mark.parametrize("failure", [_too_large, _full_disk], ids=["too-large", "full-disk"])
def test_a_vae_model_that_cannot_be_written_is_named(tmp_path, monkeypatch, failure):
    path = tmp_path / "model.safetensors"
    path.write_bytes(b"earlier")
    monkeypatch.setattr(experiment, "save_file", failure)
    with pytest.raises(WriteError, match=f"cannot write {path}: "):
        experiment._save_model(torch.nn.Linear(2, 2), path)
    assert path.read_bytes() == b"earlier"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.safetensors"]


def test_a_vae_picture_that_cannot_be_written_is_named(tmp_path, monkeypatch):
    from PIL import Image

    path = tmp_path / "samples.png"
    monkeypatch.setattr(Image.Image, "save", _full_disk)
    with pytest.raises(WriteError, match=f"cannot write {path}: No space left on device"):
        plots.save_grid(torch.rand(4, 1, 28, 28), path)
    assert list(tmp_path.iterdir()) == []


def test_the_adapt_bar_chart_that_cannot_be_written_is_named(tmp_path, monkeypatch):
    from matplotlib.figure import Figure

    path = tmp_path / "accuracy.png"
    results = {"linear probe": {"approach": 1, "accuracy": {"mean": 0.5, "ci95": 0.1}}}
    monkeypatch.setattr(Figure, "savefig", _full_disk)
    with pytest.raises(WriteError, match=f"cannot write {path}: No space left on device"):
        adapt.bar_chart(results, path, "title")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("latest", ["", "\n", "garbage\n"], ids=["empty", "newline", "text"])
def test_a_damaged_latest_names_the_kept_checkpoints(tmp_path, latest):
    run = tmp_path / "run"
    for i in (1, 2):
        checkpoint.save_checkpoint(run, i, {"w": torch.full((2,), float(i))}, {})
    (run / "LATEST").write_text(latest)
    keeps = (f"; the run also keeps ckpt-00000002, an earlier checkpoint: write its name into "
             f"{run / 'LATEST'} to go on from it")
    with pytest.raises(ValueError) as e:
        checkpoint.latest_checkpoint(run)
    assert f"{run / 'LATEST'} is corrupt" in str(e.value) and str(e.value).endswith(keeps)
    with pytest.raises(ValueError) as e:
        checkpoint.load_checkpoint(run)
    assert str(e.value).count("the run also keeps") == 1 and str(e.value).endswith(keeps)


def test_a_damaged_latest_of_a_run_without_checkpoints_names_none(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "LATEST").write_text("")
    with pytest.raises(ValueError, match="is corrupt: it holds '', not the name of a ckpt-\\* "
                                         "directory$"):
        checkpoint.latest_checkpoint(run)


def test_train_resume_of_an_empty_latest_names_the_kept_checkpoint(tmp_path, capsys):
    run = tmp_path / "run"
    checkpoint.save_checkpoint(run, 1, {"w": torch.ones(2)}, {})
    (run / "LATEST").write_text("")
    config = Path(tmp_path / "c.toml")
    config.write_text('[family]\nname = "sinusoid"\n[model]\nname = "mlp"\nhidden = [8]\n'
                      '[method]\nname = "maml"\ninner_lr = 0.01\ninner_steps = 1\n'
                      '[train]\niterations = 2\nmeta_batch = 2\ncheckpoint_every = 2\n')
    assert main(["train", "--config", str(config), "--out", str(run), "--resume",
                 "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "LATEST is corrupt: it holds ''" in err and "the run also keeps ckpt-00000001" in err
