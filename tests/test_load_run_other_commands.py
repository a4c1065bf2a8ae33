"""``ml.load_run`` on a folder it cannot load names what the folder holds and what to use
instead, with the ValueError it documents: a LoRA meta-training run of ``metaloop adapt
--meta`` (a flat config), and a ``LATEST`` that names a checkpoint without its files."""

import re
import shutil

import pytest
import torch

import metaloop as ml
from metaloop import config


@pytest.fixture(scope="module")
def adapt_meta_run(tmp_path_factory):
    """A run folder as ``metaloop adapt --meta fomaml`` writes one in ``--meta-dir``: trained
    by ``ml.train`` with the flat config that ``metaloop.recipes.adapt`` stores."""
    run = tmp_path_factory.mktemp("adapt") / "meta" / "fomaml"
    torch.manual_seed(0)
    learner = ml.meta.MAML(ml.models.MLP(1, (8,), 1), first_order=True)
    flat = {"method": "fomaml", "model": "minilm", "family": "wordnet", "ways": 5,
            "shots": 4, "queries": 4, "max_length": 32, "iterations": 2, "meta_batch": 2,
            "outer_lr": 0.001, "r": 8, "alpha": 16.0, "target_modules": ["query", "value"],
            "inner_lr": 0.01, "inner_steps": 5, "first_order": True}
    ml.train(learner, ml.tasks.Sinusoid(5, 5), iterations=2, meta_batch=2, out_dir=run,
             config=flat, progress=False)
    return run


def test_an_adapt_meta_run_is_named_with_the_command_to_use(adapt_meta_run):
    """It raised ``unknown config section [alpha]`` from config's private error class."""
    with pytest.raises(ValueError) as e:
        ml.load_run(adapt_meta_run)
    text = str(e.value)
    assert type(e.value) is ValueError
    assert f"{adapt_meta_run} holds a LoRA meta-training run of metaloop adapt --meta " \
           f"fomaml (on model 'minilm'), not a metaloop train run" in text
    assert f"metaloop adapt --meta fomaml --meta-dir {adapt_meta_run.parent}" in text
    assert "[alpha]" not in text
    with pytest.raises(ValueError, match=re.escape(f"--meta-dir {adapt_meta_run.parent} ")):
        ml.load_run(adapt_meta_run / "ckpt-00000002")          # one checkpoint of it


def test_a_flat_config_is_refused_by_validate_with_a_plain_value_error():
    with pytest.raises(ValueError, match=r"unknown config section \[alpha\]") as e:
        config.validate({"alpha": 16.0, "method": "fomaml"})
    assert type(e.value) is ValueError


def test_a_latest_naming_a_checkpoint_without_tensors_is_the_documented_value_error(
        adapt_meta_run, tmp_path):
    """It raised FileNotFoundError, which load_run does not document."""
    run = tmp_path / "run"
    torch.manual_seed(0)
    ml.train(ml.meta.MAML(ml.models.MLP(1, (8,), 1)), ml.tasks.Sinusoid(5, 5), iterations=2,
             meta_batch=2, out_dir=run, checkpoint_every=2, progress=False)
    (run / "ckpt-00000002" / "tensors.safetensors").unlink()
    with pytest.raises(ValueError) as e:
        ml.load_run(run)
    assert not isinstance(e.value, FileNotFoundError)
    assert str(e.value) == (f"no checkpoint at {run / 'ckpt-00000002'}: {run / 'LATEST'} "
                            f"names it, but it lacks tensors.safetensors")
    copy = tmp_path / "copy"
    shutil.copytree(adapt_meta_run, copy)
    (copy / "LATEST").write_text("ckpt-00000009\n")
    with pytest.raises(ValueError, match="it does not exist"):
        ml.load_run(copy)
