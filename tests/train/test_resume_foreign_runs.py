"""A run folder of another command (``metaloop vae --protocol iwae`` and ``metaloop train``
share the checkpoint format) is named as what it is, with exit status 2 and left as it was:
it was a KeyError traceback (vae) or "the checkpoint is corrupt" (train, eval)."""

import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import metaloop as ml
from metaloop.cli.main import main
from metaloop.runs import load_run
from metaloop.train.checkpoint import save_checkpoint

sys.path.insert(0, str(Path(__file__).parent))
from _cli import write_config  # noqa: E402


def _snapshot(run: Path) -> dict:
    return {str(p.relative_to(run)): p.read_bytes() for p in sorted(run.rglob("*"))
            if p.is_file()}


@pytest.fixture
def vae_run(tmp_path):
    """A checkpoint as ``metaloop vae --protocol iwae`` writes it (settings, passes)."""
    run = tmp_path / "vae"
    save_checkpoint(run, 4, {"model.w": torch.zeros(2)},
                    {"passes": 4, "total_passes": 4, "settings": {"latent": 2}, "curve": []})
    return run


def test_train_resume_and_eval_name_a_vae_run(vae_run, tmp_path, capsys):
    before = _snapshot(vae_run)
    says = (f"{vae_run} holds a VAE of metaloop vae --protocol iwae (at pass 4), not a "
            f"meta-learning run: measure it with metaloop vae --protocol iwae --evaluate "
            f"--out {vae_run}")
    with pytest.raises(ValueError, match="holds a VAE of metaloop vae"):
        load_run(vae_run)
    assert main(["train", "--resume", str(vae_run), "--no-progress"]) == 2
    assert capsys.readouterr().err == f"metaloop train: error: {says}\n"
    assert main(["eval", "--checkpoint", str(vae_run), "--no-progress"]) == 2
    assert capsys.readouterr().err == f"metaloop eval: error: {says}\n"
    cfg = write_config(tmp_path / "c.toml", iterations=2, meta_batch=2, checkpoint_every=1,
                       seed=0)
    assert main(["train", "--resume", str(vae_run), "--config", str(cfg),
                 "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"metaloop train: error: refusing to resume {vae_run}: it holds a "
                          f"VAE of metaloop vae --protocol iwae (at pass 4)"), err
    with pytest.raises(ValueError, match="it holds a VAE of metaloop vae"):
        ml.train(ml.meta.MAML(ml.models.MLP(1, (8,), 1), 0.01, 1), ml.tasks.Sinusoid(5, 5),
                 iterations=6, meta_batch=2, out_dir=vae_run, resume=True, progress=False)
    assert _snapshot(vae_run) == before


@pytest.mark.parametrize("flags", [["--evaluate", "--k", "5"], ["--resume"], []])
def test_vae_protocol_names_a_meta_learning_run(tmp_path, capsys, flags):
    cfg = write_config(tmp_path / "c.toml", iterations=2, meta_batch=2, checkpoint_every=1,
                       seed=0)
    run = tmp_path / "run"
    assert main(["train", "--config", str(cfg), "--out", str(run), "--no-progress"]) == 0
    x = (np.random.default_rng(0).random((20, 1, 28, 28)) > 0.8).astype(np.uint8) * 255
    np.savez(tmp_path / "d.npz", x=x, y=np.repeat(np.arange(4), 5))
    capsys.readouterr()
    before = _snapshot(run)
    assert main(["vae", "--protocol", "iwae", "--data", str(tmp_path / "d.npz"), "--out",
                 str(run), *flags, "--no-progress"]) == 2
    assert capsys.readouterr().err == (
        f"metaloop vae: error: {run} holds a meta-learning run (metaloop train or compare, "
        f"at iteration 2), not a --protocol iwae run: give the --out of a --protocol iwae "
        f"run, or another --out for a new one\n")
    assert _snapshot(run) == before
