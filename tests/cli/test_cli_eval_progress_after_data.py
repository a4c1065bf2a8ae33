"""``metaloop eval`` draws its held-out progress bar only once the held-out data is read and
checked, so a data error is all it prints; ``evaluate_run`` tells its ``progress`` 0 then."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

from metaloop.cli.main import main
from metaloop.recipes.evaluation import evaluate_run
from metaloop.runs import load_run

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from conftest import tensor_config, train_run, write_tensor_file  # noqa: E402

BAR = "held-out tasks"


@pytest.fixture(scope="module")
def vector_run(tmp_path_factory):
    """(run folder, its tensor file, the file's bytes): an R2D2 MLP on 6-d vectors whose
    [eval] draws 4 tasks."""
    d = tmp_path_factory.mktemp("eval_progress")
    path = write_tensor_file(d / "v.npz")
    return train_run(d, tensor_config(path)), path, path.read_bytes()


@pytest.fixture
def run(vector_run):
    """The run folder and its tensor file, written back after the test."""
    folder, path, data = vector_run
    yield folder, path
    path.write_bytes(data)


def _held_out_gone(folder: Path, path: Path) -> list[str]:
    """Keep only the training classes in the tensor file; returns the held-out ones."""
    classes = load_run(folder).classes
    f = np.load(path)
    rows = np.isin(f["y"], [int(c) for c in classes["train"]])
    np.savez(path, x=f["x"][rows], y=f["y"][rows])
    return classes["test"]


def test_the_bar_is_drawn_for_data_that_reads(run, capfd):
    folder, _ = run
    capfd.readouterr()
    assert main(["eval", "--checkpoint", str(folder)]) == 0
    captured = capfd.readouterr()
    assert BAR in captured.err and "mean ± 95% CI over 4 tasks" in captured.out


def test_held_out_classes_gone_print_the_error_and_no_bar(run, tmp_path, capfd):
    folder, path = run
    gone = _held_out_gone(folder, path)
    capfd.readouterr()
    assert main(["eval", "--checkpoint", str(folder), "--out", str(tmp_path / "ev")]) == 2
    captured = capfd.readouterr()
    assert captured.out == "" and not (tmp_path / "ev").exists()
    assert captured.err.startswith(
        f"metaloop eval: error: family.test_classes names {len(gone)} class(es) that the "
        f"data at {path} no longer has"), captured.err
    assert BAR not in captured.err and "%|" not in captured.err


def test_a_deleted_tensor_file_prints_the_error_and_no_bar(run, capfd):
    folder, path = run
    path.unlink()
    capfd.readouterr()
    assert main(["eval", "--checkpoint", str(folder)]) == 2
    captured = capfd.readouterr()
    assert captured.out == ""
    assert captured.err == (f"metaloop eval: error: tensor file {path} does not exist; if "
                            f"the run's data moved, --data-root PATH reads it at PATH\n")


def test_evaluate_run_reports_0_once_the_data_is_read(run):
    folder, path = run
    loaded = load_run(folder)
    calls: list[int] = []
    res = evaluate_run(loaded, progress=calls.append)
    assert calls[0] == 0 and sum(calls) == 4 and len(calls) > 1
    assert len(res["result"]["accuracy"]["mean"]) == 1
    _held_out_gone(folder, path)
    calls.clear()
    with pytest.raises(ValueError, match="no longer has"):
        evaluate_run(loaded, progress=calls.append)
    assert calls == []
