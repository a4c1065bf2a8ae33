"""The library functions behind ``metaloop forgetting`` and ``metaloop adapt`` keep a finished
run as the commands do: ``forgetting.run`` and ``adapt.run`` without ``resume`` into an
``out`` that holds a finished run of theirs raise the ValueError the command turns into exit
status 2 (the same text), and change no file there; ``resume=True`` still adds seeds to a
finished forgetting run.

The library functions behind ``metaloop forgetting`` and ``metaloop adapt`` keep an
interrupted run as the commands do: ``forgetting.run`` and ``adapt.run`` without ``resume``
into an ``out`` that holds their ``partial.json`` raised nothing and removed it (the kept work
lost, silently); they now raise the ValueError the command turns into exit status 2 (the same
text), with no file changed, and ``resume=True`` still continues the kept run."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from metaloop.cli.main import main
from metaloop.recipes import adapt, forgetting

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "cli"))
from test_cli_adapt import write_sentences  # noqa: E402

TINY = {"strategies": "naive", "seeds": 2, "steps": 4, "eval_every": 2, "hidden": (8,),
        "batch_size": 8}


def _state(d: Path) -> dict:
    """Each file's bytes and modification time (ns), and no other file."""
    return {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in sorted(d.iterdir())}


@pytest.fixture(scope="module")
def npz(tmp_path_factory):
    d = tmp_path_factory.mktemp("kept_forgetting")
    g = torch.Generator().manual_seed(0)
    y = torch.arange(6).repeat_interleave(8)
    x = torch.nn.functional.one_hot(y, 6).float() * 2 + torch.randn(len(y), 6, generator=g)
    np.savez(d / "d.npz", x=x.numpy(), y=y.numpy())
    return d / "d.npz"


def _finished_forgetting(npz, out: Path, seeds: int = 2):
    exps = forgetting.experiences("split-data-class", data=npz)
    s = forgetting.settings("split-data-class", **(TINY | {"seeds": seeds}))
    runs, results = forgetting.run(s, exps, data={"data": npz}, out=out)
    forgetting.write(out, s, exps, runs, results)
    return s, exps


def test_forgetting_run_refuses_a_new_run_over_a_finished_one(npz, tmp_path):
    """QA repro: the second call removed the first run's results.json, runs.json, log and
    plots and wrote its own, without a word; ``metaloop forgetting`` refuses the same."""
    out = tmp_path / "f"
    s, exps = _finished_forgetting(npz, out)
    before = _state(out)
    assert "results.json" in before and forgetting.RUNS in before
    with pytest.raises(ValueError) as command:     # what the command says (exit 2)
        forgetting.check_resume(out, False, s)
    other = forgetting.settings("split-data-class", **(TINY | {"seeds": 1, "steps": 2}))
    for settings in (s, other):                    # the same run again, and another
        with pytest.raises(ValueError) as e:
            forgetting.run(settings, exps, data={"data": npz}, out=out)
        assert str(e.value) == str(command.value)
        assert _state(out) == before
    msg = str(command.value)
    assert msg.startswith(f"{out} holds a finished metaloop forgetting run (--scenario "
                          f"split-data-class, --strategies naive, --seeds 2, --steps 4)")
    assert "--resume and more --seeds" in msg and "nothing was written or removed" in msg
    # --resume with more seeds still adds them to it
    s3 = forgetting.settings("split-data-class", **(TINY | {"seeds": 3}))
    runs, results = forgetting.run(s3, exps, data={"data": npz}, out=out, resume=True)
    assert len(runs["naive"]) == 3


def test_forgetting_run_keeps_a_finished_runs_json_alone(npz, tmp_path):
    """Its results.json removed by hand, the runs.json that ``resume`` adds seeds to is kept
    too, as the command keeps it; so is a run stopped before moving its partial.json."""
    out = tmp_path / "f"
    s, exps = _finished_forgetting(npz, out, seeds=1)
    (out / "results.json").unlink()
    before = _state(out)
    with pytest.raises(ValueError, match="holds a finished metaloop forgetting run") as e:
        forgetting.run(s, exps, out=out)
    assert forgetting.RUNS in str(e.value)
    assert _state(out) == before


def test_forgetting_run_keeps_a_run_stopped_before_moving_its_partial_json(npz, tmp_path):
    out = tmp_path / "f"
    s, exps = _finished_forgetting(npz, out, seeds=1)
    (out / forgetting.RUNS).rename(out / forgetting.PARTIAL)
    assert forgetting.finished(out)
    before = _state(out)
    with pytest.raises(ValueError, match="holds a finished metaloop forgetting run"):
        forgetting.run(s, exps, out=out)
    assert _state(out) == before


@pytest.fixture(scope="module")
def sentences(tmp_path_factory):
    return write_sentences(tmp_path_factory.mktemp("kept_adapt") / "s.csv")


def _adapt_settings(model, data, tasks=2) -> adapt.AdaptSettings:
    return adapt.AdaptSettings(model=model, family="table", data=str(data), ways=2, shots=1,
                               queries=2, tasks=tasks, approaches="probe-ridge")


def test_adapt_run_refuses_a_new_run_over_a_finished_one(wordnet_bert, sentences, tmp_path):
    """QA repro: ``adapt.run`` removed the finished run's results.json and accuracy.png
    (once its approaches were built), which the caller then replaced; ``metaloop adapt``
    refuses the same."""
    out = tmp_path / "a"
    assert main(["--threads", "1", "adapt", "--model", wordnet_bert, "--family", "table",
                 "--data", str(sentences), "--ways", "2", "--shots", "1", "--queries", "2",
                 "--tasks", "2", "--approaches", "probe-ridge", "--out", str(out),
                 "--no-progress"]) == 0
    before = _state(out)
    assert {"results.json", "accuracy.png"} <= set(before)
    with pytest.raises(ValueError) as command:     # what the command says (exit 2)
        adapt.check_resume(out, False)
    for tasks in (2, 3):                           # the same run again, and another
        p = adapt.prepare(_adapt_settings(wordnet_bert, sentences, tasks))
        with pytest.raises(ValueError) as e:
            adapt.run(p, out)
        assert str(e.value) == str(command.value)
        assert _state(out) == before
    msg = str(command.value)
    assert msg.startswith(f"{out} holds a finished metaloop adapt run (--family table")
    assert "--approaches probe-ridge" in msg and "nothing was written or removed" in msg
    # a finished run whose partial.json was left (stopped while removing it): kept too
    (out / adapt.PARTIAL).write_text(json.dumps({"identity": {}, "tasks_done": 2, "per": {},
                                                 "eval_seconds": 0.0}))
    before = _state(out)
    with pytest.raises(ValueError, match="holds a finished metaloop adapt run"):
        adapt.run(p, out)
    assert _state(out) == before


def test_adapt_run_refuses_another_commands_run(wordnet_bert, sentences, tmp_path, npz):
    """``adapt.run`` removed a forgetting run's results.json, which ``metaloop adapt``
    refuses (``runs_folder.check``), with the same message."""
    out = tmp_path / "f"
    _finished_forgetting(npz, out, seeds=1)
    before = _state(out)
    with pytest.raises(ValueError) as command:
        adapt.check_resume(out, False)
    with pytest.raises(ValueError) as e:
        adapt.run(adapt.prepare(_adapt_settings(wordnet_bert, sentences)), out)
    assert str(e.value) == str(command.value)
    assert "holds a metaloop forgetting run, which a metaloop adapt run" in str(e.value)
    assert _state(out) == before


def test_forgetting_run_refuses_to_discard_an_interrupted_run(npz, tmp_path, monkeypatch):
    """QA repro: a run stopped after seed 0 kept it in partial.json; a new ``run`` (one seed)
    into the same folder removed it and kept its own, where ``metaloop forgetting`` says
    "holds an interrupted metaloop forgetting ... --resume continues it"."""
    exps = forgetting.experiences("split-data-class", data=npz)
    s = forgetting.settings("split-data-class", **TINY)
    out = tmp_path / "f"
    real = forgetting._one_seed

    def cut(s, exps, seed, update, strategies=None, on_unit=None):
        if seed == 1:
            raise KeyboardInterrupt
        return real(s, exps, seed, update, strategies, on_unit)

    with monkeypatch.context() as m:
        m.setattr(forgetting, "_one_seed", cut)
        with pytest.raises(KeyboardInterrupt):
            forgetting.run(s, exps, data={"data": npz}, out=out)
    before = _state(out)
    assert list(before) == [forgetting.PARTIAL]
    with pytest.raises(ValueError) as command:      # what the command says (exit 2)
        forgetting.check_resume(out, False, s)
    assert str(command.value).startswith(f"{out} holds an interrupted metaloop forgetting")
    one = forgetting.settings("split-data-class", **(TINY | {"seeds": 1}))
    for settings in (s, one):                       # the same run again, and another
        with pytest.raises(ValueError) as e:
            forgetting.run(settings, exps, data={"data": npz}, out=out)
        assert str(e.value) == str(command.value)
        assert _state(out) == before
    runs, _ = forgetting.run(s, exps, data={"data": npz}, out=out, resume=True)
    assert len(runs["naive"]) == 2


def test_adapt_run_refuses_to_discard_an_interrupted_run(wordnet_bert, sentences, tmp_path,
                                                         monkeypatch):
    """A run stopped after its first held-out task kept it in partial.json; a new ``run``
    removed it, where ``metaloop adapt`` refuses."""
    p = adapt.prepare(_adapt_settings(wordnet_bert, sentences))
    out = tmp_path / "a"
    real = adapt.evaluate_strategies

    def cut(*a, on_task, **kw):
        def once(per, done):
            on_task(per, done)
            raise KeyboardInterrupt
        return real(*a, on_task=once, **kw)

    with monkeypatch.context() as m:
        m.setattr(adapt, "evaluate_strategies", cut)
        with pytest.raises(KeyboardInterrupt):
            adapt.run(p, out)
    before = _state(out)
    assert adapt.PARTIAL in before and "results.json" not in before
    with pytest.raises(ValueError) as command:      # what the command says (exit 2)
        adapt.check_resume(out, False)
    assert str(command.value).startswith(f"{out} holds an interrupted metaloop adapt")
    with pytest.raises(ValueError) as e:
        adapt.run(p, out)
    assert str(e.value) == str(command.value)
    assert _state(out) == before
    res = adapt.run(p, out, resume=True)
    assert len(res["approaches"]["probe-ridge"]["per_task"]["accuracy"]) == 2
