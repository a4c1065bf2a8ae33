"""A generative run stopped at any point (Ctrl-C, kill) leaves no stale or half-written
result: ``results.json`` and ``final-*.json`` are written last and atomically, pictures are
written through a temporary file, and a resumed protocol run rewrites its ``curve.json``."""

from __future__ import annotations

import json
import os

import pytest
import torch
from PIL import Image

from metaloop.generative import experiment as E
from metaloop.generative import inversion, plots, quality
from metaloop.generative import protocol as P
from metaloop.train import checkpoint as ckpt

# 3 stages = 1 + 3 + 9 = 13 passes over 64 tiny 8x8 images
TINY = P.ProtocolSettings(latent=3, hidden=(16, 16), stages=3, curve_k=7, curve_examples=20,
                          curve_every=2, checkpoint_every=5)


def _stop(*args, **kwargs):
    raise KeyboardInterrupt


def _leftovers(folder) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


def _complete_png(path) -> bool:
    try:
        with Image.open(path) as im:
            im.load()
        return True
    except (OSError, SyntaxError):
        return False


@pytest.mark.parametrize("stop_in", ["training", "model", "results"])
def test_a_vae_run_stopped_before_its_end_leaves_no_results_json(stop_in, settings, tmp_path,
                                                                  monkeypatch):
    out = tmp_path / "run"
    first = E.run(settings, out)                          # a finished earlier run
    assert json.loads((out / "results.json").read_text())["epochs_done"] == first[
        "epochs_done"] == 1
    # a new run over a finished one is refused (test_finished_run_kept_in_python): the
    # earlier run is one stopped before its results, whose model, log and pictures remain
    (out / "results.json").unlink()
    if stop_in == "training":     # Ctrl-C during the new run's epochs
        monkeypatch.setattr(E, "_train_model", _stop)
    elif stop_in == "model":      # killed while the weights are written
        def half_written(tensors, path):
            with open(path, "wb") as f:
                f.write(b"\0" * 10)
            raise KeyboardInterrupt
        monkeypatch.setattr(E, "save_file", half_written)
    else:                         # killed while results.json itself is written
        monkeypatch.setattr(os, "fsync", _stop)
    with pytest.raises(KeyboardInterrupt):
        E.run(E.Settings(**{**settings.__dict__, "epochs": 3}), out)
    monkeypatch.undo()
    # no results.json stands beside the new run's log and files, nor the earlier model, nor
    # a truncated new one (killed in results.json: the new model is whole)
    assert not (out / "results.json").exists()
    assert (out / "model.safetensors").exists() == (stop_in == "results")
    assert _leftovers(out) == []
    done = E.run(E.Settings(**{**settings.__dict__, "epochs": 2}), out)
    assert json.loads((out / "results.json").read_text())["epochs_done"] == done[
        "epochs_done"] == 2


@pytest.mark.parametrize("study", ["sweep", "compare"])
def test_a_stopped_sweep_or_comparison_leaves_no_earlier_files(study, settings,
                                                                        tmp_path, monkeypatch):
    out = tmp_path / study
    out.mkdir()
    # an earlier run stopped before its results.json (a finished run's, or a results.json
    # no metaloop command wrote, is refused before anything is removed: test_foreign_results)
    (out / "metrics.jsonl").write_text('{"epoch": 1}\n{"epoch": 2}\n')
    (out / "samples.png").write_bytes(b"\x89PNG")
    if study == "sweep":
        monkeypatch.setattr(quality, "train_classifier", _stop)
        call = lambda: E.sweep(settings, [2], out)                      # noqa: E731
    else:
        monkeypatch.setattr(inversion, "_classifiers", _stop)
        call = lambda: inversion.compare(settings, inversion.InversionSettings(), out)  # noqa
    with pytest.raises(KeyboardInterrupt):
        call()
    assert not (out / "results.json").exists() and not (out / "samples.png").exists()
    assert (out / "metrics.jsonl").read_text() == ""


def test_a_transfer_study_killed_while_writing_leaves_the_previous_results(settings, tmp_path,
                                                                           monkeypatch):
    out = tmp_path / "transfer"
    out.mkdir()
    (out / "results.json").write_text('{"rows": []}\n')
    monkeypatch.setattr(os, "fsync", _stop)
    with pytest.raises(KeyboardInterrupt):
        inversion.transfer_study(settings, inversion.InversionSettings(steps=2), [0.1], out)
    monkeypatch.undo()
    assert (out / "results.json").read_text() == '{"rows": []}\n'     # whole, not half
    assert _leftovers(out) == []


def test_a_stopped_picture_write_leaves_the_previous_picture(tmp_path, monkeypatch):
    path = tmp_path / "samples.png"
    plots.save_grid(torch.zeros(4, 1, 8, 8), path)
    before = path.read_bytes()

    def half_written(self, fp, *args, **kwargs):
        with open(fp, "wb") as f:
            f.write(before[:20])
        raise KeyboardInterrupt
    monkeypatch.setattr(Image.Image, "save", half_written)
    with pytest.raises(KeyboardInterrupt):
        plots.save_grid(torch.ones(4, 1, 8, 8), path)
    assert path.read_bytes() == before
    assert _leftovers(tmp_path) == []


def test_resuming_a_finished_run_rewrites_a_curve_json_a_kill_left_behind(images, x_test,
                                                                          tmp_path, monkeypatch):
    run = tmp_path / "run"
    real = ckpt.atomic_write_text

    def killed_at_the_end(path, text):        # killed between the last checkpoint and its curve
        if path.name == "curve.json" and json.loads(text)["passes"] == 13:
            raise KeyboardInterrupt
        real(path, text)
    monkeypatch.setattr(ckpt, "atomic_write_text", killed_at_the_end)
    with pytest.raises(KeyboardInterrupt):
        P.train_protocol(images, run, TINY, curve_fn=P.curve_evaluator(x_test, TINY))
    monkeypatch.undo()
    assert json.loads((run / "curve.json").read_text())["passes"] == 10   # the one before
    state = P.train_protocol(images, run, TINY, resume=True,
                             curve_fn=P.curve_evaluator(x_test, TINY))
    assert state["done"] and state["passes"] == 13
    curve = json.loads((run / "curve.json").read_text())
    saved = ckpt.load_checkpoint(run)[1]
    assert curve["passes"] == 13 and curve["curve"] == saved["curve"]
    assert curve["curve"][-1]["passes"] == 13


@pytest.mark.parametrize("how", ["stopped", "half_written"])
def test_an_evaluation_stopped_while_drawing_draws_its_samples_next_time(how, images, x_test,
                                                                         tmp_path, monkeypatch):
    run = tmp_path / "run"
    P.train_protocol(images, run, TINY, until_pass=4, curve_fn=P.curve_evaluator(x_test, TINY))
    if how == "stopped":
        monkeypatch.setattr(plots, "save_grid", _stop)
    else:
        def half_written(self, fp, *args, **kwargs):
            with open(fp, "wb") as f:
                f.write(b"\x89PNG\r\n\x1a\n")
            raise KeyboardInterrupt
        monkeypatch.setattr(Image.Image, "save", half_written)
    with pytest.raises(KeyboardInterrupt):
        P.evaluate_run(run, k=5, x_test=x_test, s=TINY)
    monkeypatch.undo()
    assert not (run / "samples.png").exists() and _leftovers(run) == []
    result = P.evaluate_run(run, k=5, x_test=x_test, s=TINY)
    assert "read_from" not in result                  # measured: no json marked it done
    assert _complete_png(run / "samples.png")
    assert (run / "final-k5-n30.json").exists()


def test_a_lost_samples_png_is_redrawn_from_the_checkpoint(images, x_test, tmp_path):
    run = tmp_path / "run"
    P.train_protocol(images, run, TINY, until_pass=4, curve_fn=P.curve_evaluator(x_test, TINY))
    P.evaluate_run(run, k=5, x_test=x_test, s=TINY)
    drawn = (run / "samples.png").read_bytes()
    (run / "samples.png").unlink()
    again = P.evaluate_run(run, k=5, x_test=x_test, s=TINY)
    assert again["read_from"] == "final-k5-n30.json"  # not measured again
    assert (run / "samples.png").read_bytes() == drawn


def test_a_new_run_removes_the_picture_temporaries_a_kill_left(settings, tmp_path):
    """A kill -9 while a picture was written leaves its ``.<name>.png.<pid>``; the next run
    into the folder removes it, as it removes the results' and the log's temporaries."""
    out = tmp_path / "run"
    out.mkdir()
    for name in (".samples.png.4242", ".results.json.k3j2x_ab", ".notes"):
        (out / name).write_bytes(b"\x89PNG")
    E.run(settings, out)
    assert _leftovers(out) == [".notes"]                  # not metaloop's: left alone
