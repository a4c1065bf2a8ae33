"""Validation of ``metaloop train`` (``train.val_every``): the held-out tasks as [eval] sets
them, on the split "val", whichever split the final evaluation reads."""

import sys
from pathlib import Path

import pytest
import torch

from metaloop.recipes import training

sys.path.insert(0, str(Path(__file__).parents[1]))
from conftest import tensor_config, write_tensor_file  # noqa: E402


@pytest.mark.parametrize("split", ["test", "val"])
def test_validation_tasks_are_the_eval_sections_on_the_val_split(tmp_path, monkeypatch, split):
    data = write_tensor_file(tmp_path / "x.npz")         # 12 classes: 6 train, 3 val, 3 test
    text = tensor_config(data, 'name = "maml"\n',
                         eval_lines=f'tasks = 4\nsteps = [0]\nshots = 1\nqueries = 4\n'
                                    f'split = "{split}"\n')
    text = text.replace("[0.5, 0.0, 0.5]", "[0.5, 0.25, 0.25]")
    text = text.replace("[eval]\n", "val_every = 1\nval_tasks = 2\n[eval]\n")
    (tmp_path / "c.toml").write_text(text)
    cfg, out, created = training.prepare(tmp_path / "run", config_path=tmp_path / "c.toml")
    seen = {}

    def fake_train(learner, family, *, val_family, **kw):
        seen["val"] = val_family.sample(1, generator=torch.Generator().manual_seed(0))
        seen["names"] = list(val_family.class_names)
        return {}
    monkeypatch.setattr(training, "train", fake_train)
    training.train_config(cfg, out, progress=False, created=created)
    b = seen["val"]
    # eval.shots = 1 and eval.queries = 4 (the family's are 2 and 3), 2-way
    assert list(b.support_y.shape) == [1, 2] and list(b.query_y.shape) == [1, 8]
    assert seen["names"] == list(cfg["family"]["val_classes"])           # the val split


def test_validation_draws_the_eval_sections_seed_so_eval_scores_the_same_tasks(tmp_path):
    """Validation drew the default seed 1000003 whatever ``eval.seed`` said, so ``metaloop
    eval --split val`` of the run scored other tasks than those training logged."""
    import json

    import metaloop as ml
    from metaloop.recipes.evaluation import evaluate_run

    data = write_tensor_file(tmp_path / "x.npz")
    text = tensor_config(data, 'name = "protonet"\n',
                         eval_lines='tasks = 3\nsteps = [0]\nseed = 77\nsplit = "val"\n')
    text = text.replace("[0.5, 0.0, 0.5]", "[0.5, 0.25, 0.25]")
    text = text.replace("[eval]\n", "val_every = 2\nval_tasks = 3\n[eval]\n")
    (tmp_path / "c.toml").write_text(text)
    cfg, out, created = training.prepare(tmp_path / "run", config_path=tmp_path / "c.toml")
    training.train_config(cfg, out, progress=False, created=created)
    logged = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    val = [line for line in logged if "val_accuracy" in line][-1]
    got = evaluate_run(ml.load_run(out))["result"]
    assert got["seed"] == 77
    assert got["accuracy"]["mean"][0] == pytest.approx(val["val_accuracy"], abs=1e-6)
    assert got["loss"]["mean"][0] == pytest.approx(val["val_loss"], rel=1e-5)


def test_a_validation_seed_torch_cannot_take_is_named_before_training():
    import metaloop as ml
    learner = ml.meta.MAML(ml.models.MLP(1, (4,), 1), 0.01)
    fam = ml.tasks.Sinusoid(2, 2)
    with pytest.raises(ValueError, match=r"val_seed must be an int in \[0, 2\*\*64\) \(it "
                                         r"seeds the validation tasks\), got -1"):
        ml.train(learner, fam, iterations=1, meta_batch=1, val_family=fam, val_every=1,
                 val_seed=-1, progress=False)
