"""``metaloop.recipes.training``: a new run that starts from a saved run's weights
(``train.init``, ``init_from``)."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pytest
import torch

from metaloop import build, config
from metaloop.cli.main import main
from metaloop.recipes.training import init_from
from metaloop.runs import load_run

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from conftest import tensor_config, write_image_folder, write_tensor_file  # noqa: E402


def _config(tmp_path, method: str, channels: int = 4, **train) -> Path:
    root = tmp_path / "images"
    if not root.exists():
        write_image_folder(root, classes=8, per_class=5, mixed=False)
    extra = "".join(f"{k} = {v!r}\n".replace("'", '"') for k, v in train.items())
    f = tmp_path / f"{method}_{channels}_{len(list(tmp_path.glob('*.toml')))}.toml"
    f.write_text(f'[family]\nname = "folder"\nroot = "{root}"\nways = 2\nshots = 1\n'
                 f'queries = 2\nsplit_fractions = [0.5, 0.25, 0.25]\n'
                 f'[model]\nname = "conv4"\nchannels = {channels}\n'
                 f'[method]\nname = "{method}"\n'
                 f'[train]\niterations = 2\nmeta_batch = 1\ncheckpoint_every = 1\n{extra}'
                 f'[eval]\ntasks = 2\nsteps = [0]\n')
    return f


def _train(tmp_path, cfg: Path, name: str) -> Path:
    out = tmp_path / name
    assert main(["train", "--config", str(cfg), "--out", str(out), "--no-progress"]) == 0
    return out


def _body(model) -> dict[str, torch.Tensor]:
    return {k.removeprefix("backbone."): v.detach().clone()
            for k, v in model.named_parameters() if ".head." not in f".{k}"
            and k != "log_scale"}


def test_a_pretrain_run_starts_a_protonet_whose_body_is_its_body(tmp_path):
    pre = _train(tmp_path, _config(tmp_path, "pretrain"), "pre")
    cfg = config.load(_config(tmp_path, "protonet"))
    fam = build.build_family(cfg["family"])
    learner = build.build_learner(cfg, fam)
    before = dict(learner.model.named_parameters())
    head_before = before["backbone.head.weight"].detach().clone()
    got = init_from(learner, pre)
    want = _body(load_run(pre).learner.model)
    have = _body(learner.model)
    assert set(have) == set(want) and len(want) == 16           # 4 blocks x conv w, b, bn w, b
    for k in want:
        assert torch.equal(have[k], want[k]), k
    # the pretrain head has one output per training class, the ProtoNet's one per way: left
    assert "backbone.head.weight" in got["left"] and "log_scale" in got["left"]
    assert torch.equal(learner.model.backbone.head.weight, head_before)
    assert got["iteration"] == 2 and len(got["loaded"]) == 16


def test_train_init_in_a_config_trains_from_the_runs_weights(tmp_path, capsys):
    pre = _train(tmp_path, _config(tmp_path, "pretrain"), "pre")
    # a learning rate so small that Adam's first steps move nothing measurably: what the
    # run trained from is what it holds
    run = _train(tmp_path, _config(tmp_path, "protonet", init=str(pre), lr=1e-12), "proto")
    assert f"init: 16 tensors from {pre}" in capsys.readouterr().out
    have, want = _body(load_run(run).learner.model), _body(load_run(pre).learner.model)
    for k in want:
        torch.testing.assert_close(have[k], want[k], rtol=0, atol=1e-9)
    # the stored config names the init; a resumed run reads its own checkpoint, not the init
    assert load_run(run).config["train"]["init"] == str(pre)
    shutil.rmtree(pre)
    assert main(["train", "--resume", str(run), "--no-progress"]) == 0


def test_another_network_is_named_and_the_run_leaves_nothing(tmp_path, capsys):
    wide = _train(tmp_path, _config(tmp_path, "pretrain", channels=8), "wide")
    out = tmp_path / "run"
    cfg = _config(tmp_path, "protonet", init=str(wide))
    assert main(["train", "--config", str(cfg), "--out", str(out), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "is another network: backbone.body.0.conv.weight [8, 1, 3, 3] in the run, " \
           "[4, 1, 3, 3] here" in err
    assert not out.exists()


def test_a_missing_init_run_is_named_before_anything_is_written(tmp_path, capsys):
    out = tmp_path / "run"
    cfg = _config(tmp_path, "protonet", init=str(tmp_path / "nowhere"))
    assert main(["train", "--config", str(cfg), "--out", str(out), "--no-progress"]) == 2
    assert "train.init = " in capsys.readouterr().err and not out.exists()


def test_a_model_without_a_tensor_in_common_is_named(tmp_path):
    pre = _train(tmp_path, _config(tmp_path, "pretrain"), "pre")
    cfg = config.load(_config(tmp_path, "protonet"))
    cfg["model"]["name"] = "resnet12"
    learner = build.build_learner(cfg, build.build_family(cfg["family"]))
    with pytest.raises(ValueError, match="has no tensor of this model"):
        init_from(learner, pre)


def test_a_run_sharing_only_a_head_bias_and_a_scale_is_another_network(tmp_path, monkeypatch):
    """A run of another network whose output bias and learned scale happen to fit, but no
    body tensor, is refused (copying those two would pass for a warm start)."""
    from types import SimpleNamespace

    from metaloop.recipes import training

    cfg = config.load(_config(tmp_path, "r2d2"))
    learner = build.build_learner(cfg, build.build_family(cfg["family"]))
    other = torch.nn.Module()                        # an MLP run: body.0 [8, 16], head [2, 8]
    other.body = torch.nn.Sequential(torch.nn.Linear(16, 8))
    other.head = torch.nn.Linear(8, 2)
    other.log_scale = torch.nn.Parameter(torch.tensor(0.0))
    run = SimpleNamespace(learner=SimpleNamespace(model=other), path=tmp_path, iteration=1)
    monkeypatch.setattr(training, "load_run", lambda r: run)
    with pytest.raises(ValueError, match=r"is another network: it shares no body tensor with "
                                         r"this model, only log_scale, backbone.head.bias"):
        init_from(learner, tmp_path)


def _refused_train(tmp_path, capsys, text: str) -> str:
    """``metaloop train`` of the config ``text``: exit 2 before training, no run folder."""
    (tmp_path / "c.toml").write_text(text)
    capsys.readouterr()
    assert main(["train", "--config", str(tmp_path / "c.toml"), "--out", str(tmp_path / "run"),
                 "--no-progress"]) == 2
    assert not (tmp_path / "run").exists()
    return capsys.readouterr().err


@pytest.mark.parametrize("method, key", [("r2d2", "support_shift"), ("protonet", "query_shift")])
def test_image_shifts_of_a_vector_run_are_refused_before_training(tmp_path, capsys, method, key):
    """A tensors run of feature vectors with eval.support_shift / query_shift trained (exit 0),
    then could never be evaluated."""
    feats = write_tensor_file(tmp_path / "f.npz")
    err = _refused_train(tmp_path, capsys, tensor_config(
        feats, f'name = "{method}"\n', eval_lines=f"tasks = 2\nsteps = [0]\n{key} = 1\n"))
    assert f"config eval.{key} = 1 shifts images at test time, but this family's examples are " \
           f"not images (Episodes of shape [6]), so the run could not be evaluated: set " \
           f"eval.{key} = 0" in err


@pytest.mark.parametrize("method", ["r2d2", "protonet", "metaoptnet"])
def test_steps_for_a_solved_head_are_refused_before_training(tmp_path, capsys, method):
    """eval.steps = [0, 1] for a closed-form head trained, and eval printed a '1 step' column
    equal to '0 steps' (the --steps flag was refused for it all along)."""
    feats = write_tensor_file(tmp_path / "f.npz")
    err = _refused_train(tmp_path, capsys, tensor_config(
        feats, f'name = "{method}"\n', eval_lines="tasks = 2\nsteps = [0, 1]\n"))
    assert f"config eval.steps = [0, 1]: {method} solves its head per task, it is not " \
           f"stepped" in err and "use eval.steps = [0]" in err


def test_reptile_inner_batch_above_the_support_set_is_refused(tmp_path, capsys):
    feats = write_tensor_file(tmp_path / "f.npz")
    err = _refused_train(tmp_path, capsys, tensor_config(
        feats, 'name = "reptile"\ninner_lr = 0.1\ninner_steps = 1\ninner_batch = 50\n',
        eval_lines="tasks = 2\nsteps = [1]\n"))
    assert "config method.inner_batch = 50 exceeds the support set of family.ways x " \
           "family.shots = 2 x 2 = 4 examples" in err


def test_training_on_the_held_out_split_is_warned_about(tmp_path, capsys):
    """family.split = "test" with eval.split = "test" trained without a word, and eval then
    reported 100% on the training classes."""
    feats = write_tensor_file(tmp_path / "f.npz")
    (tmp_path / "c.toml").write_text(tensor_config(feats).replace(
        'split_fractions', 'split = "test"\nsplit_fractions'))
    with pytest.warns(config.SharedSplitWarning, match=r"eval\.split = 'test' is family\.split "
                                                       r"= 'test'.*scores the training classes"):
        assert main(["train", "--config", str(tmp_path / "c.toml"), "--out",
                     str(tmp_path / "run"), "--no-progress"]) == 0


@pytest.mark.parametrize("flag", [True, False])
def test_a_cpu_run_leaves_the_process_cuda_tf32_flags_as_they_were(tmp_path, tf32_flags, flag):
    """TF32 is a CUDA setting: a run on the CPU sets neither flag, whatever --tf32 says, so a
    Python program that trains on the CPU keeps the CUDA settings it chose."""
    tf32_flags(flag, flag)
    _train(tmp_path, _config(tmp_path, "protonet"), "run")
    assert torch.backends.cuda.matmul.allow_tf32 is flag
    assert torch.backends.cudnn.allow_tf32 is flag
