"""A run of an MLP on a tensor file's feature vectors loads without its data: ``load_run``
sizes the MLP from the stored weights, so the tensor file may have moved or changed since
training; ``predict`` on given files works then, and what reads the held-out data
(``metaloop eval``, ``Run.heldout``) still names the change."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from metaloop.cli.main import main
from metaloop.runs import load_run

sys.path.insert(0, str(Path(__file__).resolve().parent))
from conftest import tensor_config, train_run, write_tensor_file  # noqa: E402

CASES = {   # method lines, hidden widths: a first layer body.fc0 (wrapped by MAML), or none
    "maml": ('name = "maml"\ninner_lr = 0.1\n', "[16]"),
    "protonet-linear": ('name = "protonet"\n', "[]"),
}


@pytest.fixture(scope="module", params=sorted(CASES))
def vector_run(request, tmp_path_factory):
    """(run folder, its tensor file, the file's bytes): an MLP trained on 6-d vectors."""
    d = tmp_path_factory.mktemp("feature_input")
    path = write_tensor_file(d / "v.npz")
    method, hidden = CASES[request.param]
    cfg = tensor_config(path, method).replace("hidden = [16]", f"hidden = {hidden}")
    return train_run(d, cfg), path, path.read_bytes()


@pytest.fixture
def run(vector_run):
    """The run folder and its tensor file, which a test may delete or change: it is
    written back afterwards."""
    folder, path, data = vector_run
    yield folder, path
    path.write_bytes(data)


def _change(path: Path, dim: int = 6, keep=None) -> None:
    """Write ``path`` again: 12 classes of 10 random vectors [dim], or only the labels
    ``keep`` of the original file."""
    if keep is None:
        y = torch.arange(12).repeat_interleave(10)                                # [120]
        np.savez(path, x=torch.randn(120, dim).numpy(), y=y.numpy())
        return
    f = np.load(path)
    rows = np.isin(f["y"], keep)
    x, y = f["x"][rows], f["y"][rows]
    np.savez(path, x=x, y=y)


def _weights(r) -> dict:
    return {k: v.detach().clone() for k, v in r.learner.model.state_dict().items()}


def _same(a: dict, b: dict) -> None:
    assert a.keys() == b.keys() and a
    for k in a:
        assert torch.equal(a[k], b[k]), k


@pytest.mark.parametrize("how", ["deleted", "wider vectors", "other vectors"])
def test_the_run_loads_the_same_weights_whatever_became_of_its_data(run, how):
    folder, path = run
    before = load_run(folder)
    if how == "deleted":
        path.unlink()
    else:
        _change(path, dim=9 if how == "wider vectors" else 6)
    after = load_run(folder)
    _same(_weights(before), _weights(after))
    assert after.config == before.config and after.data == before.data
    assert after.data["example_shape"] == [6]
    first = next(m for m in after.network.modules() if isinstance(m, torch.nn.Linear))
    assert first.in_features == 6


def _files(d: Path) -> tuple[Path, Path]:
    """support.npz (two examples of labels 0 and 1, near 3 x one-hot) and query.npz."""
    g = torch.Generator().manual_seed(1)
    y = torch.tensor([0, 1, 0, 1])
    x = torch.randn(4, 6, generator=g) * 0.1 + torch.nn.functional.one_hot(y, 6) * 3
    np.savez(d / "support.npz", x=x.numpy(), y=y.numpy())
    np.savez(d / "query.npz", x=(x + torch.randn(4, 6, generator=g) * 0.1).numpy())
    return d / "support.npz", d / "query.npz"


def test_predict_on_given_files_works_without_the_training_data(run, tmp_path, capsys):
    folder, path = run
    s, q = _files(tmp_path)
    argv = ["predict", "--checkpoint", str(folder), "--support", str(s), "--query", str(q),
            "--json"]
    capsys.readouterr()
    assert main(argv) == 0
    want = json.loads(capsys.readouterr().out)
    path.unlink()
    assert main(argv) == 0
    got = json.loads(capsys.readouterr().out)
    assert got == want and [r["index"] for r in got] == [0, 1, 2, 3]


def _eval_refused(folder: Path, tmp_path: Path, capsys) -> str:
    out = tmp_path / "ev"
    capsys.readouterr()
    assert main(["eval", "--checkpoint", str(folder), "--no-progress", "--out", str(out)]) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and not out.exists()
    return captured.err


def test_eval_still_names_a_deleted_tensor_file(run, tmp_path, capsys):
    folder, path = run
    path.unlink()
    err = _eval_refused(folder, tmp_path, capsys)
    assert f"metaloop eval: error: tensor file {path} does not exist" in err, err


def test_eval_names_vectors_of_another_shape(run, tmp_path, capsys):
    folder, path = run
    _change(path, dim=9)
    err = _eval_refused(folder, tmp_path, capsys)
    assert (f"tensor file {path} now holds examples of shape [9], but {folder} was trained on "
            f"examples of shape [6]: the data changed since the run was trained") in err, err
    with pytest.raises(ValueError, match=r"now holds examples of shape \[9\]"):
        load_run(folder).heldout()


def test_eval_names_held_out_classes_gone_from_the_file(run, tmp_path, capsys):
    folder, path = run
    held_out = load_run(folder).classes["test"]
    _change(path, keep=[int(c) for c in load_run(folder).classes["train"]])
    err = _eval_refused(folder, tmp_path, capsys)
    assert (f"family.test_classes names {len(held_out)} class(es) that the data at {path} no "
            f"longer has") in err, err
