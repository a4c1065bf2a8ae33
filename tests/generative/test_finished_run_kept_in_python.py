"""``metaloop.generative.experiment.run`` and ``sweep`` (and ``inversion.compare``) keep a
finished ``metaloop vae`` run as the command does: a new run into an ``out`` that holds one
raises the ValueError that ``metaloop vae`` turns into exit status 2 (the same text), before
anything is read, and changes no file there.

``metaloop.generative.inversion.transfer_study`` keeps a finished ``metaloop vae`` run as
the command (``--inversion-transfer``) does: it removed the run's model, metrics and pictures
and replaced its results.json, without a word; it now raises the ValueError that
``metaloop vae`` turns into exit status 2 (the same text), before anything is read, and
changes no file there."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from metaloop.generative import experiment as E
from metaloop.generative import inversion
from metaloop.recipes import generative as recipe


def _state(d: Path) -> dict:
    """Each file's bytes and modification time (ns), and no other file."""
    return {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in sorted(d.iterdir())}


def _finished(settings, out: Path) -> tuple[dict, str]:
    """A finished VAE run in ``out``: its files (``_state``) and what the command says of it."""
    E.run(settings, out)
    before = _state(out)
    assert {"results.json", "model.safetensors", "metrics.jsonl"} <= set(before)
    said = _command_says(out)
    assert said.startswith(f"{out} holds a finished metaloop vae run (--model vae, --data ")
    return before, said


def _command_says(out: Path) -> str:
    """What ``metaloop vae`` says of ``out`` (exit status 2) before it reads anything."""
    with pytest.raises(ValueError) as e:
        recipe._check_no_finished_run(out)
    return str(e.value)


@pytest.mark.parametrize("later", ["run", "run-ae", "sweep", "compare"])
def test_a_finished_vae_run_is_not_replaced_by_a_python_call(later, settings, tmp_path,
                                                             monkeypatch):
    """QA repro: the second ``E.run`` removed the first run's results.json, model and
    pictures, emptied its metrics.jsonl and wrote its own, without a word."""
    out = tmp_path / "v"
    before, said = _finished(settings, out)
    assert "--epochs 1" in said and "nothing was written or removed" in said
    if later != "compare":                 # run and sweep refuse before reading the data
        monkeypatch.setattr(E, "load_data", lambda *a, **k: pytest.fail("read the data"))
    call = {"run": lambda: E.run(settings, out),
            "run-ae": lambda: E.run(replace(settings, model="ae", epochs=2), str(out)),
            "sweep": lambda: E.sweep(settings, [2], out),
            "compare": lambda: inversion.compare(settings, inversion.InversionSettings(
                steps=1), out)}[later]
    with pytest.raises(ValueError) as e:
        call()
    assert str(e.value) == said
    assert _state(out) == before


def test_a_finished_sweep_is_not_replaced_by_a_python_run(settings, tmp_path):
    out = tmp_path / "s"
    E.sweep(settings, [2], out)
    before = _state(out)
    said = _command_says(out)
    assert "(--sweep-latent 2, --data " in said
    with pytest.raises(ValueError) as e:
        E.run(settings, out)
    assert str(e.value) == said
    assert _state(out) == before


def test_the_commands_check_and_the_librarys_are_one(settings, tmp_path):
    """``metaloop vae`` checks first (``_check_no_finished_run``, before the folder is made)
    and the library's own check says the same, so no run gets a second message."""
    out = tmp_path / "v"
    E.run(settings, out)
    said = _command_says(out)
    with pytest.raises(ValueError) as e:
        E.check_no_finished_run(out)
    assert str(e.value) == said


def _study(settings, out):
    return inversion.transfer_study(settings, inversion.InversionSettings(steps=2), [0.1], out)


def test_transfer_study_does_not_replace_a_finished_vae_run(settings, tmp_path, monkeypatch):
    out = tmp_path / "v"
    before, said = _finished(settings, out)
    monkeypatch.setattr(inversion, "_setup", lambda *a, **k: pytest.fail("read the data"))
    with pytest.raises(ValueError) as e:
        _study(settings, out)
    assert str(e.value) == said
    assert _state(out) == before


def test_transfer_study_does_not_replace_a_finished_study(settings, tmp_path):
    out = tmp_path / "t"
    _study(settings, out)
    before = _state(out)
    said = _command_says(out)
    assert "an inversion study" in said
    with pytest.raises(ValueError) as e:
        _study(settings, out)
    assert str(e.value) == said
    assert _state(out) == before
