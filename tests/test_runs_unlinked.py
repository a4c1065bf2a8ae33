"""A run folder whose ``LATEST`` is lost but whose ``ckpt-*`` folders are intact: loading it
(``metaloop eval``, ``predict``, ``adapt``: ``load_run``) and resuming it from Python
(``recipes.training.prepare``) name the newest intact checkpoint and the line that links it
again, as ``metaloop train`` does."""

from __future__ import annotations

import pytest
import torch

import metaloop as ml
from metaloop.runs import load_run


def _run_without_latest(tmp_path):
    model = ml.models.MLP(in_dim=1, hidden=(4,), out_dim=1)
    learner = ml.meta.MAML(model, inner_lr=0.01, loss="mse")
    torch.manual_seed(0)
    ml.train(learner, ml.tasks.Sinusoid(shots=2, queries=2), iterations=4, meta_batch=2,
             progress=False, out_dir=tmp_path / "r", checkpoint_every=2)
    (tmp_path / "r" / "LATEST").unlink()
    return tmp_path / "r"


def test_loading_a_run_without_latest_names_the_intact_checkpoint(tmp_path):
    run = _run_without_latest(tmp_path)
    with pytest.raises(ValueError, match=r"ckpt-00000004 is intact: echo ckpt-00000004 > "):
        load_run(run)


def test_resuming_from_python_names_the_intact_checkpoint(tmp_path):
    from metaloop.recipes import training

    run = _run_without_latest(tmp_path)
    with pytest.raises(ValueError, match=r"no LATEST file\): .*ckpt-00000004 is intact"):
        training.prepare(str(run), resume=True)
