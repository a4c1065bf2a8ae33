"""``metaloop eval --out`` over a folder that holds an earlier evaluation: the new results
never stand beside an old plot. The earlier ``results.json`` and ``*_vs_steps.png`` go
first, then the new ``results.json`` is written, and the plot last, through a temporary file:
an eval stopped while drawing keeps the numbers it computed."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from metaloop.cli.main import main
from metaloop.recipes import report
from metaloop.train.checkpoint import WriteError

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from conftest import tensor_config, train_run, write_tensor_file  # noqa: E402

SINUSOID = ('[family]\nname = "sinusoid"\n[model]\nname = "mlp"\nhidden = [8]\n'
            '[method]\nname = "maml"\ninner_lr = 0.01\ninner_steps = 1\n'
            '[train]\niterations = 2\nmeta_batch = 2\ncheckpoint_every = 2\n'
            '[eval]\ntasks = 2\nsteps = [0, 1]\n')


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """A sinusoid run (its eval plots the loss) and a tensors run (it plots the accuracy)."""
    d = tmp_path_factory.mktemp("eval_out_folder")
    return {"loss": train_run(d / "sin", SINUSOID),
            "accuracy": train_run(d / "ten", tensor_config(write_tensor_file(d / "f.npz")))}


def _eval(run: Path, out: Path) -> int:
    return main(["eval", "--checkpoint", str(run), "--no-progress", "--out", str(out)])


def test_an_eval_of_the_other_metric_removes_the_earlier_plot(runs, tmp_path):
    out = tmp_path / "ev"
    assert _eval(runs["loss"], out) == 0
    assert (out / "loss_vs_steps.png").is_file()
    assert _eval(runs["accuracy"], out) == 0
    assert json.loads((out / "results.json").read_text())["metric"] == "accuracy"
    assert (out / "accuracy_vs_steps.png").is_file()
    assert not (out / "loss_vs_steps.png").exists()          # no stale plot beside it
    assert _eval(runs["loss"], out) == 0
    assert sorted(p.name for p in out.glob("*_vs_steps.png")) == ["loss_vs_steps.png"]


def test_an_eval_stopped_at_its_plot_keeps_its_results_and_no_old_plot(
        runs, tmp_path, monkeypatch):
    """Stopped while its plot was written (a kill: here KeyboardInterrupt from savefig), a
    rerun over an older --out keeps its new results.json, with neither the old plot beside it
    nor a temporary file."""
    out = tmp_path / "ev"
    assert _eval(runs["loss"], out) == 0
    old_plot = (out / "loss_vs_steps.png").read_bytes()

    def stopped(self, fname, **kw):
        Path(fname).write_bytes(b"half a png")
        raise KeyboardInterrupt
    monkeypatch.setattr(report.Figure, "savefig", stopped)
    assert _eval(runs["loss"], out) == 130
    assert json.loads((out / "results.json").read_text())["metric"] == "loss"
    assert sorted(p.name for p in out.iterdir()) == ["results.json"]
    assert old_plot                                            # it was there, and went first


def test_a_plot_that_cannot_be_written_is_named_and_exits_2(runs, tmp_path, monkeypatch,
                                                             capsys):
    out = tmp_path / "ev"
    assert _eval(runs["accuracy"], out) == 0

    def full(self, fname, **kw):
        raise OSError(28, "No space left on device")
    monkeypatch.setattr(report.Figure, "savefig", full)
    capsys.readouterr()
    assert _eval(runs["accuracy"], out) == 2
    err = capsys.readouterr().err
    assert f"metaloop eval: error: cannot write {out / 'accuracy_vs_steps.png'}: No space " \
        "left on device" in err, err
    assert "Traceback" not in err
    # the numbers kept, no half plot and no old one beside them
    assert sorted(p.name for p in out.iterdir()) == ["results.json"]


def test_save_figure_keeps_the_earlier_file_when_the_write_fails(tmp_path, monkeypatch):
    path = tmp_path / "p.png"
    path.write_bytes(b"earlier")
    fig = report.figure((2, 2))

    def full(self, fname, **kw):
        Path(fname).write_bytes(b"half")
        raise OSError(28, "No space left on device")
    monkeypatch.setattr(report.Figure, "savefig", full)
    with pytest.raises(WriteError, match=f"cannot write {path}: No space left on device"):
        report.save_figure(fig, path, 100)
    assert path.read_bytes() == b"earlier"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["p.png"]
