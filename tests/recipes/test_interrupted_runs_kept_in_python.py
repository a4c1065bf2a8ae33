"""The library functions behind ``metaloop forgetting`` and ``metaloop adapt`` keep an
interrupted run as the commands do: ``forgetting.run`` and ``adapt.run`` without ``resume``
into an ``out`` that holds their ``partial.json`` raised nothing and removed it (the kept work
lost, silently); they now raise the ValueError the command turns into exit status 2 (the same
text), with no file changed, and ``resume=True`` still continues the kept run."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch

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
    d = tmp_path_factory.mktemp("interrupted_forgetting")
    g = torch.Generator().manual_seed(0)
    y = torch.arange(6).repeat_interleave(8)
    x = torch.nn.functional.one_hot(y, 6).float() * 2 + torch.randn(len(y), 6, generator=g)
    np.savez(d / "d.npz", x=x.numpy(), y=y.numpy())
    return d / "d.npz"


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


@pytest.fixture(scope="module")
def sentences(tmp_path_factory):
    return write_sentences(tmp_path_factory.mktemp("interrupted_adapt") / "s.csv")


def test_adapt_run_refuses_to_discard_an_interrupted_run(wordnet_bert, sentences, tmp_path,
                                                         monkeypatch):
    """A run stopped after its first held-out task kept it in partial.json; a new ``run``
    removed it, where ``metaloop adapt`` refuses."""
    p = adapt.prepare(adapt.AdaptSettings(model=wordnet_bert, family="table",
                                          data=str(sentences), ways=2, shots=1, queries=2,
                                          tasks=2, approaches="probe-ridge"))
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
