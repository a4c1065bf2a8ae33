"""``metaloop forgetting`` keeps no checkpoint (an interrupted run starts again): what a run
cut short leaves in an --out that holds an earlier run's results must not pass for a
finished result."""

import json

import numpy as np
import pytest
import torch

from metaloop.recipes import forgetting


def _fixed_seeds(monkeypatch, matrix):
    def one_seed(s, exps, seed, tick=None, data=None):
        r = torch.tensor(matrix, dtype=torch.float64)
        curve = [{"step": 0, "experience": 0, "accuracy": {e.name: 0.5 for e in exps}}]
        return {name: {"seed": seed, "matrix": r, "curve": curve, "boundaries": [0, 4],
                       "wall_s": 0.0} for name in s["strategies"]}
    monkeypatch.setattr(forgetting, "_one_seed", one_seed)


def _exps(tmp_path):
    x = np.arange(4).repeat(10)[:, None] * np.ones((1, 4), np.float32)
    np.savez(tmp_path / "d.npz", x=x.astype(np.float32), y=np.arange(4).repeat(10))
    return forgetting.experiences("split-data-class", data=tmp_path / "d.npz")


@pytest.mark.parametrize("at", ["old_accuracy_curves", "matrix_heatmaps"])
def test_a_rerun_cut_short_leaves_no_earlier_results_beside_its_files(monkeypatch, tmp_path,
                                                                      at):
    """A second run into the same --out, stopped after it had replaced metrics.jsonl (or a
    plot), left the first run's results.json beside the second run's files, a finished
    result that no run gave. (A kill at that moment leaves what Ctrl-C's cleanup does not
    get to remove: results.json must already be gone.)"""
    from metaloop.continual import plots

    exps = _exps(tmp_path)
    out = tmp_path / "out"
    out.mkdir()
    _fixed_seeds(monkeypatch, [[0.9, 0.1], [0.5, 0.8]])
    s = forgetting.settings("split-data-class", strategies="naive", seeds=1, steps=4)
    forgetting.write(out, s, exps, *forgetting.run(s, exps, lambda n: None))
    assert json.loads((out / "results.json").read_text())["settings"]["steps"] == 4

    _fixed_seeds(monkeypatch, [[0.7, 0.2], [0.3, 0.6]])
    s = forgetting.settings("split-data-class", strategies="naive", seeds=1, steps=8)
    runs, results = forgetting.run(s, exps, lambda n: None)
    seen, plot = {}, getattr(plots, at)

    def killed(*a, **k):
        seen.update({p.name: p.read_bytes() for p in out.iterdir()})   # what a kill leaves
        raise KeyboardInterrupt
    monkeypatch.setattr(plots, at, killed)
    with pytest.raises(KeyboardInterrupt):
        forgetting.write(out, s, exps, runs, results)
    assert "results.json" not in seen, sorted(seen)
    assert not (out / "results.json").exists()
    monkeypatch.setattr(plots, at, plot)
    forgetting.write(out, s, exps, runs, results)        # the run again: complete
    assert json.loads((out / "results.json").read_text())["settings"]["steps"] == 8
