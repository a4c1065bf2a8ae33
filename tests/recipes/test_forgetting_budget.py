"""The CPU seconds of ``metaloop.recipes.forgetting.run``: measured by the recipe, so that its
records carry the run's CPU budget from Python as from the command line; a resumed run's
are the sum of its segments'."""

from __future__ import annotations

import json
import time

import numpy as np
import pytest
import torch

from metaloop.recipes import forgetting

BURN, SLEEP = 0.15, 0.2        # CPU seconds each (seed, strategy) run spends, and idles


def _burn(seconds: float) -> None:
    end = time.process_time() + seconds
    while time.process_time() < end:
        pass


@pytest.fixture
def timed(monkeypatch):
    """``_one_seed`` without training: each (seed, strategy) run spends ``BURN`` seconds of
    CPU and sleeps ``SLEEP``, then is kept (``on_unit``)."""
    def one_seed(s, exps, seed, update, strategies=None, on_unit=None):
        out = {}
        for name in strategies or s["strategies"]:
            _burn(BURN)
            time.sleep(SLEEP)
            m = torch.tensor([[0.9, 0.0], [0.5, 0.8]], dtype=torch.float64)
            curve = [{"step": 1, "experience": 1,
                      "accuracy": {e.name: 0.5 for e in exps}}]
            out[name] = {"seed": seed, "matrix": m, "curve": curve, "boundaries": [4],
                         "wall_s": BURN + SLEEP}
            if on_unit is not None:
                on_unit(name, out[name])
        return out
    monkeypatch.setattr(forgetting, "_one_seed", one_seed)


@pytest.fixture
def exps(tmp_path):
    x = np.arange(4).repeat(10)[:, None] * np.ones((1, 4), np.float32)
    np.savez(tmp_path / "d.npz", x=x, y=np.arange(4).repeat(10))
    return forgetting.experiences("split-data-class", data=tmp_path / "d.npz")


def test_records_from_python_carry_the_runs_cpu_seconds(timed, exps, tmp_path):
    """No command line measures the run: ``run`` does, and ``records`` gives its CPU seconds
    as the budget, not its wall-clock seconds (the idle time is not counted)."""
    s = forgetting.settings("split-data-class", strategies="naive,replay", seeds=2)
    _, results = forgetting.run(s, exps)
    cpu = results["cpu_seconds"]
    assert 4 * BURN <= cpu < results["wall_s"] - 4 * SLEEP / 2, results["wall_s"]
    recs = forgetting.records(results, tmp_path / "records", command="python run.py")
    assert len(recs) == 2
    for rec in recs.values():
        assert rec["budget"] == {"iterations": s["pretrain_steps"] + s["steps"],
                                 "cpu_seconds": round(cpu, 1)}


def _cut_after(monkeypatch, n: int) -> None:
    """The run stops (KeyboardInterrupt) once ``n`` (seed, strategy) runs have been kept."""
    real, done = forgetting._one_seed, []

    def cut(s, exps, seed, update, strategies=None, on_unit=None):
        def each(name, r):
            on_unit(name, r)
            done.append(name)
            if len(done) == n:
                raise KeyboardInterrupt
        return real(s, exps, seed, update, strategies, each)
    monkeypatch.setattr(forgetting, "_one_seed", cut)


def _stopped(exps, out, monkeypatch, n: int) -> tuple[dict, dict]:
    """The settings of a 2-seed run stopped after ``n`` kept runs in ``out``, and what it
    kept (its partial.json)."""
    s = forgetting.settings("split-data-class", strategies="naive,replay", seeds=2)
    with monkeypatch.context() as m:
        _cut_after(m, n)
        with pytest.raises(KeyboardInterrupt):
            forgetting.run(s, exps, out=out)
    return s, json.loads((out / forgetting.PARTIAL).read_text())


def test_a_resumed_runs_cpu_seconds_are_the_sum_of_its_segments(timed, exps, tmp_path,
                                                                monkeypatch):
    out = tmp_path / "out"
    s, kept = _stopped(exps, out, monkeypatch, 3)
    assert kept["cpu_seconds"] >= 3 * BURN
    t0 = time.process_time()
    runs, results = forgetting.run(s, exps, out=out, resume=True)
    this = time.process_time() - t0                   # one run left
    assert BURN <= this < 2 * BURN
    assert results["cpu_seconds"] == pytest.approx(kept["cpu_seconds"] + this, abs=0.05)
    forgetting.write(out, s, exps, runs, results)
    written = json.loads((out / "results.json").read_text())
    assert written["cpu_seconds"] == results["cpu_seconds"]
    # a finished run's records, from its results.json: the same budget
    (rec, *_) = forgetting.records(written, tmp_path / "records", command="x").values()
    assert rec["budget"]["cpu_seconds"] == round(results["cpu_seconds"], 1)


def test_a_kept_run_without_cpu_seconds_counts_its_wall_clock(timed, exps, tmp_path,
                                                              monkeypatch):
    """A partial.json of an earlier metaloop kept only its wall-clock seconds: they stand in
    for its CPU seconds, as they did in the budget before."""
    out = tmp_path / "out"
    s, kept = _stopped(exps, out, monkeypatch, 3)
    del kept["cpu_seconds"]
    kept["wall_s"] = 100.0
    (out / forgetting.PARTIAL).write_text(json.dumps(kept))
    _, results = forgetting.run(s, exps, out=out, resume=True)
    assert 100.0 + BURN <= results["cpu_seconds"] < 100.0 + 2 * BURN
    assert results["wall_s"] >= 100.0 + BURN + SLEEP


@pytest.mark.parametrize("bad", ["many", None, [1.0]])
def test_a_kept_run_with_bad_cpu_seconds_is_corrupt(timed, exps, tmp_path, monkeypatch, bad):
    out = tmp_path / "out"
    s, kept = _stopped(exps, out, monkeypatch, 1)
    (out / forgetting.PARTIAL).write_text(json.dumps({**kept, "cpu_seconds": bad}))
    before = (out / forgetting.PARTIAL).read_bytes()
    with pytest.raises(ValueError, match=rf"{forgetting.PARTIAL} is corrupt"):
        forgetting.run(s, exps, out=out, resume=True)
    assert (out / forgetting.PARTIAL).read_bytes() == before
