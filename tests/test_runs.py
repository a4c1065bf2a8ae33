"""``metaloop.runs.load_run``: one way to load a saved run, for eval, predict, adapt and
resume."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch

import metaloop as ml
from metaloop.cli.main import main
from metaloop.recipes.evaluation import evaluate_run
from metaloop.train.checkpoint import load_checkpoint

sys.path.insert(0, str(Path(__file__).resolve().parent))
from conftest import copy_run, edit_state, train_run, write_image_folder  # noqa: E402

SINUSOID = ('[family]\nname = "sinusoid"\nshots = 5\nqueries = 5\n[method]\nname = "maml"\n'
            'learn_inner_lr = true\n[train]\niterations = 4\nmeta_batch = 2\n'
            'checkpoint_every = 2\n[eval]\ntasks = 4\nsteps = [0, 1]\n')


@pytest.fixture
def sinusoid_run(trained_run) -> Path:
    """The run of SINUSOID, trained once for the test run: read it, never change it."""
    return trained_run(SINUSOID)


def test_load_run_gives_the_checkpoints_weights_config_and_iteration(sinusoid_run):
    run = ml.load_run(sinusoid_run)
    tensors, state = load_checkpoint(sinusoid_run)
    assert run.iteration == state["iteration"] == 4
    assert run.config == ml.config.validate(state["config"])
    params = dict(run.learner.model.named_parameters())
    assert params and all(torch.equal(p, tensors[f"model.{n}"]) for n, p in params.items())
    assert run.classes is None and run.transform is None       # built-in family, not images
    older = ml.load_run(sinusoid_run / "ckpt-00000002")         # one checkpoint directory
    assert older.iteration == 2
    assert not all(torch.equal(p, dict(older.learner.model.named_parameters())[n])
                   for n, p in params.items())


def test_evaluate_run_is_what_metaloop_eval_writes(sinusoid_run, tmp_path):
    assert main(["eval", "--checkpoint", str(sinusoid_run), "--out", str(tmp_path / "e"),
                 "--no-progress"]) == 0
    written = json.loads((tmp_path / "e" / "results.json").read_text())["methods"]["maml"]
    res = evaluate_run(ml.load_run(sinusoid_run))
    assert res["metric"] == "loss" and res["error_rate"] is None
    assert res["result"]["loss"]["mean"] == pytest.approx(written["loss"]["mean"], rel=1e-6)
    fewer = evaluate_run(ml.load_run(sinusoid_run), tasks=2, steps=[1])
    assert fewer["config"]["eval"]["tasks"] == 2 and fewer["result"]["steps"] == [1]
    with pytest.raises(ValueError, match="unknown eval key"):
        evaluate_run(ml.load_run(sinusoid_run), task=2)
    same = evaluate_run(ml.load_run(sinusoid_run), config=fewer["config"])
    assert same["result"]["loss"]["mean"] == fewer["result"]["loss"]["mean"]
    with pytest.raises(ValueError, match="not both"):
        evaluate_run(ml.load_run(sinusoid_run), config=fewer["config"], tasks=2)


def test_a_folder_run_carries_its_class_split_and_transform(tmp_path):
    root = write_image_folder(tmp_path / "images", classes=8, per_class=5, mixed=False)
    run = ml.load_run(train_run(
        tmp_path, f'[family]\nname = "folder"\nroot = "{root}"\nways = 2\nshots = 1\n'
        'queries = 2\nimage_size = 20\nchannels = 3\ninvert = "auto"\n'
        'split_fractions = [0.5, 0.25, 0.25]\n[model]\nname = "conv4"\nchannels = 4\n'
        '[method]\nname = "r2d2"\n[train]\niterations = 1\nmeta_batch = 1\n'))
    assert sorted(sum(run.classes.values(), [])) == sorted(
        p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    assert len(run.classes["train"]) == 4 and not set(run.classes["train"]) & set(
        run.classes["test"])
    assert run.transform == {"image_size": 20, "channels": 3, "read_channels": 3,
                             "invert": "auto", "quantize": True}


def test_a_run_on_a_tensor_file_of_larger_images_loads(tmp_path):
    """The stand-in family took ``family.image_size`` (28) for a tensor file's images: a
    Conv4 of max-pool blocks (its head reads the flattened last map) trained on 40 x 40
    images was rebuilt with a head of 4 inputs instead of 16, and ``load_run`` refused it."""
    import numpy as np

    g = torch.Generator().manual_seed(0)
    x = (torch.rand(48, 40, 40, generator=g) * 255).to(torch.uint8)            # [N, H, W]
    np.savez(tmp_path / "i.npz", x=x.numpy(), y=torch.arange(8).repeat_interleave(6).numpy())
    path = train_run(tmp_path, f'[family]\nname = "tensors"\nroot = "{tmp_path / "i.npz"}"\n'
                     'ways = 2\nshots = 1\nqueries = 2\nsplit_fractions = [0.5, 0.0, 0.5]\n'
                     '[model]\nname = "conv4"\nchannels = 4\npool = "max"\n[method]\n'
                     'name = "maml"\ninner_lr = 0.1\n[train]\niterations = 1\nmeta_batch = 1\n'
                     '[eval]\ntasks = 2\nsteps = [0]\n')
    run = ml.load_run(path)
    tensors, _ = load_checkpoint(path)
    assert run.network.head.in_features == 16                   # 4 filters x 2 x 2
    assert all(torch.equal(p, tensors[f"model.{n}"])
               for n, p in run.learner.model.named_parameters())
    assert run.transform["image_size"] == 40
    assert evaluate_run(run)["result"]["tasks"] == 2


@pytest.mark.parametrize("make,message", [
    (lambda d: d / "absent", "the folder does not exist"),
    (lambda d: (d / "f.txt").write_text("x") and d / "f.txt",
     "no checkpoint at .*f.txt: it is a file, not a run folder"),
    (lambda d: d, "no checkpoint in"),
])
def test_no_run_is_a_named_error(tmp_path, make, message):
    with pytest.raises(ValueError, match=message):
        ml.load_run(make(tmp_path))


def test_tensors_that_do_not_fit_the_config_are_named(sinusoid_run, tmp_path):
    run = copy_run(sinusoid_run, tmp_path / "r")
    state_path = next(run.glob("ckpt-00000004/state.json"))
    edit_state(state_path, lambda s: s["config"]["model"].update(hidden=[41, 40]))
    with pytest.raises(ValueError, match="has shape .* expects"):
        ml.load_run(run)


def test_tensors_of_a_layer_the_config_lacks_are_named(sinusoid_run, tmp_path):
    """A config of one hidden layer fewer (state.json edited, its digest stamped again)
    loaded the run's first layer and head and dropped its second without a word: another
    network than the one trained, evaluated as if it were the run."""
    run = copy_run(sinusoid_run, tmp_path / "r")
    state_path = next(run.glob("ckpt-00000004/state.json"))
    edit_state(state_path, lambda s: s["config"]["model"].update(hidden=[40]))
    with pytest.raises(ValueError, match=r"holds model tensors \['net.body.fc1.bias', "
                                         r"'net.body.fc1.weight'\] that the config's model "
                                         r"does not have"):
        ml.load_run(run)


def test_a_reptile_run_loads_its_shared_inner_adam_state(tmp_path):
    body = SINUSOID.replace('name = "maml"\nlearn_inner_lr = true',
                            'name = "reptile"\ninner_optimizer = "adam"\nadam_state = "shared"')
    path = train_run(tmp_path, body)
    tensors, _ = load_checkpoint(path)
    run = ml.load_run(path)
    state = run.learner.extra_state()
    # 4 iterations x 2 tasks x 5 steps (a reptile config's default: Reptile's own)
    assert int(state["t"]) == 4 * 2 * 5
    assert set(state) == {k[len("learner."):] for k in tensors if k.startswith("learner.")}
    assert all(torch.equal(state[k], tensors[f"learner.{k}"]) for k in state)
    # the state is the run's: a learner made from the config alone adapts differently
    x = torch.linspace(-1, 1, 5)[:, None]
    loaded = list(run.learner.adapt_path(x, torch.sin(x), 3))[-1]
    run.learner.load_extra_state({})
    fresh = list(run.learner.adapt_path(x, torch.sin(x), 3))[-1]
    assert max((loaded[n] - fresh[n]).abs().max() for n in loaded) > 1e-6


def test_a_run_written_by_ml_train_without_a_config_is_not_rebuilt_from_defaults(
        tmp_path, capsys):
    """``ml.train(..., out_dir=...)`` stores only its ``config=``: rebuilt from the default
    config, a 5-shot sinusoid run was scored at 10 shots (and an image run failed with
    "lacks model tensors"). ``load_run`` and ``metaloop eval`` say what is missing."""
    torch.manual_seed(0)
    learner = ml.meta.MAML(ml.models.MLP(1, (8,), 1), inner_lr=0.01, inner_steps=1)
    ml.train(learner, ml.tasks.Sinusoid(shots=5), iterations=2, meta_batch=2,
             out_dir=tmp_path / "py", progress=False)
    with pytest.raises(ValueError, match="does not say what it was trained as: its stored "
                                         "config has no family, model, method section"):
        ml.load_run(tmp_path / "py")
    out = tmp_path / "ev"
    assert main(["eval", "--checkpoint", str(tmp_path / "py"), "--tasks", "4", "--out",
                 str(out), "--no-progress"]) == 2
    assert "ml.train(..., resume=True)" in capsys.readouterr().err
    assert not out.exists()
    # the same run continues from Python, as the message says
    again = ml.meta.MAML(ml.models.MLP(1, (8,), 1), inner_lr=0.01, inner_steps=1)
    ml.train(again, ml.tasks.Sinusoid(shots=5), iterations=3, meta_batch=2,
             out_dir=tmp_path / "py", resume=True, progress=False)
    assert (tmp_path / "py" / "ckpt-00000003").is_dir()
